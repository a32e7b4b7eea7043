"""Resume after a writer killed inside a flush (orchestrator/store/h5clear.py).

CI once saw `tams run` refuse a killed driver's database as damaged: "Can't synchronously read
data (addr overflow, addr = 1523622, size = 468, eoa = 1523622)" -- a chunk index on disk
pointed at a chunk written at the old end of the file, while the superblock's end-of-
allocation address (EOA) had not been rewritten.  This builds exactly that file with h5py (the
last chunk at the end, the EOA set to its address, the "open for writing" flags set) and shows
that reading fails before `clear_write_flags` and gives every number after it."""
from __future__ import annotations

import struct

import h5py
import numpy as np
import pytest

from orchestrator.store.h5clear import clear_write_flags, lookup3


def _superblock(path):
    head = open(path, "rb").read(64)
    o = head[9]
    return head, o, 12 + 2 * o, 12 + 4 * o


def _crashed_file(path):
    with h5py.File(path, "w", libver="latest") as f:
        d = f.create_dataset("x", shape=(0,), maxshape=(None,), chunks=(64,), dtype="f8")
        f.flush()
        d.resize((640,))
        d[:] = np.arange(640.0)
    with h5py.File(path, "r") as f:
        ids = f["x"].id
        last = max((ids.get_chunk_info(i) for i in range(ids.get_num_chunks())),
                   key=lambda c: c.byte_offset)
    head, o, at, n = _superblock(path)
    assert last.byte_offset + last.size == len(open(path, "rb").read())  # the last bytes
    body = (head[:11] + b"\x05" + head[12:at] + last.byte_offset.to_bytes(o, "little")
            + head[at + o:n])
    with open(path, "r+b") as fh:
        fh.write(body + struct.pack("<I", lookup3(body)))
    return last.byte_offset


def test_a_stale_end_of_allocation_is_raised_to_the_end_of_the_file(tmp_path):
    path = tmp_path / "killed.h5"
    eoa = _crashed_file(path)
    with pytest.raises(OSError):  # what the resumed driver met: the chunk lies past the EOA
        with h5py.File(path, "r") as f:
            f["x"][:]
    assert clear_write_flags(str(path)) is True
    head, o, at, n = _superblock(path)
    assert head[11] == 0
    assert int.from_bytes(head[at:at + o], "little") == path.stat().st_size > eoa
    assert struct.unpack("<I", head[n:n + 4])[0] == lookup3(head[:n])
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["x"][:], np.arange(640.0))
    assert clear_write_flags(str(path)) is False  # a clean file is left alone
