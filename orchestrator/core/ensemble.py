"""One replica's TAMS run, as a state machine fed with segment results.

The driver hands each finished segment to :meth:`Replica.on_result`; the replica records
it, decides whether the trajectory goes on, and, once every trajectory of the ensemble has
ended, takes the next iteration's decision (``orchestrator.core.algorithm``) and returns the
children's first segments.  Nothing here waits or touches a worker: the same object is
rebuilt from the database on resume (:meth:`Replica.restore`), and because every random
number is keyed (``orchestrator.core.noise``) the resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from orchestrator.core import algorithm as alg
from orchestrator.core import noise as nz
from orchestrator.core.algorithm import Outcome, Status
from orchestrator.model import ModelRunError, SegmentRequest, SegmentResult, StateRef


@dataclass
class Traj:
    """What the driver keeps of one trajectory: its link and its own steps' scores."""

    id: int
    parent: int
    branch: int  # last step copied from the parent's path (0 for an initial trajectory)
    start: int  # step of the state the first segment starts from (<= branch in file mode)
    key: tuple[int, int]
    scores: list = field(default_factory=list)  # arrays of own scores (steps branch+1 ...)
    n_own: int = 0
    ck_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ck_file: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ck_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    status: Status = Status.RUNNING
    end: int = -1
    max_score: float = -math.inf
    left_a: bool = True
    next_step: int = -1  # step of the state the next segment starts from
    in_flight: bool = False
    slot: int = -1  # ensemble slot while a member of the ensemble, else -1
    refs: int = 0  # live children + 1 while in the ensemble; 0 = forgotten
    # records of the path's running maximum (steps where the score exceeds every earlier
    # score, and those scores): enough to branch from this trajectory without its path.
    # Kept only while in the ensemble (a survivor is always a member).
    rec_steps: np.ndarray | None = None
    rec_vals: np.ndarray | None = None

    def own_scores(self) -> np.ndarray:
        if len(self.scores) > 1:
            self.scores = [np.concatenate(self.scores)]
        return self.scores[0] if self.scores else np.zeros(0)


@dataclass(frozen=True)
class Settings:
    """Everything a replica needs to know of the campaign."""

    seed: int
    n: int
    k: int
    target: float
    score_a: float | None
    horizon: int  # in steps
    max_iterations: int
    segment_steps: int
    dt: float
    noise_mode: str
    noise_dim: int
    checkpoint_every: int
    n_obs: int
    parameters: dict
    timeout: float | None


@dataclass(frozen=True)
class Task:
    """A segment to run for a trajectory of a replica."""

    replica: int
    traj: int
    request: SegmentRequest


