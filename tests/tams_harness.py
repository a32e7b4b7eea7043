"""Vectorised TAMS for Euler–Maruyama models (scalar or vector state), for statistical tests.

Runs R independent replicas *in lockstep* (iteration j of every replica at once), keeping the
full path of x of every member of every ensemble in an array (R, N, n_steps + 1) -- with a
trailing state axis (R, N, n_steps + 1, d) when ``x0`` is a vector.  The
simulation is numpy (vectorised over replicas and trajectories); every *decision* comes from
``orchestrator.core.algorithm``:

* ``decide`` (level, killed slots, survivors, outcome) with one generator per replica,
* ``branch_step`` on the survivor's score path (steps 1..end),
* ``weight_update`` (default ``algorithm.next_log_weight``; a test injects a wrong one),
* ``estimate`` / ``log_estimate`` at the end,
* the end of a trajectory from :func:`end_rule`, a vectorised form of ``algorithm.scan``
  (without ``score_a``), cross-checked against ``scan`` in ``test_unbiased.py``.

Conventions (DESIGN §4, REFERENCES.md): step s is at time s*dt, the event is checked at steps
1..n_steps, a trajectory ends at the first step with score >= target or at n_steps, its max
score is over steps 1..end; a child copies the survivor's path up to the branch step b and
continues from the survivor's state at b with fresh noise.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.core import algorithm as alg
from orchestrator.core.algorithm import Outcome


@dataclass(frozen=True)
class ScalarSDE:
    """x_{s+1} = x_s + dt f(x_s) + g sqrt(dt) xi_s, x_0 = x0, steps 1..n_steps.

    ``x0`` may be a vector (shape (d,)): then ``drift`` maps (..., d) -> (..., d), ``g`` is a
    scalar or (d,) (diagonal noise, one independent xi per component) and ``score`` maps
    (..., d) -> (...).
    """

    drift: Callable[[np.ndarray], np.ndarray]
    g: float | tuple[float, ...]
    x0: float | tuple[float, ...]
    dt: float
    n_steps: int
    score: Callable[[np.ndarray], np.ndarray]
    target: float

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one state: () for scalar models, (d,) for vector ones."""
        return np.shape(self.x0)


def double_well(eps: float) -> ScalarSDE:
    return ScalarSDE(drift=lambda x: x * (1.0 - x * x), g=math.sqrt(2.0 * eps), x0=-1.0, dt=0.01,
                     n_steps=1000, score=lambda x: 1.0 - np.abs(x - 1.0) / 2.0, target=0.95)


def ornstein_uhlenbeck() -> ScalarSDE:
    return ScalarSDE(drift=lambda x: -x, g=0.5, x0=0.0, dt=0.01, n_steps=500,
                     score=lambda x: x / 1.5, target=1.0)


def double_well_2d(eps: float = 0.1) -> ScalarSDE:
    """pyTAMS's quick-start 2-D double well (REFERENCES.md), T = 10 (1000 steps)."""
    a, b = np.array([-1.0, 0.0]), np.array([1.0, 0.0])

    def drift(z):
        x, y = z[..., 0], z[..., 1]
        return np.stack([x * (1.0 - x * x), -2.0 * y], axis=-1)

    def score(z):
        da = ((z - a) ** 2).sum(axis=-1)
        db = ((z - b) ** 2).sum(axis=-1)
        return 0.5 - 0.5 * np.exp(-8.0 * da) + 0.5 * np.exp(-8.0 * db)

    return ScalarSDE(drift=drift, g=math.sqrt(eps), x0=(-1.0, 0.0), dt=0.01, n_steps=1000,
                     score=score, target=0.95)


