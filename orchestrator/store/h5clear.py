"""Clear the "open for writing" flags HDF5 leaves in a file whose writer was killed.

A SWMR writer keeps the file consistent on disk at every moment, so after a SIGKILL the data
up to the last flush is intact; but the superblock still says "open for write" and HDF5
refuses to open it for writing again (the ``h5clear -s`` case).  This module does what
``h5clear -s`` does, in pure Python, so resume needs no extra tool: it resets the status
flags of a version 2/3 superblock and rewrites its Jenkins lookup3 checksum.

It must only be called when no process has the file open for writing: the caller holds the
campaign's lock file.
"""
from __future__ import annotations

import struct

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' hashlittle (lookup3), as HDF5's H5_checksum_lookup3."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:i + length] + b"\x00" * (12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M
    a ^= c; a = (a - _rot(c, 11)) & _M
    b ^= a; b = (b - _rot(a, 25)) & _M
    c ^= b; c = (c - _rot(b, 16)) & _M
    a ^= c; a = (a - _rot(c, 4)) & _M
    b ^= a; b = (b - _rot(a, 14)) & _M
    c ^= b; c = (c - _rot(b, 24)) & _M
    return c


def clear_write_flags(path: str) -> bool:
    """Reset the superblock status flags of a file whose writer was killed, and raise its
    end-of-allocation address to the end of the file (``h5clear -s --increment``); return
    True when something was cleared.

    Why the address: a SWMR writer killed inside a flush can leave a chunk index on disk that
    points at a chunk written at the old end of the file while the superblock's EOA was not
    rewritten yet; a reader then fails with "addr overflow" on data it needs (CI saw it once
    in a hundred kills).  The chunk's bytes are in the file; the EOA only has to cover them."""
    with open(path, "r+b") as fh:
        head = fh.read(64)
        eof = fh.seek(0, 2)
        if not head.startswith(_SIGNATURE):
            raise ValueError(f"{path} is not an HDF5 file (or has a user block)")
        version = head[8]
        if version < 2:
            return False  # version 0/1 superblocks carry no such flags
        size_offsets = head[9]
        body_len = 12 + 4 * size_offsets
        body = head[:body_len]
        (stored,) = struct.unpack("<I", head[body_len:body_len + 4])
        if lookup3(body) != stored:
            raise ValueError(f"{path}: superblock checksum mismatch; not clearing")
        if body[11] == 0:
            return False
        at = 12 + 2 * size_offsets  # base address, extension address, then end of file
        eoa = int.from_bytes(body[at:at + size_offsets], "little")
        body = body[:11] + b"\x00" + body[12:at] + max(eoa, eof).to_bytes(size_offsets, "little") \
            + body[at + size_offsets:]
        fh.seek(0)
        fh.write(body + struct.pack("<I", lookup3(body)))
        fh.flush()
    return True
