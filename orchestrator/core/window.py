"""Windowed scores (`score.window`): the score applied to running means of the observables.

With ``window = w > 1`` the score of step s is ``score(t_s, mean of the observables of steps
max(1, s-w+1) .. s of the path)`` -- the path, not the segment: a child's first steps average
over its parent's steps up to the branch step.  (Before step w the mean is over the steps
1..s there are; step 0, the initial state, has no observables.)  The model reports plain
per-step values; the window lives here, so branching stays exact: the windowed means of a
child up to its branch step are its parent's, bit for bit, because they are computed from
the same stored observables in the same order.

:class:`Windows` keeps each live trajectory's own observables (only when a window is set)
and walks a path's ancestry for the last ``w-1`` of them.  No I/O.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["Windows", "running_means"]


def running_means(prefix: np.ndarray, new: np.ndarray, window: int, first_step: int) -> np.ndarray:
    """Means over the last ``window`` rows ending at each row of ``new``.

    ``prefix`` holds the rows just before ``new`` on the path (at most ``window - 1``, fewer
    only when the path is that short), ``new`` the rows of steps ``first_step ..``.  Each mean
    is a fresh sum over its own rows (no running sum carried from step to step), so a value
    never depends on where a segment started.
    """
    w = int(window)
    rows = np.concatenate([prefix, new]) if prefix.shape[0] else new
    n, p = new.shape[0], prefix.shape[0]
    out = np.empty_like(new, dtype=np.float64)
    for i in range(n):
        s = first_step + i  # the step of row p + i
        lo = max(p + i - w + 1, p + i - (s - 1))  # step 1 is the first step with observables
        if lo < 0:
            raise ValueError(f"running_means: the prefix holds {p} rows; step {s} needs "
                             f"{min(w, s) - 1 - i} before the new rows")
        out[i] = rows[lo:p + i + 1].sum(axis=0) / (p + i + 1 - lo)
    return out


class Windows:
    """Own observables of the trajectories in memory, for windowed scores."""

    def __init__(self, window: int):
        self.w = int(window)
        self.own: dict[int, list[np.ndarray]] = {}

    def _rows(self, tid: int) -> np.ndarray:
        parts = self.own.get(tid)
        if not parts:
            raise KeyError(f"no observables kept for trajectory {tid}")
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0]

    def prefix(self, pieces: Iterable[tuple[int, int, int]], n_obs: int) -> np.ndarray:
        """The last ``w - 1`` observables of a path, from its (trajectory id, lo, hi] pieces
        *leaf first* (:meth:`orchestrator.core.tree.Tree.pieces`)."""
        need = self.w - 1
        got: list[np.ndarray] = []
        for tid, lo, hi in pieces:
            if need <= 0:
                break
            rows = self._rows(tid)[: hi - lo]
            take = rows[max(0, rows.shape[0] - need):]
            got.append(take)
            need -= take.shape[0]
        got.reverse()
        return np.concatenate(got) if got else np.zeros((0, n_obs))

    def means(self, pieces: Iterable[tuple[int, int, int]], obs: np.ndarray, first_step: int) -> np.ndarray:
        """The windowed observables of the new rows ``obs`` (steps ``first_step ..``) of a path
        whose earlier steps are ``pieces``."""
        return running_means(self.prefix(pieces, obs.shape[1]), obs, self.w, first_step)

    def add(self, tid: int, obs: np.ndarray) -> None:
        """Keep the own observables of a trajectory's new steps (in step order)."""
        if obs.shape[0]:
            self.own.setdefault(tid, []).append(np.array(obs, dtype=np.float64))

    def forget_all_but(self, live: Iterable[int]) -> None:
        keep = set(live)
        for tid in [t for t in self.own if t not in keep]:
            del self.own[tid]