class Replica:
    def __init__(self, index: int, s: Settings, db, score: Callable, run_dir: str,
                 initial: StateRef | None, rel: Callable[[str], str]):
        self.r = index
        self.s = s
        self.db = db
        self.score = score
        self.run_dir = run_dir
        self.initial = initial
        self.rel = rel  # path -> path relative to the run directory (for the files table)
        self.trajs: dict[int, Traj] = {}
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
        # checkpoint files of the trajectories still in memory (forgotten ones are dropped)
        self.files: dict[str, int] = {}  # absolute path -> file id
        self.paths: dict[int, str] = {}  # file id -> absolute path
        self.n_files = 0  # rows of the files table
        self.wall_time = 0.0
        self.garbage: list[int] = []  # ids whose files may go once the forgetting is committed
        # running counts over the ensemble, so no per-segment pass over all N
        self.maxs = np.full(s.n, -math.inf)  # slot -> max score of its member
        self.n_reached_count = 0  # members with max score >= target
        self.n_running = 0  # members still running

    # --- bookkeeping --------------------------------------------------------------------
    def _new_traj(self, tid: int, parent: int, branch: int, start: int) -> Traj:
        t = Traj(tid, parent, branch, start, nz.trajectory_key(self.s.seed, self.r, tid))
        t.next_step = start
        self.trajs[tid] = t
        return t

    def _file_id(self, path: str) -> int:
        fid = self.files.get(path)
        if fid is None:
            fid = self.n_files
            self.n_files += 1
            self.files[path] = fid
            self.paths[fid] = path
            self.db.append(self.r, "files", path=self.rel(path).encode())
        return fid

    def _ref(self, t: Traj, i: int) -> StateRef:
        return StateRef(self.paths[int(t.ck_file[i])], int(t.ck_index[i]))

    def n_reached(self) -> int:
        return self.n_reached_count

    def _set_max(self, t: Traj, value: float) -> None:
        """Raise a member's max score, keeping ``maxs`` and the reached count."""
        target = self.s.target
        self.n_reached_count += (value >= target) - (t.max_score >= target)
        t.max_score = value
        self.maxs[t.slot] = value

    def _add_records(self, t: Traj, first_step: int, scores: np.ndarray) -> None:
        """Append the running-maximum records of new own scores (steps first_step...)."""
        if not scores.size:
            return
        prev = np.maximum.accumulate(np.concatenate(([t.max_score], scores[:-1])))
        rec = np.flatnonzero(scores > prev)
        if rec.size:
            t.rec_steps = np.concatenate([t.rec_steps, first_step + rec])
            t.rec_vals = np.concatenate([t.rec_vals, scores[rec]])

    def _records_from_path(self, t: Traj) -> None:
        path = self.path_scores(t)
        t.rec_steps = np.zeros(0, dtype=np.int64)
        t.rec_vals = np.zeros(0)
        mx, t.max_score = t.max_score, -math.inf
        self._add_records(t, 1, path)
        t.max_score = mx

    def running_estimate(self) -> float:
        return alg.estimate(self.log_weight, self.n_reached(), self.s.n)

    @property
    def done(self) -> bool:
        return self.outcome != Outcome.RUNNING

    def _summary(self) -> None:
        n_reached = self.n_reached()
        est = alg.estimate(self.log_weight, n_reached, self.s.n)
        self.db.set_summary(
            self.r, outcome=int(self.outcome), iterations=self.iteration,
            log_weight=self.log_weight, n_reached=n_reached,
            estimate=est if self.done else math.nan,
            log_estimate=alg.log_estimate(self.log_weight, n_reached, self.s.n) if self.done else math.nan,
            model_steps=self.model_steps, segments=self.segments, failed_segments=self.failed,
            in_flight=self.in_flight, level=self.level, wall_time=self.wall_time)

    # --- paths --------------------------------------------------------------------------
    def _pieces(self, t: Traj, upto: int):
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

    def _chain(self, t: Traj, upto: int) -> list[tuple[Traj, int, int]]:
        """(trajectory, lo, hi] pieces of t's path for steps 1..upto, root first."""
        pieces = list(self._pieces(t, upto))
        pieces.reverse()
        return pieces

    def score_at(self, t: Traj, step: int) -> float:
        """The score of t's path at ``step`` (>= 1)."""
        for p, lo, hi in self._pieces(t, step):
            return float(p.own_scores()[hi - lo - 1])
        raise ValueError(f"trajectory {t.id} has no step {step}")

    def path_scores(self, t: Traj, upto: int | None = None) -> np.ndarray:
        upto = t.branch + t.n_own if upto is None else upto
        parts = [p.own_scores()[: hi - lo] for p, lo, hi in self._chain(t, upto)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _ckpt_at_or_before(self, t: Traj, b: int) -> tuple[int, StateRef | None]:
        for p, lo, hi in self._pieces(t, b):
            steps = p.ck_steps
            i = np.searchsorted(steps, hi, side="right") - 1
            if i >= 0 and steps[i] > lo:
                return int(steps[i]), self._ref(p, i)
        return 0, self.initial

    def _ckpt_at_or_after(self, t: Traj, b: int) -> tuple[int, StateRef] | None:
        end = t.branch + t.n_own
        tail = []  # the pieces reaching step b or later, leaf first
        for piece in self._pieces(t, end):
            if piece[2] < b:
                break
            tail.append(piece)
        for p, lo, hi in reversed(tail):
            steps = p.ck_steps
            i = np.searchsorted(steps, max(b, lo + 1), side="left")
            if i < steps.size and steps[i] <= hi:
                return int(steps[i]), self._ref(p, i)
        return None

    def _noise(self, t: Traj, first: int, last: int) -> np.ndarray:
        """Noise of steps first..last of t's path: each step's owner's keyed noise."""
        parts = []
        for p, lo, hi in self._pieces(t, last):
            a, b = max(lo + 1, first), hi
            if a <= b:
                parts.append(nz.step_noise(p.key, a, b - a + 1, self.s.noise_dim))
            if lo < first:
                break
        parts.reverse()
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    # --- segments -----------------------------------------------------------------------
    def _task(self, t: Traj) -> Task:
        p = t.next_step
        own_from = max(p, t.branch)
        n = (own_from - p) + min(self.s.segment_steps, self.s.horizon - own_from)
        start = self.initial
        if p > 0:
            step, start = self._ckpt_at_or_before(t, p)
            if step != p:
                raise RuntimeError(f"replica {self.r}: trajectory {t.id} has no checkpoint at "
                                   f"step {p} to restart from (found {step})")
        workdir = os.path.join(self.run_dir, f"r{self.r:04d}", f"t{t.id:07d}", f"s{p:08d}")
        noise = seed = None
        if self.s.noise_mode == "file":
            noise = self._noise(t, p + 1, p + n)
        else:
            seed = nz.segment_seed(t.key, p)
        req = SegmentRequest(workdir=workdir, start=start, step0=p, n_steps=n, dt=self.s.dt,
                             checkpoint_every=self.s.checkpoint_every, noise=noise, seed=seed,
                             parameters=self.s.parameters, timeout=self.s.timeout)
        t.in_flight = True
        self.in_flight += 1
        return Task(self.r, t.id, req)

    def start(self) -> list[Task]:
        """A fresh replica: the N initial trajectories."""
        for i in range(self.s.n):
            t = self._new_traj(i, -1, 0, 0)
            t.left_a = False  # starts in A (classic AMS)
            self._enter(t, i)
            self.db.append(self.r, "created", iteration=0, slot=i, id=i, killed=-1, parent=-1,
                           branch_step=0, start_step=0)
        self._summary()
        return [self._task(self.trajs[i]) for i in range(self.s.n)]

    def validate(self, req: SegmentRequest, res: SegmentResult) -> None:
        expect = np.arange(req.step0 + 1, req.step0 + req.n_steps + 1)
        steps = np.asarray(res.steps)
        if steps.shape != expect.shape or not np.array_equal(steps, expect):
            raise ModelRunError(f"segment {req.workdir}: the model reported steps "
                                f"{steps[:3].tolist()}...; expected {req.step0 + 1}..{req.step0 + req.n_steps}",
                                req.workdir)
        obs = res.observables
        if obs.ndim != 2 or obs.shape != (req.n_steps, self.s.n_obs):
            raise ModelRunError(f"segment {req.workdir}: the model reported observables of shape "
                                f"{obs.shape}; expected ({req.n_steps}, {self.s.n_obs}) as listed "
                                "in model.observables", req.workdir, transient=False)
        if not np.isfinite(obs).all():
            bad = int(steps[np.flatnonzero(~np.isfinite(obs).all(axis=1))[0]])
            raise ModelRunError(f"segment {req.workdir}: the model reported a non-finite observable "
                                f"at step {bad}", req.workdir)

    def on_result(self, task: Task, res: SegmentResult) -> list[Task]:
        """Ingest a finished segment; return the segments that can start now."""
        req = task.request
        t = self.trajs[task.traj]
        t.in_flight = False
        self.in_flight -= 1
        self.segments += 1
        self.model_steps += req.n_steps
        self.wall_time += res.wall_time
        own_first = max(req.step0, t.branch) + 1
        skip = own_first - req.step0 - 1
        steps = res.steps[skip:]
        obs = res.observables[skip:]
        times = steps * self.s.dt
        scores = self.score(times, obs)
        scan = alg.scan(scores, own_first, self.s.horizon, self.s.target, self.s.score_a, t.left_a)
        nk = scan.n_keep
        last = own_first + nk - 1
        t.scores.append(scores[:nk])
        t.n_own += nk
        t.left_a = scan.left_a
        if nk:
            self._add_records(t, own_first, scores[:nk])
            self._set_max(t, max(t.max_score, float(scores[:nk].max())))
        db = self.db
        db.append(self.r, "steps", traj=np.full(nk, t.id), step=steps[:nk], time=times[:nk],
                  score=scores[:nk], obs=obs[:nk])
        ck = res.checkpoints
        keep = (ck.steps >= own_first) & (ck.steps <= last)
        idx = np.flatnonzero(keep)
        if idx.size:
            ids = np.array([self._file_id(f) for f in ck.files], dtype=np.int64)
            fids = ids[ck.file_of[idx]]
            db.append(self.r, "checkpoints", traj=np.full(idx.size, t.id), step=ck.steps[idx],
                      file=fids, index=ck.index[idx])
            t.ck_steps = np.concatenate([t.ck_steps, ck.steps[idx]])
            t.ck_file = np.concatenate([t.ck_file, fids])
            t.ck_index = np.concatenate([t.ck_index, ck.index[idx]])
        pv = res.provenance
        db.append(self.r, "segments", traj=t.id, step0=req.step0, n_steps=req.n_steps,
                  first_own=own_first, last_own=last, wall_time=res.wall_time,
                  model_time=res.model_time, attempts=res.attempts, reused=int(res.reused),
                  host=pv.host.encode()[:64], pid=pv.pid, slurm_job=pv.slurm_job_id.encode()[:32],
                  image=pv.image_digest.encode()[:100], launcher=pv.launcher.encode()[:16])
        t.next_step = last
        if scan.status != Status.RUNNING:
            self._end(t, scan.status, last)
            self.n_running -= 1
            out = self._maybe_iterate()
        else:
            out = [self._task(t)]
        self._summary()
        return out

    def _end(self, t: Traj, status: Status, end: int) -> None:
        t.status, t.end = status, end
        self.db.append(self.r, "trajectories", id=t.id, end_step=end, status=int(status),
                       max_score=t.max_score)

    # --- iterations ---------------------------------------------------------------------
    def _maybe_iterate(self) -> list[Task]:
        out: list[Task] = []
        while not self.done and not out:
            if self.n_running:
                return out
            out = self._iterate()
        return out

    def _iterate(self) -> list[Task]:
        j = self.iteration + 1
        d = alg.decide(j, self.maxs, self.s.k, self.s.target, nz.survivor_rng(self.s.seed, self.r, j),
                       self.s.max_iterations)
        self.level = d.level
        if d.outcome == Outcome.EXTINCT:
            self.outcome = Outcome.EXTINCT
            self.log_weight = -math.inf
            return []
        if d.outcome != Outcome.RUNNING:
            self.outcome = d.outcome
            return []
        self.iteration = j
        self.log_weight = alg.next_log_weight(self.log_weight, d.n_killed, self.s.n)
        self.db.append(self.r, "iterations", iteration=j, level=d.level, n_killed=d.n_killed,
                       log_weight=self.log_weight, weight=math.exp(self.log_weight))
        tasks = []
        parents = [self.trajs[int(self.slots[p])] for p in d.parents]
        for slot, surv in zip(d.killed, parents):
            killed_id = int(self.slots[slot])
            child = self._branch(surv, d.level, int(slot), killed_id, j)
            self._leave(self.trajs[killed_id])
            self._enter(child, int(slot))
            if child.status == Status.RUNNING:
                tasks.append(self._task(child))
        return tasks

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
        """A killed member leaves the ensemble; forget it and, cascading up, every ancestor
        no live trajectory descends from any more (reference counts: O(1) per iteration
        amortised, memory bounded however many iterations run)."""
        self.n_reached_count -= t.max_score >= self.s.target
        self.n_running -= t.status == Status.RUNNING
        t.slot = -1
        t.rec_steps = t.rec_vals = None
        self._unref(t)

    def _unref(self, t: Traj) -> None:
        while True:
            t.refs -= 1
            if t.refs > 0:
                return
            del self.trajs[t.id]
            self.garbage.append(t.id)
            for fid in np.unique(t.ck_file).tolist():
                self.files.pop(self.paths.pop(fid, None), None)
            if t.parent < 0:
                return
            t = self.trajs[t.parent]

    def _branch(self, surv: Traj, level: float, slot: int, killed: int, j: int) -> Traj:
        # first step above the level = first running-maximum record above it
        i = int(np.searchsorted(surv.rec_vals, level, side="right"))
        if i >= surv.rec_vals.size:
            raise ValueError("the survivor never rises above the level; it cannot be a survivor")
        b = int(surv.rec_steps[i])
        end = surv.branch + surv.n_own
        copy = False
        if self.s.noise_mode == "file":
            start, _ = self._ckpt_at_or_before(surv, b)
        else:
            found = self._ckpt_at_or_after(surv, b)
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
        child = self._new_traj(cid, surv.id, b, start)
        surv.refs += 1
        # the path up to b: its records are the survivor's up to b, its max the last of them
        n_rec = int(np.searchsorted(surv.rec_steps, b, side="right"))
        child.rec_steps = surv.rec_steps[:n_rec].copy()
        child.rec_vals = surv.rec_vals[:n_rec].copy()
        child.max_score = float(child.rec_vals[-1])
        if self.s.score_a is not None:
            child.left_a = bool(child.max_score > self.s.score_a)
        self.db.append(self.r, "created", iteration=j, slot=slot, id=cid, killed=killed,
                       parent=surv.id, branch_step=b, start_step=start)
        if copy:
            child.next_step = b
            self._end(child, surv.status, b)
        elif b >= self.s.horizon:
            self._end(child, Status.HORIZON, b)
        return child

    def _forget(self) -> None:
        """Drop trajectories that no member of the ensemble descends from, and set the
        reference counts of the others (once, on resume; later :meth:`_leave` keeps them)."""
        live: set[int] = set()
        for i in self.slots:
            tid = int(i)
            while tid >= 0 and tid not in live:
                live.add(tid)
                tid = self.trajs[tid].parent
        for tid in [t for t in self.trajs if t not in live]:
            del self.trajs[tid]
            self.garbage.append(tid)
        for t in self.trajs.values():
            t.refs = 0
        for t in self.trajs.values():
            if t.parent >= 0:
                self.trajs[t.parent].refs += 1

    def live_files(self) -> set[str]:
        return {self.paths[int(f)] for t in self.trajs.values() for f in np.unique(t.ck_file)}

    # --- resume -------------------------------------------------------------------------
    def restore(self, rec) -> list[Task]:
        """Rebuild from the database's committed rows; return the segments to (re)submit."""
        T = rec.tables
        s = rec.summary
        self.outcome = Outcome(int(s["outcome"]))
        self.model_steps = int(s["model_steps"])
        self.segments = int(s["segments"])
        self.failed = int(s["failed_segments"])
        self.wall_time = float(s["wall_time"])
        self.level = float(s["level"])
        cr = T["created"]
        if cr["id"].size == 0:
            return self.start()
        for it, slot, tid, parent, b, start in zip(cr["iteration"], cr["slot"], cr["id"],
                                                   cr["parent"], cr["branch_step"], cr["start_step"]):
            self._new_traj(int(tid), int(parent), int(b), int(start))
            self.slots[int(slot)] = int(tid)
        self.next_id = int(cr["id"].max()) + 1
        it = T["iterations"]
        if it["iteration"].size:
            self.iteration = int(it["iteration"][-1])
            self.log_weight = float(it["log_weight"][-1])
        self.paths = {i: os.path.join(self.run_dir, p.decode())
                      for i, p in enumerate(T["files"]["path"])}
        self.n_files = len(self.paths)
        st = T["steps"]
        order = np.lexsort((st["step"], st["traj"]))
        traj_sorted = st["traj"][order]
        bounds = np.searchsorted(traj_sorted, np.array(sorted(self.trajs)), side="left")
        ends = np.searchsorted(traj_sorted, np.array(sorted(self.trajs)), side="right")
        for tid, a, e in zip(sorted(self.trajs), bounds, ends):
            t = self.trajs[tid]
            if e > a:
                sc = st["score"][order[a:e]]
                t.scores = [sc]
                t.n_own = int(e - a)
                t.next_step = t.branch + t.n_own
        ck = T["checkpoints"]
        o = np.lexsort((ck["step"], ck["traj"]))
        ck_traj = ck["traj"][o]
        for tid, t in self.trajs.items():
            a, e = np.searchsorted(ck_traj, [tid, tid + 1])
            if e > a:
                t.ck_steps = ck["step"][o[a:e]]
                t.ck_file = ck["file"][o[a:e]]
                t.ck_index = ck["index"][o[a:e]]
        en = T["trajectories"]
        for tid, end, status, mx in zip(en["id"], en["end_step"], en["status"], en["max_score"]):
            t = self.trajs.get(int(tid))
            if t is not None:
                t.status, t.end, t.max_score = Status(int(status)), int(end), float(mx)
        # running trajectories: max score and "left A" from their path so far
        for t in self.trajs.values():
            if t.status == Status.RUNNING:
                path = self.path_scores(t)
                t.max_score = float(path.max()) if path.size else -math.inf
                if self.s.score_a is not None:
                    t.left_a = bool((path > self.s.score_a).any())
        self._forget()
        used = {int(f) for t in self.trajs.values() for f in np.unique(t.ck_file)}
        self.paths = {f: p for f, p in self.paths.items() if f in used}
        self.files = {p: f for f, p in self.paths.items()}
        self.n_reached_count = self.n_running = 0
        for slot, tid in enumerate(self.slots.tolist()):
            t = self.trajs[tid]
            self._records_from_path(t)
            self._enter(t, slot)
        self.in_flight = 0
        if self.done:
            return []
        tasks = [self._task(self.trajs[int(i)]) for i in self.slots
                 if self.trajs[int(i)].status == Status.RUNNING]
        if not tasks:
            tasks = self._maybe_iterate()
        self._summary()
        return tasks
