"""Each rule of orchestrator/core/algorithm.py against its plain definition, on random paths."""
from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.core import algorithm as alg


def _plain_branch_step(path: np.ndarray, level: float) -> int:
    """DESIGN §4.3 word for word: the first step (1-based) whose score is > the level."""
    for i, x in enumerate(path):
        if x > level:
            return i + 1
    raise ValueError


@pytest.mark.parametrize("seed", range(20))
def test_running_max_records_branch_like_the_plain_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    # random walks, plateaus (ties) and repeated values: the cases where "first > level" bites
    path = np.round(np.cumsum(rng.normal(size=n)) * rng.choice([1.0, 0.2]), rng.choice([1, 3]))
    # records built in random pieces, as segments arrive
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(0, 5))),
                              replace=False)) if n > 1 else np.zeros(0, int)
    steps, vals, mx, first = [], [], -math.inf, 1
    for piece in np.split(path, cuts):
        s, v = alg.running_max_records(piece, first, mx)
        steps.append(s)
        vals.append(v)
        first += piece.size
        mx = max(mx, float(piece.max()))
    rs, rv = np.concatenate(steps), np.concatenate(vals)
    assert np.all(np.diff(rv) > 0)
    for level in np.concatenate([path, path - 1e-9, [path.min() - 1]]):
        if level >= path.max():
            with pytest.raises(ValueError):
                alg.branch_step_from_records(rs, rv, float(level))
            continue
        b = _plain_branch_step(path, float(level))
        assert alg.branch_step_from_records(rs, rv, float(level)) == b
        assert alg.branch_step(path, float(level)) == b


def test_a_wrong_records_rule_would_be_caught():
    """`>=` instead of `>` in the records changes the branch step on a plateau."""
    path = np.array([0.1, 0.5, 0.5, 0.7])
    rs, rv = alg.running_max_records(path, 1)
    assert rs.tolist() == [1, 2, 4]
    assert alg.branch_step_from_records(rs, rv, 0.5) == 4 == _plain_branch_step(path, 0.5)


@pytest.mark.parametrize("seed", range(30))
def test_checkpoint_runs_answer_like_a_plain_list(seed):
    """core/checkpoints.py (runs) against the plain rows it replaces, on random patterns:
    regular strides with a last-step tail, several files, single-state files (index -1)."""
    from orchestrator.core.checkpoints import CheckpointRuns
    rng = np.random.default_rng(seed)
    steps, files, index = [], [], []
    s, f = 0, 0
    runs = CheckpointRuns()
    for _seg in range(int(rng.integers(1, 6))):
        every = int(rng.integers(1, 30))
        n = int(rng.integers(1, 200))
        seg = np.arange(s + every, s + every * n + 1, every)
        if rng.random() < 0.5:
            seg = np.append(seg, seg[-1] + int(rng.integers(1, every + 1)))
        single = rng.random() < 0.3
        idx = np.full(seg.size, -1) if single else np.arange(seg.size)
        fil = (f + np.arange(seg.size)) if single else np.full(seg.size, f)
        runs.add(seg, fil, idx)
        steps += seg.tolist()
        files += fil.tolist()
        index += idx.tolist()
        s, f = int(seg[-1]), int(fil[-1]) + 1
    S, F, X = np.array(steps), np.array(files), np.array(index)
    es, ef, ei = runs.expand()
    assert es.tolist() == steps and ef.tolist() == files and ei.tolist() == index
    assert runs.files() == sorted(set(files))
    for _ in range(200):
        lo = int(rng.integers(-1, s + 2))
        hi = int(rng.integers(lo, s + 3))
        inside = np.flatnonzero((S > lo) & (S <= hi))
        want = (int(S[inside[-1]]), int(F[inside[-1]]), int(X[inside[-1]])) if inside.size else None
        assert runs.last_in(lo, hi) == want
        inside = np.flatnonzero((S >= lo) & (S <= hi))
        want = (int(S[inside[0]]), int(F[inside[0]]), int(X[inside[0]])) if inside.size else None
        assert runs.first_in(lo, hi) == want
    # the python adapter's pattern: one run per segment however many checkpoints it has
    one = CheckpointRuns.of(np.arange(1, 1001), np.zeros(1000, int), np.arange(1000))
    assert one.runs.shape[0] == 1
