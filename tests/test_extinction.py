"""Issue #11, item 6: the report says why a replica went extinct, with the fix, and gives the
fraction of extinct replicas -- from what the database already stores.

Two real extinctions: a score still rising when the horizon ends (strong drift, little noise:
the paths peak at the last step, children branch there and copy their parents, ties spread
to all N), and a score clipped to a constant (the N maxima tie from the start).
"""
from __future__ import annotations

import re
import textwrap

import pytest

from conftest import write_campaign
from test_cli_fixes import tams

pytestmark = pytest.mark.slow  # each runs a campaign

MODEL = textwrap.dedent("""
    import numpy as np
    def step(state, t, dt, noise, sigma=0.01):
        return state + dt + sigma * np.sqrt(dt) * noise
    def rising(t, obs):
        return obs[:, 0] / 10.0
    def clipped(t, obs):
        return np.clip(obs[:, 0] - 100.0, 0.0, 1.0)
""")


def _run(tmp_path, score: str, **over):
    (tmp_path / "drift.py").write_text(MODEL)
    path = write_campaign(tmp_path, replicas=4, model={
        "adapter": "python", "step": "drift:step", "initial_state": [0.0], "dt": 0.01,
        "noise_dim": 1, "observables": ["x"], "parameters": {"sigma": 0.01}},
        score={"function": f"drift:{score}", "target": 1.0},
        tams={"trajectories": 5, "kill_per_iteration": 1, "horizon": 1.0,
              "segment_steps": 100}, **over)
    res = tams(tmp_path, "run", "-q", path.name)
    assert res.returncode == 0, res
    rep = tams(tmp_path, "report", "--no-figures", "camp.h5")
    assert rep.returncode == 0, rep
    return rep.stdout


def test_ties_at_the_horizon(tmp_path):
    out = _run(tmp_path, "rising")
    assert "extinct: 4 of 4 finished replicas (100 %)" in out, out
    lines = [ln for ln in out.splitlines() if re.match(r"  replica \d+: extinct", ln)]
    assert len(lines) == 4 and all(ln.endswith("(ties at the horizon)") for ln in lines), out
    assert all("children branched at the last step of the horizon (step 100)" in ln
               for ln in lines)
    assert "ties at the horizon: children that branch at the last step" in out
    assert "fix: a horizon longer than the time the score needs to peak" in out


def test_level_stuck(tmp_path):
    out = _run(tmp_path, "clipped")
    assert "extinct: 4 of 4 finished replicas (100 %)" in out, out
    assert out.count("(level stuck)") == 4 and "ties at the horizon" not in out
    assert "the initial ensemble's paths already shared it" in out
    assert "fix: a score that keeps separating trajectories" in out


def test_no_extinction_no_diagnosis(tmp_path):
    path = write_campaign(tmp_path, tams__segment_steps=400)
    assert tams(tmp_path, "run", "-q", path.name).returncode == 0
    out = tams(tmp_path, "report", "--no-figures", "camp.h5").stdout
    assert "extinct" not in out, out
