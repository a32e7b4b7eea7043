"""Disk use of a campaign's run directory (segment directories and states)."""
from __future__ import annotations

import os
from pathlib import Path


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (files vanishing meanwhile are skipped)."""
    total, stack = 0, [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except OSError:
            pass
    return total

