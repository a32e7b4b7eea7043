"""The ancestry tree of one replica: trajectories, their paths, checkpoints and noise.

A child stores only its own steps after its branch step and a link (parent, branch step):
its full path is walked up through its ancestors.  This module owns that walk and what is
looked up along it -- the score at a step, the last checkpoint at or before a step (file
mode), the first at or after (seed mode), and the noise of a run of steps, each step's noise
being its *owner's* keyed noise, so a child replays its parent's noise up to the branch.

It also owns the reference counts that bound memory: a trajectory is kept while it is a
member of the ensemble or has a kept descendant; the others are forgotten (their ids go to
``garbage``, the state files they wrote to ``garbage_files``; the driver deletes both their
directories and those files once the forgetting is committed).

No I/O: paths are strings, state files are never opened.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from orchestrator.core import noise as nz
from orchestrator.core.algorithm import Status
from orchestrator.core.checkpoints import CheckpointRuns
from orchestrator.model import StateRef

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)


@dataclass(eq=False)
class Traj:
    """What the driver keeps of one trajectory: its link and its own steps' scores."""

    id: int
    parent: int
    branch: int  # last step copied from the parent's path (0 for an initial trajectory)
    start: int  # step of the state the first segment starts from (<= branch in file mode)
    key: tuple[int, int]
    scores: list = field(default_factory=list)  # arrays of own scores (steps branch+1 ...)
    n_own: int = 0
    ck: CheckpointRuns = field(default_factory=CheckpointRuns)  # on its own steps
    # files its segments wrote that hold none of its checkpoints (a segment that ended early,
    # before its first checkpoint): deleted with it all the same
    extra_files: list[int] | None = None
    status: Status = Status.RUNNING
    end: int = -1
    max_score: float = -math.inf
    left_a: bool = True
    next_step: int = -1  # step of the state the next segment starts from
    in_flight: bool = False
    slot: int = -1  # ensemble slot while a member of the ensemble, else -1
    refs: int = 0  # live children + 1 while in the ensemble; 0 = forgotten
    # running-maximum records of the path (orchestrator.core.algorithm.running_max_records):
    # enough to branch from this trajectory without walking its path.  Kept only while it is
    # a member of the ensemble (a survivor always is).
    rec_steps: np.ndarray | None = None
    rec_vals: np.ndarray | None = None

    @property
    def last_step(self) -> int:
        return self.branch + self.n_own

    def own_scores(self) -> np.ndarray:
        if len(self.scores) > 1:
            self.scores = [np.concatenate(self.scores)]
        return self.scores[0] if self.scores else _EMPTY_F

    def add_checkpoints(self, steps: np.ndarray, files: np.ndarray, index: np.ndarray) -> None:
        self.ck.add(steps, files, index)