def end_rule(scores: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``scan`` over whole paths: ``scores[..., i]`` is the score at step i+1.

    Returns (end step, reached): the first step with score >= target, else the last step.
    """
    hit = scores >= target
    reached = hit.any(axis=-1)
    end = np.where(reached, hit.argmax(axis=-1) + 1, scores.shape[-1])
    return end, reached


def _max_upto(scores: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Max of ``scores[..., :end]`` (steps 1..end)."""
    steps = np.arange(1, scores.shape[-1] + 1)
    return np.where(steps <= end[..., None], scores, -np.inf).max(axis=-1)


@dataclass
class Result:
    estimates: np.ndarray  # (R,)
    log_estimates: np.ndarray  # (R,)
    iterations: np.ndarray  # (R,)
    outcomes: np.ndarray  # (R,) Outcome values
    n_reached: np.ndarray  # (R,)

    @property
    def mean(self) -> float:
        return float(self.estimates.mean())

    @property
    def se(self) -> float:
        return float(self.estimates.std(ddof=1) / math.sqrt(self.estimates.size))


def _simulate(model: ScalarSDE, x: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> None:
    """Advance paths x (C, n_steps+1[, d]) in place: steps b+1..n_steps are new (steps <= b
    kept)."""
    dt, sq = model.dt, np.asarray(model.g) * math.sqrt(model.dt)
    if b.size and b.min() == b.max():  # e.g. the initial ensemble: no reordering, no copy
        order, xs, bs = None, x, b
    else:  # sorted by branch step: the active paths at step s are a prefix
        order = np.argsort(b, kind="stable")
        xs, bs = x[order], b[order]
    for s in range(int(bs[0]) + 1 if bs.size else model.n_steps + 1, model.n_steps + 1):
        m = int(np.searchsorted(bs, s, side="left"))  # paths with b < s
        prev = xs[:m, s - 1]
        xs[:m, s] = prev + dt * model.drift(prev) + sq * rng.standard_normal((m,) + model.shape)
    if order is not None:
        x[order] = xs


def _finish(model: ScalarSDE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End step and max score of paths x (C, n_steps+1[, d]); steps after the end become NaN."""
    sc = model.score(x[:, 1:])
    end, _ = end_rule(sc, model.target)
    mx = _max_upto(sc, end)
    x[np.arange(model.n_steps + 1) > end[:, None]] = np.nan  # nothing may use them
    return end, mx


def _run_chunk(model: ScalarSDE, R: int, N: int, k: int, seed: int, first_replica: int,
               weight_update, max_iterations: int | None) -> Result:
    S = model.n_steps
    noise = np.random.default_rng([seed, first_replica, 0x5DE])
    survivor_rngs = [np.random.default_rng([seed, first_replica + r, 0x5A1]) for r in range(R)]
    x = np.empty((R * N, S + 1) + model.shape)
    x[:, 0] = model.x0
    _simulate(model, x, np.zeros(R * N, dtype=np.int64), noise)
    end, mx = _finish(model, x)
    x = x.reshape((R, N, S + 1) + model.shape)
    end = end.reshape(R, N)
    mx = mx.reshape(R, N)
    log_w = np.zeros(R)
    iterations = np.zeros(R, dtype=np.int64)
    outcome = np.full(R, int(Outcome.RUNNING))
    j = 0
    while (outcome == Outcome.RUNNING).any():
        j += 1
        rr, ss, pp, bb = [], [], [], []
        for r in np.flatnonzero(outcome == Outcome.RUNNING):
            d = alg.decide(j, mx[r], k, model.target, survivor_rngs[r], max_iterations)
            if d.outcome == Outcome.EXTINCT:
                outcome[r], log_w[r] = int(d.outcome), -math.inf
                continue
            if d.outcome != Outcome.RUNNING:
                outcome[r] = int(d.outcome)
                continue
            iterations[r] = j
            log_w[r] = weight_update(log_w[r], d.n_killed, N)
            for slot, par in zip(d.killed, d.parents):
                path = model.score(x[r, par, 1:end[r, par] + 1])
                rr.append(r)
                ss.append(slot)
                pp.append(par)
                bb.append(alg.branch_step(path, d.level))
        if not rr:
            continue
        rr, ss, pp, bb = (np.asarray(a, dtype=np.int64) for a in (rr, ss, pp, bb))
        # parents are survivors, never killed in the same iteration: read before write is safe
        child = x[rr, pp].copy()
        assert not np.isnan(child[np.arange(S + 1) <= bb[:, None]]).any()
        _simulate(model, child, bb, noise)
        ce, cm = _finish(model, child)
        x[rr, ss] = child
        end[rr, ss] = ce
        mx[rr, ss] = cm
    n_reached = (mx >= model.target).sum(axis=1)
    est = np.array([alg.estimate(lw, int(n), N) for lw, n in zip(log_w, n_reached)])
    lest = np.array([alg.log_estimate(lw, int(n), N) for lw, n in zip(log_w, n_reached)])
    return Result(est, lest, iterations, outcome, n_reached)


def run_tams(model: ScalarSDE, R: int, N: int, k: int, seed: int,
             weight_update: Callable[[float, int, int], float] = alg.next_log_weight,
             max_iterations: int | None = None, max_bytes: int = 128 << 20) -> Result:
    """R independent TAMS replicas of ``model`` (N trajectories, kill k), in lockstep chunks
    whose path array stays under ``max_bytes``."""
    per_replica = N * (model.n_steps + 1) * 8 * int(np.prod(model.shape))
    chunk = max(1, min(R, max_bytes // per_replica))
    parts = [_run_chunk(model, min(chunk, R - a), N, k, seed, a, weight_update, max_iterations)
             for a in range(0, R, chunk)]
    return Result(*(np.concatenate([getattr(p, f) for p in parts])
                    for f in ("estimates", "log_estimates", "iterations", "outcomes", "n_reached")))
