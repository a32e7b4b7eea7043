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
