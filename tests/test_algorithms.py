"""Direct Monte Carlo and GKLT are unbiased: statistical tests on the real driver (issue 14).

As in test_statistics.py, every replica runs what `tams run` runs -- config validation, the
driver loop, the algorithm's state machine (orchestrator.core.montecarlo / .gklt, found
through the `tams.algorithms` entry points), keyed noise, checkpoints and restarts, the python
adapter's `segment` fast path and the worker code -- with the in-process executor and the
in-memory store.  Seeds are fixed, so a failure is reproducible.  Each test asserts that its
replica count gives the promised precision, and each has a mutation that must fail.

GKLT: the discrete OU chain of REFERENCES.md (x' = x - dt x + 0.5 sqrt(dt) xi, x0 = 0,
dt = 0.01, T = 5, 500 steps).  The time average of x over steps 1..n is a linear function
of the Gaussian noise, hence exactly Gaussian with mean 0 and the variance computed in
closed form below; the thresholds are its quantiles for p = 1e-2 .. 1e-6.

Run with ``pytest -s`` to see the tables.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from statistics import NormalDist

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DT, SIGMA, T = 0.01, 0.5, 5.0
N_STEPS = round(T / DT)
P_GKLT = np.array([1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
BATCH = 25


def ou_time_average_sd(n: int = N_STEPS, dt: float = DT, sigma: float = SIGMA) -> float:
    """Standard deviation of (1/n) sum_{s=1..n} x_s for the chain from x_0 = 0.

    x_s = c sum_{r<s} a^(s-1-r) xi_r with a = 1 - dt, c = sigma sqrt(dt), so
    sum_s x_s = c sum_{r=0..n-1} xi_r (1 - a^(n-r)) / (1 - a): a sum of independent normals."""
    a, c = 1.0 - dt, sigma * math.sqrt(dt)
    m = np.arange(1, n + 1)
    var = c * c * float(np.sum(((1.0 - a ** m) / (1.0 - a)) ** 2))
    return math.sqrt(var) / n


THRESHOLDS = np.array([NormalDist().inv_cdf(1.0 - p) for p in P_GKLT]) * ou_time_average_sd()


def ou_campaign(algorithm: str, seed: int, replicas: int, n: int, horizon: float,
                level: float = 1.5, **extra) -> dict:
    c = {
        "name": f"ou-{algorithm}", "seed": seed, "replicas": replicas, "algorithm": algorithm,
        "model": {"adapter": "python", "segment": "adapters.examples.ou:segment",
                  "initial_state": [0.0], "dt": DT, "noise_dim": 1, "noise": "file",
                  "checkpoint_every": 50, "observables": ["x"]},
        "score": {"function": "adapters.examples.ou:score", "target": 1.0,
                  "parameters": {"level": level}},
        "tams": {"trajectories": n, "horizon": horizon, "segment_steps": 1000},
        "runner": {"kind": "threads", "workers": 1},
        "database": {"keep_states": "all"},
    }
    c.update(extra)
    return c


GKLT = {"k": 6.0, "observable": "x", "resample_every": 50, "threshold": float(THRESHOLDS[2])}
N_GKLT = 96


def _mutate(mutation: str | None) -> None:
    """Mutations, applied inside the worker process only."""
    if mutation == "gklt-no-prod-R":  # the product of the R_i left out of the final weights
        from orchestrator.core import gklt
        right = gklt.final_weights

        def wrong(ints, rests, k, log_prod_r, horizon_time, centres):
            return right(ints, rests, k, 0.0, horizon_time, centres)
        gklt.final_weights = wrong
    elif mutation == "mc-shared-noise":  # every trajectory of a replica with one noise key
        from orchestrator.core import noise as nz
        right_key = nz.trajectory_key

        def key(seed, replica, trajectory):
            return right_key(seed, replica, 0)
        nz.trajectory_key = key


class _EqualWeights:
    """The read API with every trajectory of a replica weighing the same (the mutation of the
    diagnostics: a level-crossing curve or composite that forgets the TAMS weights)."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def weights(self, r):
        w = self._db.weights(r)
        n = w["id"].size
        return dict(w, log_weight=np.full(n, -math.log(n)))


