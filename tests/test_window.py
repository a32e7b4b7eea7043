"""Windowed scores (`score.window`): the score of step s sees the mean of the observables of
the path's steps max(1, s-w+1)..s, computed by the orchestrator (orchestrator/core/window.py).

- the arithmetic against its definition, on random prefixes and segments;
- every stored score of every trajectory of a real run (children included) equals the score
  of the running means of its *full path's* observables, bit for bit: the parent's prefix is
  in the window and branching is exact;
- statistically: the mean of many TAMS replicas on the real driver equals a brute-force Monte
  Carlo estimate of the same windowed event (vectorised numpy, its own error included) within
  3 standard errors -- and the same test fails when the window is off by one step.

The chain is the Ornstein-Uhlenbeck example with dt = 0.25 (x' = 0.75 x + 0.25 xi, a memory
of a few steps), so the step-to-step values are noisy and the window length matters: with
w = 5, p = 7.4e-3, while a mean over 4 or 6 steps gives 1.19e-2 or 4.7e-3.  (TAMS is not at its
best on such a chain -- one replica's relative standard deviation is about 0.9 -- hence the
replica counts.)
"""
from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from orchestrator.core.window import running_means

W = 5
LEVEL = 0.9
DT = 0.25
SIGMA = 0.5
HORIZON_STEPS = 16
N = 32


def campaign(seed: int, replicas: int, window: int | None = W, n: int = N) -> dict:
    score: dict = {"function": "adapters.examples.ou:score", "target": 1.0,
                   "parameters": {"level": LEVEL}}
    if window is not None:
        score["window"] = window
    return {
        "name": "ou-window", "seed": seed, "replicas": replicas,
        "model": {"adapter": "python", "segment": "adapters.examples.ou:segment",
                  "initial_state": [0.0], "dt": DT, "noise_dim": 1, "noise": "file",
                  "checkpoint_every": 3, "observables": ["x"],
                  "parameters": {"sigma": SIGMA}},
        "score": score,
        "tams": {"trajectories": n, "kill_per_iteration": 1,
                 "horizon": HORIZON_STEPS * DT, "segment_steps": 8},
        "runner": {"kind": "threads", "workers": 1},
        "database": {"keep_states": "all"},
    }


def definition(path: np.ndarray, w: int) -> np.ndarray:
    """Running means of a whole path (rows = steps 1..n), straight from the definition."""
    return np.array([path[max(0, i - w + 1):i + 1].mean(axis=0) for i in range(path.shape[0])])


def test_running_means_match_their_definition():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = int(rng.integers(1, 9))
        n_path = int(rng.integers(1, 30))
        path = rng.standard_normal((n_path, 2))
        first = int(rng.integers(1, n_path + 1))  # new rows are steps first..n_path
        prefix = path[max(0, first - 1 - (w - 1)):first - 1]
        got = running_means(prefix, path[first - 1:], w, first)
        np.testing.assert_allclose(got, definition(path, w)[first - 1:], rtol=1e-14, atol=1e-15)


def test_every_score_is_the_score_of_its_full_paths_running_means():
    """Children included: the window reaches back through the parent's prefix."""
    from orchestrator import api
    from orchestrator.runtime.inline import InlineExecutor
    tmp = tempfile.mkdtemp(prefix="tams-window-")
    try:
        res = api.run(campaign(11, 3, n=12), in_memory=True, progress=False,
                      executor=InlineExecutor(), run_dir=tmp)
        db = res.database()
        n_children = 0
        for r in range(3):
            for tid in db.trajectory_ids(r).tolist():
                tr = db.trajectory(int(tid), r)
                if tr.steps.size == 0:
                    continue
                n_children += tr.parent >= 0
                np.testing.assert_array_equal(tr.steps, np.arange(1, tr.steps.size + 1))
                want = running_means(tr.observables[:0], tr.observables, W, 1)[:, 0] / LEVEL
                assert np.array_equal(tr.scores, want), f"replica {r} trajectory {tid}"
                # and not the plain observables: the window is really applied
                assert not np.array_equal(tr.scores, tr.observables[:, 0] / LEVEL)
        assert n_children > 20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_window_key_is_validated(tmp_path):
    from orchestrator import api
    from orchestrator.errors import ConfigError
    bad = campaign(1, 1)
    bad["score"]["window"] = 0
    with pytest.raises(ConfigError, match="score.window"):
        api.run(bad, in_memory=True, progress=False, run_dir=str(tmp_path))


