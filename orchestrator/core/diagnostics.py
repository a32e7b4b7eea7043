"""The diagnostics scientists used to compute by hand from a TAMS (or Monte Carlo) run.

From the weighted trajectories of every finished replica (``Database.weights``: a trajectory
killed at iteration j weighs W_{j-1}/N, one of the final ensemble W_J/N; a Monte Carlo
replica's trajectories weigh 1/M each):

* the **level-crossing curve** ``P(max score >= z)`` for levels z (Lestang et al. 2018: for
  z between two levels of the run it is the AMS estimate at that level), per replica, with
  the mean and its standard error across replicas;
* the **mean first-passage time** of the trajectories that reached B, ``E[tau_B | tau_B <=
  T]``: the ratio ``sum w tau / sum w`` pooled over replicas, its standard error by the
  delta method across replicas;
* the **composite** of the trajectories that reached B: the weighted mean and spread of each
  observable at each lag before (and at) the first-passage step, the paths aligned there.

GKLT's return-time curve of the time-averaged observable is
:func:`orchestrator.core.gklt.return_times`.  Every function takes the read API
(``orchestrator.store.Database``) and does no I/O of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.core.returntimes import exceedance
from orchestrator.core.stats import t975


@dataclass(frozen=True)
class ReplicaSums:
    """One replica's weighted sums (its weights sum to 1): what the pooled diagnostics are
    made of, and what a test compares replica by replica."""

    crossing: np.ndarray  # (L,) P(max score >= z) at each level
    p_reached: float  # sum of the weights of the trajectories that reached B (the estimate)
    fpt: float  # sum of w * first-passage time over them
    comp_w: np.ndarray  # (lags,) sum of w over those with a step at that lag
    comp_x: np.ndarray  # (lags, n_obs) sum of w * observable
    comp_x2: np.ndarray  # (lags, n_obs) sum of w * observable^2


@dataclass(frozen=True)
class Diagnostics:
    levels: np.ndarray
    crossing: np.ndarray  # (R, L) per replica
    crossing_mean: np.ndarray
    crossing_se: np.ndarray
    fpt_mean: float  # mean first-passage time of the trajectories that reached B
    fpt_se: float
    lags: np.ndarray  # steps relative to the first passage (<= 0)
    lag_times: np.ndarray  # the same in model time
    composite_mean: np.ndarray  # (lags, n_obs)
    composite_std: np.ndarray  # (lags, n_obs) weighted spread across trajectories
    composite_se: np.ndarray  # (lags, n_obs) standard error of the mean, across replicas
    observables: list[str]
    n_replicas: int

    def table(self, time_label: str = "model time units") -> str:
        out = [f"level crossing P(max score >= z), {self.n_replicas} replicas:",
               f"{'z':>10} {'P':>11} {'± s.e.':>10}"]
        for z, p, s in zip(self.levels, self.crossing_mean, self.crossing_se):
            out.append(f"{z:>10.4g} {p:>11.4g} {s:>10.2g}")
        out.append(f"mean first-passage time of the trajectories that reached B: "
                   f"{self.fpt_mean:.4g} ± {self.fpt_se:.2g} {time_label}")
        if self.lags.size:
            out.append("composite of the trajectories that reached B (weighted mean ± spread), "
                       "aligned at the first passage:")
            out.append(f"{'lag':>10} " + " ".join(f"{n:>22}" for n in self.observables))
            for i in np.unique(np.linspace(0, self.lags.size - 1, 6).round().astype(int)):
                cells = " ".join(f"{self.composite_mean[i, k]:>11.4g} ± {self.composite_std[i, k]:<8.2g}"
                                 for k in range(len(self.observables)))
                out.append(f"{self.lag_times[i]:>10.4g} {cells}")
        return "\n".join(out)


def first_passage_steps(scores: np.ndarray, steps: np.ndarray, target: float) -> int | None:
    hit = np.flatnonzero(scores >= target)
    return int(steps[hit[0]]) if hit.size else None


def replica_sums(db, r: int, levels: np.ndarray, max_lag: int) -> ReplicaSums:
    """The weighted sums of replica ``r`` for ``levels`` and lags ``-max_lag .. 0`` steps."""
    m = db.meta
    w = db.weights(r)
    logw = w["log_weight"]
    crossing = exceedance(db.path_maxima(r), logw, levels)
    n_obs = len(m.observables)
    lags = max_lag + 1
    cw, cx, cx2 = np.zeros(lags), np.zeros((lags, n_obs)), np.zeros((lags, n_obs))
    p = fpt = 0.0
    ended = db.table(r, "trajectories")
    reached = set(ended["id"][ended["status"] == 1].tolist())
    for tid, lw in zip(w["id"].tolist(), logw.tolist()):
        if tid not in reached:
            continue
        tr = db.trajectory(int(tid), r)
        s = first_passage_steps(tr.scores, tr.steps, m.target)
        if s is None:
            continue
        wt = math.exp(lw)
        p += wt
        fpt += wt * s * m.dt
        i = int(np.searchsorted(tr.steps, s))  # row of the first passage
        lo = max(0, i - max_lag)
        x = tr.observables[lo:i + 1]
        sl = slice(lags - x.shape[0], lags)
        cw[sl] += wt
        cx[sl] += wt * x
        cx2[sl] += wt * x * x
    return ReplicaSums(crossing, p, fpt, cw, cx, cx2)


def default_levels(db, n: int = 12) -> np.ndarray:
    """``n`` levels from the pooled iteration levels (quantiles), up to the target."""
    lv = [np.asarray(db.iterations(v.index)["level"], dtype=np.float64)
          for v in db.replicas() if v.outcome != 0]
    pooled = np.concatenate(lv) if lv else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    target = float(db.meta.target)
    if pooled.size < 2:
        maxima = np.concatenate([db.path_maxima(v.index) for v in db.replicas() if v.outcome != 0])
        maxima = maxima[np.isfinite(maxima)]
        lo = float(np.median(maxima)) if maxima.size else 0.0
        return np.linspace(min(lo, target), target, n)
    q = np.quantile(pooled, np.linspace(0.0, 1.0, n - 1))
    return np.unique(np.append(np.minimum(q, target), target))


def diagnostics(db, levels=None, max_lag: int | None = None) -> Diagnostics:
    """The pooled diagnostics of every finished replica (a TAMS or a Monte Carlo database)."""
    m = db.meta
    reps = [v.index for v in db.replicas() if v.outcome != 0]
    if not reps:
        raise ValueError("no finished replica: the diagnostics need at least one")
    z = default_levels(db) if levels is None else np.asarray(levels, dtype=np.float64)
    if max_lag is None:
        max_lag = max(1, m.horizon_steps // 10)
    sums = [replica_sums(db, r, z, max_lag) for r in reps]
    return pool(sums, z, max_lag, m.dt, m.observable_names)


def _ratio_se(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum(num)/sum(den) over replicas (axis 0) and its delta-method standard error."""
    n = num.shape[0]
    tot = den.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = num.sum(axis=0) / tot
        if n < 2:
            return ratio, np.full_like(ratio, np.nan)
        res = num - ratio * den
        se = np.sqrt((res ** 2).sum(axis=0) * n / (n - 1)) / tot
    return ratio, se


