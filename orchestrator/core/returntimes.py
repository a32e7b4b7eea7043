"""Return times from TAMS runs (Lestang, Ragone, Bréhier, Herbert & Bouchet 2018, "Computing
return times or return periods with rare event algorithms", J. Stat. Mech. 043213).

Every trajectory a TAMS replica ever created carries a weight: one killed at iteration j
weighs W_{j-1}/N, one of the final ensemble W_J/N (``Database.weights``; they sum to 1).  The
probability that the maximum of a quantity over a trajectory (a window of duration T, the
horizon) reaches the amplitude a is estimated by

    p(a) = sum over trajectories n of  w_n 1{max_n >= a},

which for a between two levels is the AMS estimate at that level, and the return time by the
block-maximum formula of the paper, r(a) = -T / log(1 - p(a)).  Across replicas: the mean of
p(a), its standard error and Student-t 95 % interval; r(a) and its interval are the images of
p(a) and its interval (r is increasing in 1/p).

Trajectories stop when the score reaches the target, so the maximum of a trajectory that
reached B is censored there: amplitudes are only valid up to the smallest maximum over the
trajectories that reached B (for the score: the target).  ``amplitude_grid`` respects that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.core.stats import t975


@dataclass(frozen=True)
class ReturnTimes:
    quantity: str
    units: str
    window: float  # T, in time_units
    amplitudes: np.ndarray  # (A,)
    p_replicas: np.ndarray  # (R, A)
    p: np.ndarray
    p_stderr: np.ndarray
    p_low: np.ndarray
    p_high: np.ndarray
    time_units: str = "model time units"

    @property
    def r(self) -> np.ndarray:
        return return_time(self.p, self.window)

    @property
    def r_low(self) -> np.ndarray:  # from the upper end of p's interval
        return return_time(self.p_high, self.window)

    @property
    def r_high(self) -> np.ndarray:
        return return_time(self.p_low, self.window)

    def table(self) -> str:
        lines = [f"return times of max({self.quantity}) over T = {self.window:g} ({self.time_units}), "
                 f"{self.p_replicas.shape[0]} replicas",
                 f"{'a':>10} {'p(a)':>11} {'± s.e.':>10} {'r(a)':>11} {'95 % CI of r(a)':>25}"]
        for i, a in enumerate(self.amplitudes):
            lines.append(f"{a:>10.4g} {self.p[i]:>11.4g} {self.p_stderr[i]:>10.2g} "
                         f"{self.r[i]:>11.4g} [{self.r_low[i]:>10.4g}, {self.r_high[i]:>10.4g}]")
        return "\n".join(lines)

    def csv(self) -> str:
        rows = ["amplitude,p,p_stderr,p_low,p_high,return_time,return_time_low,return_time_high"]
        for i, a in enumerate(self.amplitudes):
            rows.append(",".join(f"{v:.10g}" for v in (a, self.p[i], self.p_stderr[i], self.p_low[i],
                                                         self.p_high[i], self.r[i], self.r_low[i],
                                                         self.r_high[i])))
        return "\n".join(rows) + "\n"


def return_time(p, window: float) -> np.ndarray:
    """r = -T / log(1 - p): inf for p <= 0, 0 for p >= 1."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = -window / np.log1p(-np.clip(p, 0.0, 1.0))
    return np.where(p <= 0, np.inf, np.where(p >= 1, 0.0, r))


def exceedance(maxima: np.ndarray, log_weights: np.ndarray, amplitudes) -> np.ndarray:
    """p(a) = sum_n w_n 1{max_n >= a} for each amplitude a."""
    a = np.asarray(amplitudes, dtype=np.float64)
    ok = np.isfinite(maxima)
    m, w = maxima[ok], np.exp(log_weights[ok])
    order = np.argsort(m)
    m, w = m[order], w[order]
    tail = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])  # tail[i] = sum of w[i:]
    return tail[np.searchsorted(m, a, side="left")]


def window_of(db) -> float:
    return float(db.meta.horizon)


def _finished(db) -> list[int]:
    return [v.index for v in db.replicas() if v.outcome != 0]


def amplitude_grid(db, quantity: str = "score", n: int = 12) -> np.ndarray:
    """From the pooled median of the initial ensembles' maxima (p ~ 1/2) to the largest
    amplitude not censored by the stop at the target, ``n`` points."""
    lo, hi = [], []
    for r in _finished(db):
        m = db.path_maxima(r, quantity)
        created = db.table(r, "created")
        lo.append(m[created["iteration"] == 0])
        ended = db.table(r, "trajectories")
        reached = set(ended["id"][ended["status"] == 1].tolist())
        sel = np.array([int(t) in reached for t in created["id"]])
        if sel.any():
            hi.append(np.nanmin(m[sel]))
    if not lo:
        raise ValueError("no finished replica")
    a0 = float(np.nanmedian(np.concatenate(lo)))
    a1 = float(min(hi)) if hi else float(np.nanmax(np.concatenate(lo)))
    if quantity == "score":
        a1 = min(a1, float(db.meta.target))
    return np.linspace(a0, a1, n)


def return_times(db, quantity: str = "score", amplitudes=None) -> ReturnTimes:
    """The return-time curve of ``max(quantity)`` over the horizon, from finished replicas."""
    reps = _finished(db)
    if not reps:
        raise ValueError("no finished replica: return times need at least one")
    a = amplitude_grid(db, quantity) if amplitudes is None else np.asarray(amplitudes, float)
    P = np.array([exceedance(db.path_maxima(r, quantity), db.weights(r)["log_weight"], a)
                  for r in reps])
    n = P.shape[0]
    mean = P.mean(axis=0)
    if n >= 2:
        se = P.std(axis=0, ddof=1) / math.sqrt(n)
        h = t975(n - 1) * se
    else:
        se = h = np.full_like(mean, np.nan)
    units = "1"
    for spec in db.observable_specs:
        if spec["name"] == quantity:
            units = spec.get("units") or "1"
    return ReturnTimes(quantity, units, window_of(db), a, P, mean, se,
                       np.clip(mean - h, 0.0, 1.0), np.clip(mean + h, 0.0, 1.0),
                       time_units=db.meta.time_label)