def run_batch(kind: str, seed: int, replicas: int, mutation: str | None = None) -> np.ndarray:
    """One campaign through the real driver: per replica, its estimate (montecarlo, tams:
    shape (R,); gklt: the curve at THRESHOLDS from the stored paths, and the replica's own
    estimate at gklt.threshold, shape (R, 6))."""
    from orchestrator import api
    from orchestrator.runtime.inline import InlineExecutor
    _mutate(mutation)
    if kind == "gklt":
        c = ou_campaign("gklt", seed, replicas, N_GKLT, T, gklt=GKLT)
    elif kind == "montecarlo":
        c = ou_campaign("montecarlo", seed, replicas, MC_M, MC_T, level=MC_LEVEL)
    else:
        c = ou_campaign("tams", seed, replicas, 32, MC_T, level=MC_LEVEL)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="tams-algo-", dir=base)
    try:
        res = api.run(c, in_memory=True, progress=False, executor=InlineExecutor(), run_dir=tmp)
        if kind != "gklt":
            est = np.asarray(res.estimates, dtype=np.float64)
            if kind == "montecarlo":  # the hits: the pooled binomial needs them
                est = np.round(est * MC_M)
            from orchestrator.core.diagnostics import replica_sums
            db = res.database()
            sums = [replica_sums(db, r, LEVELS, MAX_LAG) for r in range(replicas)]
            if kind == "tams":  # the diagnostics' mutation, on the same run: TAMS weights ignored
                flat = _EqualWeights(db)
                sums += [replica_sums(flat, r, LEVELS, MAX_LAG) for r in range(replicas)]
            return est, sums
        from orchestrator.core.gklt import exceedance_curve, replica_weights
        db = res.database()
        curves = np.array([exceedance_curve(*replica_weights(db, r), THRESHOLDS)
                           for r in range(replicas)])
        return np.column_stack([curves, res.estimates])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def batches(kind: str, seed: int, replicas: int, mutation: str | None = None) -> np.ndarray:
    jobs, left, i = [], replicas, 0
    while left > 0:
        jobs.append((kind, seed * 1000 + i, min(BATCH, left), mutation))
        left -= BATCH
        i += 1
    ctx = multiprocessing.get_context("spawn")  # the test process may hold Parsl's threads
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1), mp_context=ctx) as pool:
        parts = list(pool.map(run_batch, *zip(*jobs)))
    if kind == "gklt":
        return np.concatenate(parts)
    return np.concatenate([p[0] for p in parts]), [s for p in parts for s in p[1]]


def gklt_table(est: np.ndarray, label: str, seconds: float) -> np.ndarray:
    curves = est[:, :5]
    mean = curves.mean(axis=0)
    se = curves.std(axis=0, ddof=1) / math.sqrt(curves.shape[0])
    z = (mean - P_GKLT) / np.where(se > 0, se, math.inf)
    print(f"\n{label}: {curves.shape[0]} replicas of N = {N_GKLT}, k = {GKLT['k']}, "
          f"resample_every = {GKLT['resample_every']} ({seconds:.0f} s)")
    print("threshold        p       mean        SE    SE/p  mean/p  bias/SE")
    for a, p, m, s, b in zip(THRESHOLDS, P_GKLT, mean, se, z):
        print(f"{a:9.4f}  {p:.1e}  {m:.4e}  {s:.2e}  {s / p:.3f}  {m / p:6.3f}  {b:+7.2f}")
    return z


def test_gklt_time_average_tail_is_unbiased():
    t0 = time.monotonic()
    est = batches("gklt", 41, 80)
    z = gklt_table(est, "GKLT, OU time average", time.monotonic() - t0)
    curves = est[:, :5]
    se = curves.std(axis=0, ddof=1) / math.sqrt(curves.shape[0])
    # the replica's own estimate (state machine) is the curve recomputed from the database
    np.testing.assert_allclose(est[:, 5], curves[:, 2], rtol=1e-12, atol=0)
    assert (se / P_GKLT <= 0.3).all(), "too few replicas for the promised precision"
    assert (np.abs(z) < 3.0).all(), f"bias/SE {np.round(z, 2)} at p = {P_GKLT}"


def test_gklt_without_the_product_of_R_fails():
    t0 = time.monotonic()
    est = batches("gklt", 42, 10, mutation="gklt-no-prod-R")
    z = gklt_table(est, "GKLT MUTATION (prod R left out)", time.monotonic() - t0)
    assert (z < -10).all(), "leaving prod R_i out of the weights must be caught"


# --- direct Monte Carlo against TAMS on one problem (OU, T = 2, event x >= 1) ------------
MC_T, MC_LEVEL, MC_M = 2.0, 1.0, 1000


LEVELS = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])  # score = x
MAX_LAG = 20


@functools.cache
def _tams():
    """100 TAMS replicas: estimates, diagnostics sums, and the same sums with equal weights."""
    t0 = time.monotonic()
    jobs = [("tams", 52 * 1000 + i, BATCH, None) for i in range(4)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(4, os.cpu_count() or 1), mp_context=ctx) as pool:
        parts = list(pool.map(run_batch, *zip(*jobs)))
    est = np.concatenate([p[0] for p in parts])
    sums = [s for p in parts for s in p[1][:BATCH]]
    flat = [s for p in parts for s in p[1][BATCH:]]
    return est, sums, time.monotonic() - t0, flat


