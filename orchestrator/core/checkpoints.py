"""A trajectory's checkpoints, kept as arithmetic runs instead of one row each.

A model checkpoints every ``checkpoint_every`` steps (and at each segment's last step), states
numbered in order inside one file per segment: a segment's thousand checkpoints are one run
(first step, stride, count, file, first index, index stride) of 48 bytes, where three int64
columns cost 24 bytes per checkpoint -- three times the trajectory's scores, and the largest
part of the driver's memory before.  Any pattern is representable (an irregular one is simply
more runs); lookups are a binary search over runs plus arithmetic.
"""
from __future__ import annotations

import numpy as np

_I = np.int64


def _runs(steps: np.ndarray, files: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Split sorted checkpoints into maximal-ish arithmetic runs (vectorised): rows of
    (first step, step stride, count, file, first index, index stride)."""
    n = steps.size
    if n == 0:
        return np.zeros((0, 6), dtype=_I)
    if n > 1 and files[0] == files[-1]:
        # the common case (one file per segment, evenly spaced): one run, checked in a few
        # vectorised calls instead of the ~25 of the general split below
        step_stride, index_stride = int(steps[1] - steps[0]), int(index[1] - index[0])
        if ((steps[1:] - steps[:-1] == step_stride).all()
                and (index[1:] - index[:-1] == index_stride).all() and (files == files[0]).all()):
            return np.array([[steps[0], step_stride, n, files[0], index[0], index_stride]],
                            dtype=_I)
    start = np.zeros(n, dtype=bool)
    start[0] = True
    if n > 1:
        start[1:] |= files[1:] != files[:-1]
    if n > 2:
        ds, di = np.diff(steps), np.diff(index)
        start[2:] |= (ds[1:] != ds[:-1]) | (di[1:] != di[:-1])
    # an element right after a run start belongs to it (its stride is defined by it) unless the
    # file changes; recompute starts greedily so that every run is arithmetic
    first = np.flatnonzero(start)
    bounds = np.append(first, n)
    count = np.diff(bounds)
    s0, f0, i0 = steps[first], files[first], index[first]
    second = np.minimum(first + 1, n - 1)
    stride = np.where(count > 1, steps[second] - s0, 0)
    istride = np.where(count > 1, index[second] - i0, 0)
    out = np.stack([s0, stride, count, f0, i0, istride], axis=1).astype(_I)
    # verify (cheap, vectorised): every element is where its run says; otherwise fall back to
    # one run per checkpoint, which is always right
    run_of = np.repeat(np.arange(first.size), count)
    k = np.arange(n) - first[run_of]
    ok = (np.array_equal(steps, s0[run_of] + stride[run_of] * k)
          and np.array_equal(index, i0[run_of] + istride[run_of] * k)
          and np.array_equal(files, f0[run_of]))
    if not ok:
        z = np.zeros(n, dtype=_I)
        out = np.stack([steps, z, np.ones(n, dtype=_I), files, index, z], axis=1).astype(_I)
    return out


class CheckpointRuns:
    """The checkpoints of one trajectory's own steps, in step order."""

    __slots__ = ("runs",)

    def __init__(self, runs: np.ndarray | None = None):
        self.runs = np.zeros((0, 6), dtype=_I) if runs is None else runs

    @classmethod
    def of(cls, steps: np.ndarray, files: np.ndarray, index: np.ndarray) -> CheckpointRuns:
        return cls(_runs(np.asarray(steps, _I), np.asarray(files, _I), np.asarray(index, _I)))

    def add(self, steps: np.ndarray, files: np.ndarray, index: np.ndarray) -> None:
        """Append checkpoints at steps later than every one held."""
        new = _runs(np.asarray(steps, _I), np.asarray(files, _I), np.asarray(index, _I))
        self.runs = new if not self.runs.size else np.concatenate([self.runs, new])

    def __len__(self) -> int:
        return int(self.runs[:, 2].sum())

    @property
    def size(self) -> int:
        return len(self)

    def _last_steps(self) -> np.ndarray:
        r = self.runs
        return r[:, 0] + r[:, 1] * (r[:, 2] - 1)

    def files(self) -> list[int]:
        """The ids of the files holding these checkpoints, sorted (a few runs: a set of
        ints is cheaper than numpy's unique, and this is asked for every forgotten
        trajectory)."""
        return sorted(set(self.runs[:, 3].tolist()))

    def _at(self, j: int, k: int) -> tuple[int, int, int]:
        s0, ds, _, f, i0, di = (int(v) for v in self.runs[j])
        return s0 + ds * k, f, i0 + di * k

    def last(self) -> tuple[int, int, int] | None:
        """The last checkpoint: (step, file, index), or None.  A trajectory that goes on
        restarts from it, so the driver asks for it once per segment (plain ints, no search)."""
        if not self.runs.size:
            return None
        s0, ds, n, f, i0, di = self.runs[-1].tolist()
        return s0 + ds * (n - 1), f, i0 + di * (n - 1)

    def last_in(self, lo: int, hi: int) -> tuple[int, int, int] | None:
        """The last checkpoint with lo < step <= hi: (step, file, index), or None."""
        r = self.runs
        j = int(np.searchsorted(r[:, 0], hi, side="right")) - 1
        if j < 0:
            return None
        s0, ds, n = int(r[j, 0]), int(r[j, 1]), int(r[j, 2])
        k = n - 1 if ds == 0 else min(n - 1, (hi - s0) // ds)
        step, f, i = self._at(j, k)
        return (step, f, i) if step > lo else None

    def first_in(self, lo: int, hi: int) -> tuple[int, int, int] | None:
        """The first checkpoint with lo <= step <= hi: (step, file, index), or None."""
        if not self.runs.size:
            return None
        j = int(np.searchsorted(self._last_steps(), lo, side="left"))
        if j >= self.runs.shape[0]:
            return None
        s0, ds = int(self.runs[j, 0]), int(self.runs[j, 1])
        k = 0 if lo <= s0 or ds == 0 else -(-(lo - s0) // ds)
        step, f, i = self._at(j, k)
        return (step, f, i) if step <= hi else None

    def expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every checkpoint as (steps, files, index) arrays (for tests and diagnostics)."""
        r = self.runs
        if not r.size:
            z = np.zeros(0, dtype=_I)
            return z, z, z
        run_of = np.repeat(np.arange(r.shape[0]), r[:, 2])
        starts = np.concatenate([[0], np.cumsum(r[:, 2])[:-1]])
        k = np.arange(run_of.size) - starts[run_of]
        return (r[run_of, 0] + r[run_of, 1] * k, r[run_of, 3], r[run_of, 4] + r[run_of, 5] * k)