def pool(sums: list[ReplicaSums], levels: np.ndarray, max_lag: int, dt: float,
         names: list[str]) -> Diagnostics:
    n = len(sums)
    cr = np.array([s.crossing for s in sums])
    mean = cr.mean(axis=0)
    se = cr.std(axis=0, ddof=1) / math.sqrt(n) if n >= 2 else np.full_like(mean, np.nan)
    fpt, fpt_se = _ratio_se(np.array([s.fpt for s in sums]), np.array([s.p_reached for s in sums]))
    cw = np.array([s.comp_w for s in sums])[:, :, None]
    cx = np.array([s.comp_x for s in sums])
    cx2 = np.array([s.comp_x2 for s in sums])
    cmean, cse = _ratio_se(cx, np.broadcast_to(cw, cx.shape))
    with np.errstate(invalid="ignore"):
        cstd = np.sqrt(np.maximum(cx2.sum(axis=0) / cw.sum(axis=0) - cmean ** 2, 0.0))
    lags = np.arange(-max_lag, 1)
    return Diagnostics(levels, cr, mean, se, float(fpt), float(fpt_se), lags, lags * dt,
                       cmean, cstd, cse, list(names), n)


def interval95(mean: np.ndarray, se: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    h = t975(n - 1) * se if n >= 2 else np.full_like(mean, np.nan)
    return mean - h, mean + h