@pytest.mark.slow
def test_resume_with_a_window_is_identical(tmp_path):
    """Stop after a few segments, resume: the windows are rebuilt from the stored steps and
    the database ends with the uninterrupted run's bits."""
    from conftest import assert_same, digest, write_campaign
    from orchestrator import config
    from orchestrator.runtime.driver import Driver
    path = write_campaign(tmp_path, score__window=4, tams__segment_steps=20)
    Driver(config.load(path), db_path=str(tmp_path / "ref.h5")).run()
    ref = digest(tmp_path / "ref.h5")
    db = tmp_path / "part.h5"
    Driver(config.load(path), db_path=str(db), max_segments=25).run()
    assert digest(db)["0/steps/step"].size < ref["0/steps/step"].size
    Driver(config.load(path), db_path=str(db)).run()
    assert_same(ref, digest(db))
    # and the window changed the run (so the comparison above is about windowed scores)
    (tmp_path / "plain").mkdir()
    plain = write_campaign(tmp_path / "plain", tams__segment_steps=20)
    Driver(config.load(plain), db_path=str(tmp_path / "plain.h5")).run()
    assert digest(tmp_path / "plain.h5")["0/steps/score"].tobytes() != ref["0/steps/score"].tobytes()


# --- statistics -----------------------------------------------------------------------------

def brute_force(m: int, w: int, seed: int = 2026, block: int = 500_000) -> tuple[float, float]:
    """P(max_s windowed mean >= LEVEL) by plain Monte Carlo of the same chain; (p, SE)."""
    rng = np.random.default_rng(seed)
    c = SIGMA * math.sqrt(DT)
    hits = 0
    done = 0
    while done < m:
        b = min(block, m - done)
        x = np.zeros(b)
        last = np.zeros((w, b))  # ring of the last w values
        total = np.zeros(b)
        hit = np.zeros(b, dtype=bool)
        for s in range(1, HORIZON_STEPS + 1):
            x = x - DT * x + c * rng.standard_normal(b)
            total += x - last[s % w]
            last[s % w] = x
            hit |= total / min(s, w) >= LEVEL
        hits += int(hit.sum())
        done += b
    p = hits / m
    return p, math.sqrt(p * (1 - p) / m)


def run_batch(seed: int, replicas: int, shift: int) -> list[float]:
    from orchestrator import api
    from orchestrator.core import window
    from orchestrator.runtime.inline import InlineExecutor
    if shift:  # the mutation: the ensemble averages over one step more (or less) than w
        right = window.Windows.__init__

        def wrong(self, w):
            right(self, w + shift)
        window.Windows.__init__ = wrong  # type: ignore[method-assign]
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="tams-window-stat-", dir=base)
    try:
        res = api.run(campaign(seed, replicas), in_memory=True, progress=False,
                      executor=InlineExecutor(), run_dir=tmp)
        return [float(x) for x in res.estimates]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def estimates(replicas: int, seed: int, shift: int = 0, batch: int = 40) -> np.ndarray:
    jobs = [(seed * 1000 + i, min(batch, replicas - i * batch), shift)
            for i in range(math.ceil(replicas / batch))]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1), mp_context=ctx) as pool:
        parts = list(pool.map(run_batch, *zip(*jobs)))
    return np.concatenate([np.asarray(p) for p in parts])


def bias(est: np.ndarray, p: float, p_se: float) -> float:
    se = est.std(ddof=1) / math.sqrt(est.size)
    b = (est.mean() - p) / math.hypot(se, p_se)
    print(f"\nwindow {W}: TAMS {est.mean():.4e} ± {se:.1e} ({est.size} replicas), brute force "
          f"{p:.4e} ± {p_se:.1e}: {b:+.2f} SE")
    return float(b)


@pytest.fixture(scope="module")
def reference():
    return brute_force(2_000_000, W)


@pytest.mark.slow
def test_windowed_estimate_matches_brute_force(reference):
    p, p_se = reference
    est = estimates(160, seed=5)
    se = est.std(ddof=1) / math.sqrt(est.size)
    assert se / p <= 0.10, "too few replicas for the promised precision"
    assert abs(bias(est, p, p_se)) < 3.0


@pytest.mark.slow
@pytest.mark.parametrize("shift", [1, -1], ids=["window+1", "window-1"])
def test_window_off_by_one_is_detected(reference, shift):
    p, p_se = reference
    est = estimates(100, seed=6, shift=shift)
    assert abs(bias(est, p, p_se)) > 3.0, "a window off by one step must fail the test above"
