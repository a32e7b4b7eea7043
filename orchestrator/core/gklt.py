"""The GKLT cloning algorithm (``algorithm: gklt``) for large time averages of an observable.

Giardina, Kurchan, Lecomte & Tailleur (2006, 2011); for climate extremes Ragone, Wouters &
Bouchet (2018, PNAS 115, 24).  Per replica, N trajectories start from the initial state.  The
resampling steps are ``t_j = j * tau`` (``tau = gklt.resample_every``) strictly before the
horizon T.  When all N members have reached ``t_j``:

* each member i is weighted by ``G_i = exp(k * I_i)``, ``I_i = dt * sum of A over the
  interval's steps t_{j-1}+1 .. t_j`` of its path; ``R_j`` = the ensemble mean of the ``G_i``.
  Computed centred: ``G'_i = exp(k (I_i - c_j))``, ``R'_j = R_j exp(-k c_j)`` with ``c_j``
  the ensemble mean of the ``I_i``, so that ``log prod R'`` stays small whatever A's units
  (A = 283 K would make ``log prod R`` overflow the store's ``weight`` column); the
  constants cancel exactly in the weights below;
* systematic resampling (one uniform from the generator keyed by (seed, replica, j)) gives
  member i ``c_i`` copies with ``E[c_i] = N * G_i / sum(G) = G_i / R_j`` and ``sum c_i = N``;
* a member with ``c_i >= 1`` goes on itself (its own keyed noise), and ``c_i - 1`` children
  branch from it at ``t_j`` -- stored as TAMS stores a branch: parent, branch step, own steps
  only -- each starting from the member's checkpoint at ``t_j`` with its *own* keyed noise;
  they take the slots of the members with ``c_i = 0``, which end there (status ``KILLED``);
* ``log(prod R') += log R'_j`` is recorded as the iteration's ``log_weight``, ``c_j`` as
  its ``level``, and the number of members with no copy as ``n_killed``.

At the horizon, with J resamplings done, member i of the final ensemble weighs
``w_i = exp(-k * sum_{j<=J} I_{i,j}) * prod_{j<=J} R_j / N
= exp(-k * sum_{j<=J} (I_{i,j} - c_j)) * prod_{j<=J} R'_j / N``: the integral of A up to the
last resampling step t_J, because the steps after it were never tilted (a resampling *at*
T would change nothing in expectation and only add variance, so there is none); for any
function f of the path, ``sum_i w_i f(path_i)`` is an unbiased estimate of E[f] under the untilted dynamics (the
Feynman-Kac particle estimate; Del Moral 2004, Feynman-Kac Formulae, ch. 7: it needs only
``E[c_i | past] = N * normalised weight``, which systematic resampling gives, and copies that
evolve independently given the past, which their own noise keys give).  A replica's estimate
is that with ``f = 1{time average of A over the horizon >= gklt.threshold}``.

Every sum of A is ``math.fsum`` (exactly rounded, so independent of how the steps were cut
into segments): a resumed replica recomputes the same bits from the store's rows.
No I/O here, as in the rest of :mod:`orchestrator.core`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.core import events as ev
from orchestrator.core import noise as nz
from orchestrator.core.algorithm import Outcome, Status
from orchestrator.core.ensemble import Ensemble
from orchestrator.core.meta import Settings
from orchestrator.core.segments import Task
from orchestrator.core.tree import Traj
from orchestrator.model import SegmentResult, StateRef

__all__ = ["Gklt", "systematic_counts", "log_mean_exp", "interval_integrals", "final_weights",
           "GkltResult"]


# --- the rules as pure functions (the tests call these too) -------------------------------
def log_mean_exp(x: np.ndarray) -> float:
    """log(mean(exp(x))) without overflow."""
    x = np.asarray(x, dtype=np.float64)
    m = float(x.max())
    return m + math.log(float(np.mean(np.exp(x - m))))


def systematic_counts(log_g: np.ndarray, u: float) -> np.ndarray:
    """Copies of each member by systematic resampling: N pointers ``(u + i) / N`` into the
    cumulative normalised weights; ``E[c_i] = N * w_i`` for ``u`` uniform in [0, 1), and the
    counts sum to N.  ``log_g``: the members' log weights (any additive constant)."""
    log_g = np.asarray(log_g, dtype=np.float64)
    n = log_g.size
    w = np.exp(log_g - log_g.max())
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0  # no pointer may fall beyond the last member by rounding
    pointers = (u + np.arange(n)) / n
    idx = np.searchsorted(cum, pointers, side="right")
    return np.bincount(idx, minlength=n).astype(np.int64)


