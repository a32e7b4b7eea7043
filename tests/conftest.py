"""Shared helpers: small campaigns written to a temporary directory, database digests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_campaign(tmp_path: Path, name: str = "camp", **overrides) -> Path:
    """A small 2-D double-well campaign; ``overrides`` are dotted keys, e.g. tams__trajectories."""
    data = {
        "seed": 11,
        "replicas": 2,
        "model": {"adapter": "python", "step": "adapters.examples.doublewell2d:step",
                  "initial_state": [-1.0, 0.0], "dt": 0.01, "noise_dim": 2,
                  "observables": ["x", "y"], "parameters": {"eps": 0.1}},
        "score": {"function": "adapters.examples.doublewell2d:score", "target": 0.95},
        "tams": {"trajectories": 10, "kill_per_iteration": 2, "horizon": 4.0, "segment_steps": 50},
        "runner": {"kind": "threads", "workers": 1},
        # commits as often as before the 2 s default: tests that act on what the database
        # shows (kills, signals, scancel) must see segments while others still run
        "database": {"commit_interval": 0.5},
    }
    for key, value in overrides.items():
        d = data
        parts = key.split("__")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(parts[-1], None)
        else:
            d[parts[-1]] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def digest(db_path) -> dict[str, np.ndarray]:
    """Everything in a database that must be bit-for-bit reproducible (no provenance, no
    timings), in a canonical row order."""
    from orchestrator.store import Database
    out: dict[str, np.ndarray] = {}
    with Database(db_path) as db:
        for r in range(db.n_replicas):
            v = db.replica(r)
            out["segments"] = out.get("segments", 0) + v.segments
            out[f"{r}/summary"] = np.array([v.outcome, v.iterations, v.log_weight, v.n_reached,
                                            v.estimate, v.log_estimate, v.level], dtype=np.float64)
            for table, cols, key in (
                    ("iterations", ("iteration", "level", "n_killed", "log_weight", "weight"), ("iteration",)),
                    ("created", ("iteration", "slot", "id", "killed", "parent", "branch_step", "start_step"), ("id",)),
                    ("trajectories", ("id", "end_step", "status", "max_score"), ("id",)),
                    ("steps", ("traj", "step", "time", "score", "obs"), ("step", "traj")),
                    ("checkpoints", ("traj", "step", "index"), ("step", "traj"))):
                t = db.table(r, table)
                order = np.lexsort(tuple(t[k] for k in key)) if t[key[0]].size else np.zeros(0, int)
                for c in cols:
                    out[f"{r}/{table}/{c}"] = t[c][order]
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "segments":  # how many runs it took is not a result (replays, resumes)
            continue
        x, y = a[k], b[k]
        assert x.shape == y.shape, f"{k}: shapes {x.shape} != {y.shape}"
        # bitwise: compare the bytes, so that NaN == NaN and -0.0 != 0.0
        assert x.tobytes() == y.tobytes(), f"{k} differs"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def require(condition: bool, reason: str) -> None:
    """Skip a test whose service is missing on a laptop; fail it in CI (TAMS_CI=1)."""
    if not condition:
        if os.environ.get("TAMS_CI"):
            pytest.fail(f"CI requires this: {reason}")
        pytest.skip(reason)


def pytest_sessionfinish(session, exitstatus):
    """In CI no test may skip: a skip there hides a missing service or build step."""
    if os.environ.get("TAMS_CI"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped:
            reporter.write_line(f"TAMS_CI: {len(skipped)} test(s) skipped; CI treats skips as failures")
            session.exitstatus = 1
