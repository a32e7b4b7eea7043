"""The algorithm keys: one sentence per mistake (file, key, fix), and the resampling rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator import api
from orchestrator.core.gklt import log_mean_exp, systematic_counts
from orchestrator.core.stats import binomial_summary
from orchestrator.errors import ConfigError


def ou(**extra) -> dict:
    c = {"seed": 1, "model": {"adapter": "python", "segment": "adapters.examples.ou:segment",
                              "initial_state": [0.0], "dt": 0.01, "observables": ["x"]},
         "score": {"function": "adapters.examples.ou:score"},
         "tams": {"trajectories": 8, "horizon": 1.0}}
    c.update(extra)
    return c


GK = {"k": 1.0, "observable": "x", "resample_every": 10, "threshold": 0.1}


@pytest.mark.parametrize("data, message", [
    (ou(algorithm="gklt"), r"<campaign>: key gklt: is required with `algorithm: gklt`; add"),
    (ou(algorithm="gklt", gklt=dict(GK, observable="y")),
     r"key gklt.observable: 'y' is not an observable of the model; use one of \['x'\]\.$"),
    (ou(gklt=GK), r"key gklt: is the section of `algorithm: gklt`, but algorithm is tams; set"),
    (ou(algorithm="gklt", gklt=dict(GK, resample_every=500)),
     r"key gklt.resample_every: 500 steps is longer than the horizon \(100 steps\)"),
    (ou(algorithm="gklt", gklt=dict(GK, resample_every=0)),
     r"key gklt.resample_every: must be an integer >= 1"),
    (ou(algorithm="gklt", gklt={"k": 1.0, "observable": "x", "resample_every": 10}),
     r"key gklt.threshold: is required; add it"),
])
def test_one_sentence(data, message):
    with pytest.raises(ConfigError, match=message):
        api.load_campaign(data)


def test_score_a_refused_with_gklt():
    data = ou(algorithm="gklt", gklt=GK)
    data["score"]["score_a"] = 0.1
    with pytest.raises(ConfigError, match=r"key score.score_a: GKLT runs every trajectory to the "
                                          r"horizon; remove score_a"):
        api.load_campaign(data)


def test_systematic_counts_have_the_right_expectation():
    """E[c_i] = N w_i over the uniform, sum c_i = N, each c_i the floor or ceiling of N w_i:
    what the GKLT estimator's unbiasedness needs (docs/algorithms.md)."""
    rng = np.random.default_rng(5)
    log_g = rng.normal(0, 2, 12)
    w = np.exp(log_g - log_g.max())
    w /= w.sum()
    us = (np.arange(4000) + 0.5) / 4000  # the uniform on a fine grid: the exact mean
    counts = np.array([systematic_counts(log_g, u) for u in us])
    assert (counts.sum(axis=1) == 12).all()
    np.testing.assert_allclose(counts.mean(axis=0), 12 * w, atol=2e-3)
    assert ((counts >= np.floor(12 * w) - 1e-9) & (counts <= np.ceil(12 * w) + 1e-9)).all()
    # a mutation: multinomial-free "rounding" would not have the expectation
    rounded = np.round(12 * w)
    assert np.abs(rounded - 12 * w).max() > 0.1


def test_log_mean_exp_does_not_overflow():
    x = np.array([1000.0, 1001.0, 999.0])
    assert math.isclose(log_mean_exp(x), 1000 + math.log((1 + math.e + 1 / math.e) / 3))


def test_wilson_interval():
    s = binomial_summary(0, 1000, 100)
    assert s.mean == 0 and s.ci_low == 0 and math.isclose(s.ci_high, 3.8415 / 1003.8415, rel_tol=1e-3)
    s = binomial_summary(20, 1000, 100)
    assert s.ci_low < 0.02 < s.ci_high and math.isclose(s.stderr, math.sqrt(0.02 * 0.98 / 1000))


def test_export_refuses_a_gklt_database_in_one_sentence(tmp_path, capsys):
    """`tams export` would write TAMS weights for GKLT trajectories: it says so instead."""
    from orchestrator.cli import main
    data = ou(algorithm="gklt", gklt=GK, replicas=1)
    api.run(data, db=tmp_path / "g.h5", progress=False, run_dir=tmp_path / "g.run")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "g.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tams export does not write GKLT weights yet" in err and "\n" not in err
    assert not list(tmp_path.glob("g.nc"))