def interval_integrals(a_path: np.ndarray, dt: float, tau: int, n_intervals: int
                       ) -> tuple[list[float], float]:
    """``[dt * fsum(A over steps (j-1)tau+1 .. j tau) for j = 1..n_intervals]`` of a path
    (``a_path[s-1]`` = A at step s), and ``dt * fsum`` of the steps after the last of them."""
    ints = [dt * math.fsum(a_path[(j - 1) * tau: j * tau].tolist())
            for j in range(1, n_intervals + 1)]
    rest = dt * math.fsum(a_path[n_intervals * tau:].tolist())
    return ints, rest


def final_weights(ints: list[list[float]], rests: list[float], k: float, log_prod_r: float,
                  horizon_time: float, centres: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The final ensemble's log weights ``-k sum_j (I_j - c_j) + log prod R' - log N`` and
    the time averages of A over the horizon, from each member's interval integrals."""
    n = len(ints)
    logw = np.array([-k * math.fsum([x - c for x, c in zip(i, centres)]) for i in ints])
    logw = logw + log_prod_r - math.log(n)
    avg = np.array([math.fsum([*i, r]) for i, r in zip(ints, rests)]) / horizon_time
    return logw, avg


@dataclass(frozen=True)
class GkltResult:
    """One finished replica: the estimate for the threshold and what it was made of."""

    estimate: float
    log_estimate: float
    n_reached: int  # final members with a time average >= the threshold


def estimate_at(logw: np.ndarray, avg: np.ndarray, threshold: float) -> GkltResult:
    hit = avg >= threshold
    if not hit.any():
        return GkltResult(0.0, -math.inf, 0)
    lw = logw[hit]
    m = float(lw.max())
    log_p = m + math.log(float(np.exp(lw - m).sum()))
    return GkltResult(math.exp(log_p), log_p, int(hit.sum()))


# --- the state machine --------------------------------------------------------------------
class Gklt(Ensemble):
    """One replica of GKLT: the TAMS machinery (tree, checkpoints, keyed noise, events) with
    resampling at fixed steps instead of killing at levels."""

    def __init__(self, index: int, s: Settings, score: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 run_dir: str, initial: StateRef | None, rel: Callable[[str], str]):
        super().__init__(index, s, score, run_dir, initial, rel)
        names = s.meta.observable_names
        self.a_col = names.index(s.meta.tilt_observable)
        self.tau = int(s.meta.resample_every)
        self.tilt = float(s.meta.tilt)
        self.ints: dict[int, list[float]] = {}  # traj -> I of its path's completed intervals
        self.cur: dict[int, list[np.ndarray]] = {}  # member -> A of its current interval
        self.arrived = 0  # members at the next resampling step (or at the horizon)
        self.centres: list[float] = []  # c_j: the ensemble mean of I at each resampling
        self.result: GkltResult | None = None

    # --- where a member stops next ---------------------------------------------------------
    def _stop(self, p: int) -> int:
        return min((p // self.tau + 1) * self.tau, self.s.horizon)

    def _task(self, t: Traj) -> Task:
        s = self.s
        p = t.next_step
        n = min(s.segment_steps, self._stop(p) - p)
        return self._request(t, p, n)

    def start(self) -> list[Task]:
        tasks = super().start()
        for i in range(self.s.n):
            self.ints[i] = []
            self.cur[i] = []
        return tasks

    # --- results -------------------------------------------------------------------------
    def on_result(self, task: Task, res: SegmentResult, attempts: int = 1) -> list[Task]:
        s = self.s
        req = task.request
        t = self._received(task, res)
        own_first = req.step0 + 1  # a GKLT segment never replays a parent's steps
        steps, obs = res.steps, res.observables
        times = steps * s.dt
        if self.windows is not None:
            pieces = ((p.id, lo, hi) for p, lo, hi in self.tree.pieces(t, own_first - 1))
            scores = self.score(times, self.windows.means(pieces, obs, own_first))
            self.windows.add(t.id, obs)
        else:
            scores = self.score(times, obs)
        last = own_first + steps.size - 1
        t.scores.append(scores)
        t.n_own += steps.size
        if steps.size:
            self._set_max(t, max(t.max_score, float(scores.max())))
        self.cur[t.id].append(np.asarray(obs[:, self.a_col], dtype=np.float64))
        self.events.append(ev.StepsRecorded(self.r, t.id, steps, times, scores, obs))
        self._ingest_checkpoints(t, res, own_first, last)
        self.events.append(ev.SegmentRecorded(
            self.r, t.id, req.step0, req.n_steps, own_first, last, res.wall_time,
            res.model_time, attempts, bool(res.reused), res.provenance))
        t.next_step = last
        if last >= s.horizon:
            self._end(t, Status.HORIZON, last)
            self.n_running -= 1
        out: list[Task]
        if last >= self._stop(req.step0):
            self.arrived += 1
            out = self._maybe_iterate()
        else:
            out = [self._task(t)]
        self._emit_summary()
        return out

    # --- resampling ------------------------------------------------------------------------
    def _maybe_iterate(self) -> list[Task]:
        if self.done or self.arrived < self.s.n:
            return []
        return self._iterate()

    def _members(self) -> list[Traj]:
        return [self.tree[int(i)] for i in self.slots]

    def _iterate(self) -> list[Task]:
        s = self.s
        j = self.iteration + 1
        tj = j * self.tau
        members = self._members()
        self.arrived = 0
        if tj >= s.horizon:  # the horizon is not a resampling step: the replica ends
            return self._finish(members)
        integrals = np.array([s.dt * math.fsum(np.concatenate(self.cur[m.id]).tolist())
                              if self.cur[m.id] else 0.0 for m in members])
        for m, i in zip(members, integrals.tolist()):
            self.ints[m.id].append(i)
            self.cur[m.id] = []
        centre = math.fsum(integrals.tolist()) / s.n
        log_g = self.tilt * (integrals - centre)
        log_r = log_mean_exp(log_g)
        u = float(nz.survivor_rng(s.seed, self.r, j).random())
        counts = systematic_counts(log_g, u)
        killed = np.flatnonzero(counts == 0)
        parents = np.repeat(np.arange(s.n), np.maximum(counts - 1, 0))
        self.iteration = j
        self.log_weight += log_r
        self.level = float(tj)
        self.centres.append(centre)
        self.events.append(ev.IterationDecided(self.r, j, centre, int(killed.size),
                                               self.log_weight))
        for slot, pslot in zip(killed.tolist(), parents.tolist()):
            old = members[slot]
            surv = members[pslot]
            child = self._copy(surv, slot, old.id, j, tj)
            if old.status == Status.RUNNING:
                self._end(old, Status.KILLED, tj)
            self._leave(old)
            self._enter(child, slot)
        self.ints = {tid: v for tid, v in self.ints.items() if tid in self.tree.trajs}
        self.cur = {int(i): self.cur.get(int(i), []) for i in self.slots}
        if self.windows is not None:
            self.windows.forget_all_but(self.tree.trajs)
        return [self._task(m) for m in self._members()]

    def _copy(self, surv: Traj, slot: int, killed: int, j: int, tj: int) -> Traj:
        cid = self.next_id
        self.next_id += 1
        child = self.tree.new(cid, surv.id, tj, tj)
        surv.refs += 1
        child.max_score = surv.max_score
        self.ints[cid] = list(self.ints[surv.id])
        self.cur[cid] = []
        self.events.append(ev.TrajectoryCreated(self.r, j, slot, cid, killed, surv.id, tj, tj))
        return child

    def _enter(self, t: Traj, slot: int) -> None:
        super()._enter(t, slot)
        t.rec_steps = t.rec_vals = None  # TAMS's branch records: not used here

    def _finish(self, members: list[Traj]) -> list[Task]:
        self.result = self._result(members)
        self.outcome = Outcome.CONVERGED
        self.events.append(ev.ReplicaEnded(self.r, int(self.outcome), self.iteration,
                                           self.log_weight, self.result.n_reached))
        return []

    def _result(self, members: list[Traj]) -> GkltResult:
        s = self.s
        rests = [s.dt * math.fsum(np.concatenate(self.cur[m.id]).tolist())
                 if self.cur[m.id] else 0.0 for m in members]
        logw, avg = final_weights([self.ints[m.id] for m in members], rests, self.tilt,
                                  self.log_weight, s.horizon * s.dt, self.centres)
        return estimate_at(logw, avg, s.meta.threshold)

    # --- what the driver reads ---------------------------------------------------------------
    def n_reached(self) -> int:
        return self.result.n_reached if self.result is not None else 0

    def running_estimate(self) -> float:
        return self.result.estimate if self.result is not None else math.nan

    def summary(self) -> ev.ReplicaSummary:
        res = self.result
        return ev.ReplicaSummary(
            self.r, outcome=int(self.outcome), iterations=self.iteration,
            log_weight=self.log_weight, n_reached=self.n_reached(),
            estimate=res.estimate if res is not None else math.nan,
            log_estimate=res.log_estimate if res is not None else math.nan,
            model_steps=self.model_steps, segments=self.segments, failed_segments=self.failed,
            in_flight=self.in_flight, level=self.level, wall_time=self.wall_time)

    # --- resume ----------------------------------------------------------------------------
    def restore(self, rec) -> list[Task]:
        """Rebuild from a store's committed rows: the tree as TAMS's, then each member's
        interval integrals and current interval from the stored observables."""
        if rec.tables["created"]["id"].size == 0:
            self._restore_totals(rec)
            return self.start()
        self._rebuild(rec)
        s = self.s
        st = rec.tables["steps"]
        order = np.lexsort((st["step"], st["traj"]))
        traj_sorted = st["traj"][order]
        own_a: dict[int, np.ndarray] = {}
        for tid in self.tree.trajs:
            a, e = np.searchsorted(traj_sorted, [tid, tid + 1])
            own_a[tid] = np.asarray(st["obs"][order[a:e], self.a_col], dtype=np.float64)
        J = self.iteration
        self.centres = [float(c) for c in rec.tables["iterations"]["level"][:J]]
        self.ints, self.cur, self.arrived = {}, {}, 0
        for m in self._members():
            parts = [own_a[p.id][: hi - lo] for p, lo, hi in self.tree.pieces(m, m.last_step)]
            path = np.concatenate(parts[::-1]) if parts else np.zeros(0)
            done_intervals = min(J, path.size // self.tau)
            ints, _ = interval_integrals(path, s.dt, self.tau, done_intervals)
            self.ints[m.id] = ints
            tail = path[done_intervals * self.tau:]
            self.cur[m.id] = [tail] if tail.size else []
            if m.last_step >= self._stop(J * self.tau):
                self.arrived += 1
        if self.done:
            self.result = self._result(self._members())
            return []
        tasks = [self._task(m) for m in self._members()
                 if m.last_step < self._stop(J * self.tau)]
        if not tasks:
            tasks = self._maybe_iterate()
        self._emit_summary()
        return tasks


# --- reading a finished GKLT replica back (tams report, the Python API) ------------------
def replica_weights(db, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The final ensemble of replica ``r`` of a GKLT database (``orchestrator.store.Database``):
    each member's log weight (``-k sum_j I_j + log prod R - log N``, as the replica's
    estimate used) and time average of A over the horizon, recomputed from the stored paths
    exactly as the state machine computed them."""
    m = db.meta
    col = m.observable_names.index(m.tilt_observable)
    it = db.iterations(r)
    n_res = int(it["iteration"].size)
    log_prod_r = float(it["log_weight"][-1]) if n_res else 0.0
    ints, rests = [], []
    for tid in db.ensemble(r).tolist():
        a_path = np.asarray(db.trajectory(int(tid), r).observables[:, col], dtype=np.float64)
        i, rest = interval_integrals(a_path, m.dt, m.resample_every, n_res)
        ints.append(i)
        rests.append(rest)
    centres = [float(c) for c in it["level"]]
    return final_weights(ints, rests, m.tilt, log_prod_r, m.horizon, centres)


def exceedance_curve(logw: np.ndarray, avg: np.ndarray, thresholds) -> np.ndarray:
    """P(time average >= a) for each threshold a, from one replica's weighted ensemble."""
    a = np.asarray(thresholds, dtype=np.float64)
    w = np.exp(logw)
    return np.array([float(w[avg >= x].sum()) for x in a.tolist()])


def return_times(db, thresholds=None, n: int = 12):
    """GKLT's return-time curve of the time average of A over the horizon T: per finished
    replica p(a) = sum of the final weights with time average >= a; across replicas the mean,
    its standard error and Student-t interval; r(a) = -T / log(1 - p(a)) (the block formula
    of :mod:`orchestrator.core.returntimes`, whose table, CSV and figure it reuses).

    Default thresholds: ``n`` points from the 2nd percentile of the final ensembles' time
    averages (typical of the tilted dynamics) to their largest value."""
    from orchestrator.core.returntimes import ReturnTimes
    from orchestrator.core.stats import t975
    m = db.meta
    reps = [v.index for v in db.replicas() if v.outcome != 0]
    if not reps:
        raise ValueError("no finished replica: return times need at least one")
    ens = [replica_weights(db, r) for r in reps]
    if thresholds is None:
        avgs = np.concatenate([a for _, a in ens])
        thresholds = np.linspace(float(np.quantile(avgs, 0.02)), float(avgs.max()), n)
    a = np.asarray(thresholds, dtype=np.float64)
    P = np.array([exceedance_curve(lw, avg, a) for lw, avg in ens])
    k = P.shape[0]
    mean = P.mean(axis=0)
    if k >= 2:
        se = P.std(axis=0, ddof=1) / math.sqrt(k)
        h = t975(k - 1) * se
    else:
        se = h = np.full_like(mean, np.nan)
    units = next((o.units for o in m.observables if o.name == m.tilt_observable), "1")
    return ReturnTimes(f"time average of {m.tilt_observable}", units, m.horizon, a, P, mean, se,
                       np.clip(mean - h, 0.0, 1.0), np.clip(mean + h, 0.0, 1.0),
                       time_units=m.time_label)
