"""One replica's TAMS run as a state machine: segment results in, segment tasks and events out.

The driver hands each finished segment to :meth:`Ensemble.on_result`; the ensemble scores
it, decides whether the trajectory goes on, and, once every member of the ensemble has
ended, takes the next iteration's decision (:mod:`orchestrator.core.algorithm`) and returns
the children's first segments.  Every fact it establishes is appended to ``events``
(:mod:`orchestrator.core.events`), which the driver drains into a store.

Nothing here waits, touches a worker or a file: the same object is rebuilt from a store's
committed rows on resume (:meth:`Ensemble.restore`), and because every random number is keyed
(:mod:`orchestrator.core.noise`) the resumed run is bit for bit the uninterrupted one.  The
ancestry walks live in :mod:`orchestrator.core.tree`, the rules in
:mod:`orchestrator.core.algorithm`; this module only sequences them.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from orchestrator.core import algorithm as alg
from orchestrator.core import events as ev
from orchestrator.core import noise as nz
from orchestrator.core.algorithm import Outcome, Status
from orchestrator.core.checkpoints import CheckpointRuns
from orchestrator.core.meta import Settings
from orchestrator.core.segments import Task, segment_dir, trajectory_dir, validate
from orchestrator.core.tree import Traj, Tree
from orchestrator.core.window import Windows
from orchestrator.model import SegmentRequest, SegmentResult, StateRef

__all__ = ["Ensemble", "Settings", "Task"]


class Ensemble:
    """The N-member ensemble of one replica and its iterations."""

    def __init__(self, index: int, s: Settings, score: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 run_dir: str, initial: StateRef | None, rel: Callable[[str], str]):
        self.r = index
        self.s = s
        self.score = score
        self.run_dir = run_dir
        self.rel = rel  # path -> path relative to the run directory (for the files table)
        self.tree = Tree(s.seed, index, initial)
        self.events: list[Any] = []  # drained by the driver into the store
        self.slots = np.arange(s.n, dtype=np.int64)
        self.next_id = s.n
        self.iteration = 0
        self.log_weight = 0.0
        self.outcome = Outcome.RUNNING
        self.level = math.nan
        self.model_steps = 0
        self.segments = 0
        self.failed = 0
        self.in_flight = 0
        self.wall_time = 0.0
        # running counts over the ensemble, so no per-segment pass over all N
        self.maxs = np.full(s.n, -math.inf)  # slot -> max score of its member
        self.n_reached_count = 0  # members with max score >= target
        self.n_running = 0  # members still running
        # score.window > 1: the score sees running means of the path's observables
        self.windows = Windows(s.window) if s.window > 1 else None

    # --- what the driver and the progress view read ---------------------------------------
    @property
    def trajs(self) -> dict[int, Traj]:
        return self.tree.trajs

    @property
    def garbage(self) -> list[int]:
        return self.tree.garbage

    @property
    def garbage_files(self) -> list[str]:
        """State files of forgotten trajectories (cleared by the driver with ``garbage``)."""
        return self.tree.garbage_files

    @property
    def done(self) -> bool:
        return self.outcome != Outcome.RUNNING

    def n_reached(self) -> int:
        return self.n_reached_count

    def running_estimate(self) -> float:
        return alg.estimate(self.log_weight, self.n_reached(), self.s.n)

    def drain(self) -> list[Any]:
        """The events since the last drain, oldest first."""
        out, self.events = self.events, []
        return out

    def summary(self) -> ev.ReplicaSummary:
        n_reached = self.n_reached()
        done = self.done
        return ev.ReplicaSummary(
            self.r, outcome=int(self.outcome), iterations=self.iteration,
            log_weight=self.log_weight, n_reached=n_reached,
            estimate=alg.estimate(self.log_weight, n_reached, self.s.n) if done else math.nan,
            log_estimate=(alg.log_estimate(self.log_weight, n_reached, self.s.n) if done
                          else math.nan),
            model_steps=self.model_steps, segments=self.segments, failed_segments=self.failed,
            in_flight=self.in_flight, level=self.level, wall_time=self.wall_time)

    def _emit_summary(self) -> None:
        self.events.append(self.summary())

    def validate(self, req: SegmentRequest, res: SegmentResult) -> None:
        validate(req, res, self.s.n_obs)

    def score_at(self, t: Traj, step: int) -> float:
        return self.tree.score_at(t, step)

    def path_scores(self, t: Traj, upto: int | None = None) -> np.ndarray:
        return self.tree.path_scores(t, upto)

    def live_files(self) -> set[str]:
        return self.tree.live_files()

    # --- membership -----------------------------------------------------------------------
    def _set_max(self, t: Traj, value: float) -> None:
        """Raise a member's max score, keeping ``maxs`` and the reached count."""
        target = self.s.target
        self.n_reached_count += (value >= target) - (t.max_score >= target)
        t.max_score = value
        self.maxs[t.slot] = value

    def _enter(self, t: Traj, slot: int) -> None:
        """Make t the member of ``slot`` (whose previous member has left)."""
        self.slots[slot] = t.id
        t.slot = slot
        t.refs += 1
        if t.rec_steps is None:
            t.rec_steps = np.zeros(0, dtype=np.int64)
            t.rec_vals = np.zeros(0)
        self.maxs[slot] = t.max_score
        self.n_reached_count += t.max_score >= self.s.target
        self.n_running += t.status == Status.RUNNING

    def _leave(self, t: Traj) -> None:
        """A killed member leaves the ensemble; the tree forgets what nobody descends from."""
        self.n_reached_count -= t.max_score >= self.s.target
        self.n_running -= t.status == Status.RUNNING
        t.slot = -1
        t.rec_steps = t.rec_vals = None
        self.tree.unref(t)

    def _records_from_path(self, t: Traj) -> None:
        t.rec_steps, t.rec_vals = alg.running_max_records(self.tree.path_scores(t), 1)

    # --- segments -------------------------------------------------------------------------
    def _task(self, t: Traj) -> Task:
        s = self.s
        p = t.next_step
        own_from = max(p, t.branch)
        n = (own_from - p) + min(s.segment_steps, s.horizon - own_from)
        return self._request(t, p, n)

    def _request(self, t: Traj, p: int, n: int) -> Task:
        """The task of t's segment of n steps from its checkpoint at step p (the initial state
        at 0), with its noise (file mode) or seed; t is in flight from now on.  Shared by
        every algorithm."""
        s = self.s
        start = self.tree.initial
        if p > 0:
            step, start = self.tree.checkpoint_at_or_before(t, p)
            if step != p:
                raise RuntimeError(f"replica {self.r}: trajectory {t.id} has no checkpoint at "
                                   f"step {p} to restart from (found {step})")
        noise = seed = None
        if s.noise_mode == "file":
            noise = self.tree.noise(t, p + 1, p + n, s.noise_dim)
        else:
            seed = nz.segment_seed(t.key, p)
        req = SegmentRequest(workdir=segment_dir(self.run_dir, self.r, t.id, p), start=start,
                             step0=p, n_steps=n, dt=s.dt, checkpoint_every=s.checkpoint_every,
                             noise=noise, seed=seed, parameters=s.parameters, timeout=s.timeout,
                             trajectory=trajectory_dir(self.run_dir, self.r, t.id))
        t.in_flight = True
        self.in_flight += 1
        return Task(self.r, t.id, req)

    def start(self) -> list[Task]:
        """A fresh replica: the N initial trajectories."""
        for i in range(self.s.n):
            t = self.tree.new(i, -1, 0, 0)
            t.left_a = False  # starts in A (classic AMS)
            self._enter(t, i)
            self.events.append(ev.TrajectoryCreated(self.r, 0, i, i, -1, -1, 0, 0))
        self._emit_summary()
        return [self._task(self.tree[i]) for i in range(self.s.n)]

    def on_failure(self) -> None:
        """A run of a segment failed (it may be retried): counted, nothing else changes."""
        self.failed += 1

    def on_lost(self, task: Task) -> None:
        """A segment will not be ingested in this session (the run is stopping)."""

    def _received(self, task: Task, res: SegmentResult) -> Traj:
        """Count a finished segment (no longer in flight); its trajectory.  Every algorithm."""
        t = self.tree[task.traj]
        t.in_flight = False
        self.in_flight -= 1
        self.segments += 1
        self.model_steps += task.request.n_steps
        self.wall_time += res.wall_time
        return t

    def on_result(self, task: Task, res: SegmentResult, attempts: int = 1) -> list[Task]:
        """Ingest a finished segment; return the segments that can start now."""
        s = self.s
        req = task.request
        t = self._received(task, res)
        own_first = max(req.step0, t.branch) + 1
        skip = own_first - req.step0 - 1
        steps = res.steps[skip:]
        obs = res.observables[skip:]
        times = steps * s.dt
        if self.windows is not None:
            pieces = ((p.id, lo, hi) for p, lo, hi in self.tree.pieces(t, own_first - 1))
            scores = self.score(times, self.windows.means(pieces, obs, own_first))
        else:
            scores = self.score(times, obs)
        scan = alg.scan(scores, own_first, s.horizon, s.target, s.score_a, t.left_a)
        nk = scan.n_keep
        last = own_first + nk - 1
        # a trajectory that ended early keeps a copy, not a view holding the whole segment
        kept = scores if nk == scores.size else scores[:nk].copy()
        t.scores.append(kept)
        t.n_own += nk
        t.left_a = scan.left_a
        if nk:
            rs, rv = alg.running_max_records(kept, own_first, t.max_score)
            if rs.size:
                t.rec_steps = np.concatenate([t.rec_steps, rs])
                t.rec_vals = np.concatenate([t.rec_vals, rv])
            self._set_max(t, max(t.max_score, float(kept.max())))
        self.events.append(ev.StepsRecorded(self.r, t.id, steps[:nk], times[:nk], kept, obs[:nk]))
        if self.windows is not None:
            self.windows.add(t.id, obs[:nk])
        self._ingest_checkpoints(t, res, own_first, last)
        self.events.append(ev.SegmentRecorded(
            self.r, t.id, req.step0, req.n_steps, own_first, last, res.wall_time,
            res.model_time, attempts, bool(res.reused), res.provenance))
        t.next_step = last
        if scan.status != Status.RUNNING:
            self._end(t, scan.status, last)
            self.n_running -= 1
            out = self._maybe_iterate()
        else:
            out = [self._task(t)]
        self._emit_summary()
        return out

    def _ingest_checkpoints(self, t: Traj, res: SegmentResult, first: int, last: int) -> None:
        ck = res.checkpoints
        inside = (ck.steps >= first) & (ck.steps <= last)
        ids, first_id, fresh = self.tree.register(ck.files)
        if fresh:
            rel = self.rel
            self.events.append(ev.StateFilesRegistered(self.r, first_id, tuple(map(rel, fresh))))
        if inside.all():  # the usual case: every checkpoint is on its own steps, no copies
            steps, file_of, index = ck.steps, ck.file_of, ck.index
        else:
            idx = np.flatnonzero(inside)
            steps, file_of, index = ck.steps[idx], ck.file_of[idx], ck.index[idx]
        if not steps.size:  # no checkpoint of its own steps: its files still go with it
            t.extra_files = (t.extra_files or []) + ids.tolist()
            return
        fids = ids[file_of]
        self.events.append(ev.CheckpointsRecorded(self.r, t.id, steps, fids, index))
        t.add_checkpoints(steps, fids, index)

    def _end(self, t: Traj, status: Status, end: int) -> None:
        t.status, t.end = status, end
        self.events.append(ev.TrajectoryEnded(self.r, t.id, end, int(status), t.max_score))

    # --- iterations -----------------------------------------------------------------------
    def _maybe_iterate(self) -> list[Task]:
        out: list[Task] = []
        while not self.done and not out:
            if self.n_running:
                return out
            out = self._iterate()
        return out

    def _iterate(self) -> list[Task]:
        s = self.s
        j = self.iteration + 1
        d = alg.decide(j, self.maxs, s.k, s.target, nz.survivor_rng(s.seed, self.r, j),
                       s.max_iterations)
        self.level = d.level
        if d.outcome == Outcome.EXTINCT:
            self.log_weight = -math.inf
        if d.outcome != Outcome.RUNNING:
            self.outcome = d.outcome
            self.events.append(ev.ReplicaEnded(self.r, int(d.outcome), self.iteration,
                                               self.log_weight, self.n_reached()))
            return []
        self.iteration = j
        self.log_weight = alg.next_log_weight(self.log_weight, d.n_killed, s.n)
        self.events.append(ev.IterationDecided(self.r, j, d.level, d.n_killed, self.log_weight))
        tasks = []
        parents = [self.tree[int(self.slots[p])] for p in d.parents]
        for slot, surv in zip(d.killed, parents):
            killed_id = int(self.slots[slot])
            child = self._branch(surv, d.level, int(slot), killed_id, j)
            self._leave(self.tree[killed_id])
            self._enter(child, int(slot))
            if child.status == Status.RUNNING:
                tasks.append(self._task(child))
        if self.windows is not None:
            self.windows.forget_all_but(self.tree.trajs)
        return tasks

    def _branch(self, surv: Traj, level: float, slot: int, killed: int, j: int) -> Traj:
        """The child of ``surv`` replacing ``killed``: DESIGN §4.3 and the noise modes of §5."""
        assert surv.rec_steps is not None and surv.rec_vals is not None
        b = alg.branch_step_from_records(surv.rec_steps, surv.rec_vals, level)
        end = surv.last_step
        copy = False
        if self.s.noise_mode == "file":
            # restart from the last checkpoint at or before b and replay the survivor's noise
            start, _ = self.tree.checkpoint_at_or_before(surv, b)
        else:
            # the model draws its own noise: branch at the first checkpoint at or after b
            found = self.tree.checkpoint_at_or_after(surv, b)
            if found is None:
                b, copy = end, True
            else:
                b = found[0]
            start = b
        if b >= end and surv.status != Status.RUNNING:
            copy = True
            b = end
        cid = self.next_id
        self.next_id += 1
        child = self.tree.new(cid, surv.id, b, start)
        surv.refs += 1
        # the path up to b: its records are the survivor's up to b, its max the last of them
        n_rec = int(np.searchsorted(surv.rec_steps, b, side="right"))
        child.rec_steps = surv.rec_steps[:n_rec].copy()
        child.rec_vals = surv.rec_vals[:n_rec].copy()
        child.max_score = float(child.rec_vals[-1])
        if self.s.score_a is not None:
            child.left_a = bool(child.max_score > self.s.score_a)
        self.events.append(ev.TrajectoryCreated(self.r, j, slot, cid, killed, surv.id, b, start))
        if copy:
            child.next_step = b
            self._end(child, surv.status, b)
        elif b >= self.s.horizon:
            self._end(child, Status.HORIZON, b)
        return child

    # --- resume ---------------------------------------------------------------------------
    def restore(self, rec) -> list[Task]:
        """Rebuild from a store's committed rows; return the segments to (re)submit."""
        if rec.tables["created"]["id"].size == 0:
            self._restore_totals(rec)
            return self.start()
        self._rebuild(rec)
        if self.done:
            return []
        tree = self.tree
        tasks = [self._task(tree[int(i)]) for i in self.slots
                 if tree[int(i)].status == Status.RUNNING]
        if not tasks:
            tasks = self._maybe_iterate()
        self._emit_summary()
        return tasks

    def _restore_totals(self, rec) -> None:
        s = rec.summary
        self.outcome = Outcome(int(s["outcome"]))
        self.model_steps = int(s["model_steps"])
        self.segments = int(s["segments"])
        self.failed = int(s["failed_segments"])
        self.wall_time = float(s["wall_time"])
        self.level = float(s["level"])

    def _rebuild(self, rec) -> None:
        """The tree, the members and the totals from a store's committed rows (not empty);
        shared with the other algorithms' state machines (montecarlo, gklt)."""
        T = rec.tables
        self._restore_totals(rec)
        cr = T["created"]
        tree = self.tree
        for slot, tid, parent, b, start in zip(cr["slot"], cr["id"], cr["parent"],
                                               cr["branch_step"], cr["start_step"]):
            tree.new(int(tid), int(parent), int(b), int(start))
            self.slots[int(slot)] = int(tid)
        self.next_id = int(cr["id"].max()) + 1
        it = T["iterations"]
        if it["iteration"].size:
            self.iteration = int(it["iteration"][-1])
            self.log_weight = float(it["log_weight"][-1])
        tree.paths = {i: os.path.join(self.run_dir, p.decode() if isinstance(p, bytes) else p)
                      for i, p in enumerate(T["files"]["path"])}
        tree.n_files = len(tree.paths)
        ids = np.array(sorted(tree.trajs), dtype=np.int64)
        st = T["steps"]
        order = np.lexsort((st["step"], st["traj"]))
        traj_sorted = st["traj"][order]
        lo = np.searchsorted(traj_sorted, ids, side="left")
        hi = np.searchsorted(traj_sorted, ids, side="right")
        for tid, a, e in zip(ids.tolist(), lo, hi):
            if e > a:
                t = tree[tid]
                t.scores = [st["score"][order[a:e]]]
                t.n_own = int(e - a)
                t.next_step = t.branch + t.n_own
                if self.windows is not None:
                    self.windows.add(tid, st["obs"][order[a:e]])
        ck = T["checkpoints"]
        o = np.lexsort((ck["step"], ck["traj"]))
        ck_traj = ck["traj"][o]
        for tid, t in tree.trajs.items():
            a, e = np.searchsorted(ck_traj, [tid, tid + 1])
            if e > a:
                sel = o[a:e]
                t.ck = CheckpointRuns.of(ck["step"][sel], ck["file"][sel], ck["index"][sel])
        en = T["trajectories"]
        for tid, end, status, mx in zip(en["id"], en["end_step"], en["status"], en["max_score"]):
            ended = tree.trajs.get(int(tid))
            if ended is not None:
                ended.status, ended.end, ended.max_score = Status(int(status)), int(end), float(mx)
        # running trajectories: max score and "left A" from their path so far
        for t in tree.trajs.values():
            if t.status == Status.RUNNING:
                path = tree.path_scores(t)
                t.max_score = float(path.max()) if path.size else -math.inf
                if self.s.score_a is not None:
                    t.left_a = bool((path > self.s.score_a).any())
        tree.keep_only_ancestry_of([int(i) for i in self.slots])
        if self.windows is not None:
            self.windows.forget_all_but(tree.trajs)
        self.n_reached_count = self.n_running = 0
        for slot, tid in enumerate(self.slots.tolist()):
            t = tree[tid]
            self._records_from_path(t)
            self._enter(t, slot)
        self.in_flight = 0


# the name before the rebuild (bench scripts, notebooks)
Replica = Ensemble
