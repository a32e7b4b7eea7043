"""The TAMS estimator is unbiased (DESIGN §4): the mean of many independent replicas, run with
the decisions of ``orchestrator.core.algorithm``, agrees with exact references (REFERENCES.md)
within its statistical error -- and a wrong weight update is caught.

Sizing: the relative std of one replica's estimate (N = 32) was measured at 0.58-0.61 for all
four cases (600 replicas each), so 500 replicas give SE/p ~ 0.027 <= 0.03 (checked below).
OU k = 1 has the heaviest tail (relative std up to 0.66 for some seeds): 600 replicas.
Run with ``pytest -s`` to see the table.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import tams_harness as h
from orchestrator.core import algorithm as alg
from orchestrator.core.algorithm import Outcome, Status

P_DW = 2.1618e-3  # 1-D double well, eps = 0.04 (REFERENCES.md)
P_OU = 5.4596e-4  # Ornstein-Uhlenbeck, T = 5
REF_REL_ACCURACY = 0.002
N = 32
R = 500

ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    if ROWS:
        print("\n\ncase                         R      mean        SE     SE/p  mean/p  bias/SE")
        for row in ROWS:
            print(row)


def _row(name: str, res: h.Result, p_ref: float, seconds: float) -> tuple[float, float]:
    mean, se = res.mean, res.se
    tol = math.sqrt(se ** 2 + (REF_REL_ACCURACY * p_ref) ** 2)
    bias = (mean - p_ref) / tol
    row = (f"{name:<26} {res.estimates.size:4d}  {mean:.4e}  {se:.2e}  {se / p_ref:.4f}  "
           f"{mean / p_ref:.3f}  {bias:+7.2f}   ({seconds:.1f} s, "
           f"{res.iterations.mean():.0f} iterations/replica)")
    ROWS.append(row)
    print("\n" + row)
    return se, bias


# --- fast unit tests of orchestrator/algorithm.py ----------------------------------------

def test_ties_kill_more_than_k():
    maxs = np.array([0.5, 0.2, 0.1, 0.2, 0.2, 0.7])
    d = alg.decide(1, maxs, 2, 1.0, np.random.default_rng(0))
    assert d.outcome == Outcome.RUNNING and d.level == 0.2
    assert d.killed.tolist() == [1, 2, 3, 4] and d.n_killed == 4 >= 2
    assert set(d.parents.tolist()) <= {0, 5} and d.parents.size == 4
    assert alg.next_log_weight(0.0, d.n_killed, maxs.size) == pytest.approx(math.log(1 - 4 / 6))


def test_extinction_when_all_max_scores_equal():
    d = alg.decide(3, np.full(8, 0.3), 1, 1.0, np.random.default_rng(0))
    assert d.outcome == Outcome.EXTINCT and d.n_killed == 8 and d.parents.size == 0
    lw = alg.next_log_weight(-1.0, d.n_killed, 8)
    assert lw == -math.inf and alg.estimate(lw, 0, 8) == 0.0


def test_level_at_target_stops_without_changing_weight():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    d = alg.decide(7, np.array([0.96, 1.0, 0.95, 1.2]), 1, 0.95, rng)
    assert d.outcome == Outcome.CONVERGED and d.n_killed == 0 and d.parents.size == 0
    assert rng.bit_generator.state == state  # no survivor drawn
    assert alg.next_log_weight(-2.5, d.n_killed, 4) == -2.5
    # k = 2: one trajectory below the target, but the level (2nd smallest) is at the target
    d = alg.decide(7, np.array([0.5, 1.0, 0.95, 1.2]), 2, 0.95, rng)
    assert d.outcome == Outcome.CONVERGED and d.n_killed == 0
    # ... and below it, the replica goes on
    d = alg.decide(7, np.array([0.5, 0.6, 0.95, 1.2]), 2, 0.95, rng)
    assert d.outcome == Outcome.RUNNING and d.killed.tolist() == [0, 1]
    # max_iterations: iteration j > max_iterations is not executed
    d = alg.decide(4, np.array([0.5, 0.6, 0.95, 1.2]), 1, 0.95, rng, max_iterations=3)
    assert d.outcome == Outcome.MAX_ITERATIONS and d.n_killed == 0


def test_branch_step_strictly_above():
    path = np.array([0.1, 0.3, 0.3, 0.4, 0.2])
    assert alg.branch_step(path, 0.3) == 4  # score == level is not above it
    assert alg.branch_step(path, 0.29) == 2
    assert alg.branch_step(path, 0.3, first_step=11) == 14
    with pytest.raises(ValueError):
        alg.branch_step(path, 0.4)


def test_scan_target_horizon_and_fall_back():
    s = alg.scan(np.array([0.1, 0.95, 0.99]), 1, 100, 0.95)  # == target counts as reached
    assert (s.n_keep, s.status) == (2, Status.REACHED)
    s = alg.scan(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 8, 10, 0.95)  # steps 8..12, horizon 10
    assert (s.n_keep, s.status) == (3, Status.HORIZON)
    s = alg.scan(np.array([0.1, 0.2, 0.99, 0.4]), 8, 10, 0.95)  # target at the horizon step
    assert (s.n_keep, s.status) == (3, Status.REACHED)
    s = alg.scan(np.array([0.1, 0.2]), 1, 10, 0.95)
    assert (s.n_keep, s.status) == (2, Status.RUNNING)
    # classic AMS: ends on falling to score_a *after having been above it*
    sc = np.array([0.05, 0.1, 0.2, 0.3, 0.1, 0.5])
    s = alg.scan(sc, 1, 100, 0.95, score_a=0.1, left_a=False)
    assert (s.n_keep, s.status, s.left_a) == (5, Status.FELL_BACK, True)
    s = alg.scan(sc[:2], 1, 100, 0.95, score_a=0.1, left_a=False)  # never left A yet
    assert (s.n_keep, s.status, s.left_a) == (2, Status.RUNNING, False)
    s = alg.scan(sc, 1, 100, 0.95, score_a=0.1, left_a=True)  # left A in an earlier segment
    assert (s.n_keep, s.status) == (1, Status.FELL_BACK)
    s = alg.scan(np.array([0.2, 0.99, 0.0]), 1, 100, 0.95, score_a=0.1, left_a=True)
    assert (s.n_keep, s.status) == (2, Status.REACHED)


def test_log_weight_survives_tiny_probabilities():
    lw = 0.0
    for _ in range(1200):  # W = (1/2)^1200 ~ 1e-361
        lw = alg.next_log_weight(lw, 16, 32)
    assert math.isfinite(lw) and lw == pytest.approx(1200 * math.log(0.5))
    assert alg.estimate(-800.0, 5, 32) == 0.0  # underflows to 0, no error
    le = alg.log_estimate(-800.0, 5, 32)
    assert math.isfinite(le) and le == pytest.approx(-800.0 + math.log(5 / 32))
    assert alg.log_estimate(-800.0, 0, 32) == -math.inf


def test_harness_end_rule_matches_scan():
    rng = np.random.default_rng(3)
    target = 0.95
    sc = rng.uniform(0.0, 0.97, size=(400, 60))
    sc[::7, 20] = target  # exactly at the target
    sc[::5] *= 0.9  # never reach
    end, reached = h.end_rule(sc, target)
    mx = h._max_upto(sc, end)
    for i in range(sc.shape[0]):
        s = alg.scan(sc[i], 1, sc.shape[1], target)
        assert end[i] == s.n_keep
        assert reached[i] == (s.status == Status.REACHED)
        assert s.status in (Status.REACHED, Status.HORIZON)
        assert mx[i] == sc[i, : s.n_keep].max()
        # the driver scans segment by segment: same end
        s1 = alg.scan(sc[i, :25], 1, sc.shape[1], target)
        if s1.status == Status.RUNNING:
            s2 = alg.scan(sc[i, 25:], 26, sc.shape[1], target)
            assert 25 + s2.n_keep == end[i] and s2.status == s.status
        else:
            assert s1.n_keep == end[i]


def test_harness_small_run_is_consistent():
    """A tiny run: every replica converges, estimates equal W * n_reached / N."""
    res = h.run_tams(h.ornstein_uhlenbeck(), 6, 8, 2, seed=5)
    assert (res.outcomes == Outcome.CONVERGED).all()
    assert (res.n_reached >= 7).all()  # converged with k = 2: at most k - 1 below the target
    assert np.allclose(np.log(res.estimates), res.log_estimates)


# --- statistical tests ---------------------------------------------------------------------

CASES = [
    ("double well eps=0.04 k=1", h.double_well(0.04), 1, P_DW, 101, R),
    ("double well eps=0.04 k=4", h.double_well(0.04), 4, P_DW, 102, R),
    ("Ornstein-Uhlenbeck k=1", h.ornstein_uhlenbeck(), 1, P_OU, 103, 600),
    ("Ornstein-Uhlenbeck k=4", h.ornstein_uhlenbeck(), 4, P_OU, 104, R),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,model,k,p_ref,seed,n_rep", CASES, ids=[c[0] for c in CASES])
def test_unbiased(name, model, k, p_ref, seed, n_rep):
    import time
    t0 = time.perf_counter()
    res = h.run_tams(model, n_rep, N, k, seed)
    se, bias = _row(name, res, p_ref, time.perf_counter() - t0)
    assert (res.outcomes == Outcome.CONVERGED).all()
    assert se / p_ref <= 0.03, "not enough replicas for the claimed precision"
    assert abs(bias) <= 3.0


@pytest.mark.slow
def test_wrong_weight_is_detected():
    """One extra factor (1 - 1/N) per iteration: the same harness must then miss the
    reference by far more than 3 SE (so the tests above have power)."""
    import time

    def wrong(lw, n_killed, n):
        return alg.next_log_weight(lw, n_killed, n) + math.log1p(-1.0 / n)

    t0 = time.perf_counter()
    res = h.run_tams(h.ornstein_uhlenbeck(), 200, N, 4, 104, weight_update=wrong)
    _, bias = _row("OU k=4, WRONG weight", res, P_OU, time.perf_counter() - t0)
    assert abs(bias) > 3.0