class Tree:
    """The trajectories of one replica still in memory, and the state files they use."""

    def __init__(self, seed: int, replica: int, initial: StateRef | None):
        self.seed = seed
        self.replica = replica
        self.initial = initial
        self.trajs: dict[int, Traj] = {}
        self.files: dict[str, int] = {}  # absolute path -> file id
        self.paths: dict[int, str] = {}  # file id -> absolute path
        self.n_files = 0  # rows of the files table
        self.garbage: list[int] = []  # forgotten ids whose files may go after a commit
        self.garbage_files: list[str] = []  # the state files those wrote (absolute paths)

    def __getitem__(self, tid: int) -> Traj:
        return self.trajs[tid]

    def new(self, tid: int, parent: int, branch: int, start: int) -> Traj:
        t = Traj(tid, parent, branch, start, nz.trajectory_key(self.seed, self.replica, tid))
        t.next_step = start
        self.trajs[tid] = t
        return t

    # --- state files --------------------------------------------------------------------
    def register(self, paths: tuple[str, ...]) -> tuple[np.ndarray, int, list[str]]:
        """Ids of a segment's state files, registering the new ones in bulk: (ids in the
        order given, id of the first new one, the new paths in id order)."""
        files = self.files
        if len(paths) == 1 and paths[0] in files:  # a trajectory's own file again
            return np.array([files[paths[0]]], dtype=np.int64), self.n_files, []
        fresh = list(dict.fromkeys(p for p in paths if p not in files))
        base = self.n_files
        if fresh:
            ids = range(base, base + len(fresh))
            files.update(zip(fresh, ids))
            self.paths.update(zip(ids, fresh))
            self.n_files += len(fresh)
        return np.fromiter((files[p] for p in paths), np.int64, len(paths)), base, fresh

    def ref(self, file: int, index: int) -> StateRef:
        return StateRef(self.paths[file], index)

    def live_files(self) -> set[str]:
        return {self.paths[int(f)] for t in self.trajs.values() for f in t.ck.files()}

    # --- paths --------------------------------------------------------------------------
    def pieces(self, t: Traj, upto: int) -> Iterator[tuple[Traj, int, int]]:
        """(trajectory, lo, hi] pieces of t's path for steps 1..upto, *leaf first*, lazily:
        a caller that needs only the end of the path stops after a piece or two instead of
        walking the whole ancestry."""
        hi = upto
        while True:
            if hi > t.branch:
                yield t, t.branch, hi
                hi = t.branch
            if t.parent < 0 or hi <= 0:
                return
            t = self.trajs[t.parent]

    def score_at(self, t: Traj, step: int) -> float:
        """The score of t's path at ``step`` (>= 1)."""
        for p, lo, hi in self.pieces(t, step):
            return float(p.own_scores()[hi - lo - 1])
        raise ValueError(f"trajectory {t.id} has no step {step}")

    def path_scores(self, t: Traj, upto: int | None = None) -> np.ndarray:
        """Scores of t's full path, steps 1..upto (default: its last step)."""
        upto = t.last_step if upto is None else upto
        parts = [p.own_scores()[: hi - lo] for p, lo, hi in self.pieces(t, upto)]
        parts.reverse()
        return np.concatenate(parts) if parts else _EMPTY_F

    def checkpoint_at_or_before(self, t: Traj, b: int) -> tuple[int, StateRef | None]:
        """The last checkpoint of t's path at or before step b (step 0: the initial state)."""
        if b > t.branch:  # a trajectory going on restarts from its own last checkpoint
            last = t.ck.last()
            if last is not None and last[0] == b:
                return b, self.ref(last[1], last[2])
        for p, lo, hi in self.pieces(t, b):
            found = p.ck.last_in(lo, hi)
            if found is not None:
                return found[0], self.ref(found[1], found[2])
        return 0, self.initial

    def checkpoint_at_or_after(self, t: Traj, b: int) -> tuple[int, StateRef] | None:
        """The first checkpoint of t's path at or after step b, None if there is none."""
        tail = []  # the pieces reaching step b or later, leaf first
        for piece in self.pieces(t, t.last_step):
            if piece[2] < b:
                break
            tail.append(piece)
        for p, lo, hi in reversed(tail):
            found = p.ck.first_in(max(b, lo + 1), hi)
            if found is not None:
                return found[0], self.ref(found[1], found[2])
        return None

    def noise(self, t: Traj, first: int, last: int, dim: int) -> nz.NoisePlan:
        """Noise of steps first..last of t's path, each step's owner's keyed noise, as a
        recipe (:class:`orchestrator.core.noise.NoisePlan`) that the worker draws."""
        pieces = []
        for p, lo, hi in self.pieces(t, last):
            a, b = max(lo + 1, first), hi
            if a <= b:
                pieces.append((p.key[0], p.key[1], a, b - a + 1))
            if lo < first:
                break
        pieces.reverse()
        return nz.NoisePlan(pieces, dim)

    # --- memory -------------------------------------------------------------------------
    def unref(self, t: Traj) -> None:
        """Drop one reference; forget t and, cascading up, every ancestor no kept trajectory
        descends from any more (O(1) per iteration amortised, memory bounded however many
        iterations run)."""
        while True:
            t.refs -= 1
            if t.refs > 0:
                return
            del self.trajs[t.id]
            self.garbage.append(t.id)
            self._forget_files(t)
            if t.parent < 0:
                return
            t = self.trajs[t.parent]

    def _forget_files(self, t: Traj) -> None:
        fids = t.ck.files() + (t.extra_files or [])
        for fid in fids:
            path = self.paths.pop(fid, None)
            if path is not None:
                self.files.pop(path, None)
                self.garbage_files.append(path)

    def keep_only_ancestry_of(self, members: list[int]) -> None:
        """Forget every trajectory no member descends from and set the reference counts of
        the others (once, on resume; later :meth:`unref` keeps them)."""
        live: set[int] = set()
        for tid in members:
            while tid >= 0 and tid not in live:
                live.add(tid)
                tid = self.trajs[tid].parent
        for tid in [t for t in self.trajs if t not in live]:
            self._forget_files(self.trajs.pop(tid))
            self.garbage.append(tid)
        for t in self.trajs.values():
            t.refs = 0
        for t in self.trajs.values():
            if t.parent >= 0:
                self.trajs[t.parent].refs += 1
        used = {int(f) for t in self.trajs.values() for f in t.ck.files()}
        self.paths = {f: p for f, p in self.paths.items() if f in used}
        self.files = {p: f for f, p in self.paths.items()}