@functools.cache
def _mc(mutation: str | None, replicas: int):
    t0 = time.monotonic()
    hits, sums = batches("montecarlo", 51, replicas, mutation)
    return hits, sums, time.monotonic() - t0


def _mc_vs_tams(mutation: str | None, mc_replicas: int, label: str) -> float:
    hits, _, t_mc = _mc(mutation, mc_replicas)
    tams, _, t_tams, _ = _tams()
    from orchestrator.core.stats import binomial_summary
    mc = binomial_summary(int(hits.sum()), MC_M * hits.size, MC_M)
    se_t = float(tams.std(ddof=1) / math.sqrt(tams.size))
    z = (mc.mean - tams.mean()) / math.hypot(mc.stderr, se_t)
    print(f"\n{label}: Monte Carlo {int(hits.sum())}/{MC_M * hits.size} = {mc.mean:.4e} "
          f"± {mc.stderr:.2e}, Wilson 95 % [{mc.ci_low:.4e}, {mc.ci_high:.4e}] ({t_mc:.0f} s); "
          f"TAMS {tams.size} replicas {tams.mean():.4e} ± {se_t:.2e} ({t_tams:.0f} s); "
          f"difference {z:+.2f} combined SE")
    return z


def test_montecarlo_agrees_with_tams():
    z = _mc_vs_tams(None, 20, "MC vs TAMS")
    assert abs(z) < 3.0


def test_montecarlo_mutation_fails():
    # the M trajectories of a replica are one: every replica estimates 0 or 1
    z = _mc_vs_tams("mc-shared-noise", 10, "MC MUTATION (one noise key for all trajectories)")
    assert abs(z) > 5.0


# --- diagnostics (item 3) against brute force: the same two runs ------------------------
def test_diagnostics_agree_with_brute_force_monte_carlo():
    """Level crossing, mean first-passage time and composite from the TAMS weights against
    the same quantities of the direct Monte Carlo run (equal weights: brute force)."""
    from orchestrator.core.diagnostics import pool
    _, mc_sums, _ = _mc(None, 20)
    _, tams_sums, _, flat_sums = _tams()
    mc = pool(mc_sums, LEVELS, MAX_LAG, DT, ["x"])
    tm = pool(tams_sums, LEVELS, MAX_LAG, DT, ["x"])
    z_cross = (tm.crossing_mean - mc.crossing_mean) / np.hypot(tm.crossing_se, mc.crossing_se)
    z_fpt = (tm.fpt_mean - mc.fpt_mean) / math.hypot(tm.fpt_se, mc.fpt_se)
    pick = [0, MAX_LAG // 2, MAX_LAG - 5, MAX_LAG]  # lags -20, -10, -5, 0 steps
    z_comp = ((tm.composite_mean[pick, 0] - mc.composite_mean[pick, 0])
              / np.hypot(tm.composite_se[pick, 0], mc.composite_se[pick, 0]))
    print("\nlevel z     TAMS P(max>=z)       MC (brute force)     z")
    for lv, a, sa, b, sb, z in zip(LEVELS, tm.crossing_mean, tm.crossing_se, mc.crossing_mean,
                                   mc.crossing_se, z_cross):
        print(f"{lv:6.2f}   {a:.4e} ± {sa:.1e}   {b:.4e} ± {sb:.1e}  {z:+.2f}")
    print(f"mean first passage: TAMS {tm.fpt_mean:.4f} ± {tm.fpt_se:.4f}, MC {mc.fpt_mean:.4f} "
          f"± {mc.fpt_se:.4f} ({z_fpt:+.2f})")
    for i, z in zip(pick, z_comp):
        print(f"composite x at lag {tm.lag_times[i]:+.2f}: TAMS {tm.composite_mean[i, 0]:.4f} "
              f"± {tm.composite_se[i, 0]:.4f} (spread {tm.composite_std[i, 0]:.3f}), MC "
              f"{mc.composite_mean[i, 0]:.4f} ± {mc.composite_se[i, 0]:.4f} (spread "
              f"{mc.composite_std[i, 0]:.3f})  {z:+.2f}")
    assert (tm.crossing_se / tm.crossing_mean < 0.1).all()
    assert np.abs(z_cross).max() < 3.5 and abs(z_fpt) < 3.5 and np.abs(z_comp).max() < 3.5
    # and the diagnostics are not trivially equal: the composite spread shrinks to the target
    assert tm.composite_std[0, 0] > 3 * tm.composite_std[-1, 0]
    # the mutation: the same TAMS run with its weights forgotten must disagree
    bad = pool(flat_sums, LEVELS, MAX_LAG, DT, ["x"])
    z_bad = (bad.crossing_mean - mc.crossing_mean) / np.hypot(bad.crossing_se, mc.crossing_se)
    print(f"MUTATION (TAMS weights ignored): level crossing z {np.round(z_bad, 1)}")
    assert z_bad.max() > 10
