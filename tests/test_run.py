"""End-to-end runs through the CLI: report, status during a run, the read API, signals."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import write_campaign
from orchestrator import config
from orchestrator.core.algorithm import Status
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database

CLI = [sys.executable, "-m", "orchestrator.cli"]


@pytest.mark.slow  # 3 replicas run twice (tests/test_cli_fixes.py runs and reports fast)
def test_run_prints_estimate_with_interval(tmp_path):
    path = write_campaign(tmp_path, replicas=3)
    res = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "95 % CI [" in res.stdout and "3/3 replicas finished" in res.stdout
    assert (tmp_path / "camp.h5").exists()
    # running again resumes a finished campaign: nothing to do, same report
    again = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-3:-1] == res.stdout.splitlines()[-3:-1]


def test_trajectory_full_path(tmp_path):
    path = write_campaign(tmp_path)
    Driver(config.load(path), db_path=str(tmp_path / "c.h5")).run()
    with Database(tmp_path / "c.h5") as db:
        created = db.table(0, "created")
        children = np.flatnonzero(created["parent"] >= 0)
        assert children.size > 0
        for i in children[:10]:
            tid, parent, b = (int(created[c][i]) for c in ("id", "parent", "branch_step"))
            child, par = db.trajectory(tid, 0), db.trajectory(parent, 0)
            # every step from 1 to the end, once, in order
            assert np.array_equal(child.steps, np.arange(1, child.steps.size + 1))
            # the child's path is the parent's up to the branch step, bit for bit
            assert child.scores[:b].tobytes() == par.scores[:b].tobytes()
            assert child.observables[:b].tobytes() == par.observables[:b].tobytes()
            # ... and its own steps differ from the parent's (fresh noise)
            if par.steps.size > b and child.steps.size > b:
                assert child.observables[b, 0] != par.observables[b, 0]
            # the level it was born at: the branch step's score is above it, the one before not
            it = int(created["iteration"][i])
            level = db.iterations(0)["level"][it - 1]
            assert child.scores[b - 1] > level
            assert (par.scores[: b - 1] <= level).all()
        # estimate = W_J * reached / N
        v = db.replica(0)
        w = db.iterations(0)["weight"][-1]
        assert v.estimate == pytest.approx(w * v.n_reached / 10, rel=1e-12)


def test_classic_ams_variant_ends_in_a(tmp_path):
    path = write_campaign(tmp_path, score__score_a=0.1, tams__horizon=20.0)
    Driver(config.load(path), db_path=str(tmp_path / "a.h5")).run()
    with Database(tmp_path / "a.h5") as db:
        status = db.table(0, "trajectories")["status"]
        assert (status == int(Status.FELL_BACK)).sum() > 0
        assert db.replica(0).outcome == 1 and db.replica(0).estimate > 0
        # a trajectory that fell back left A first, then ended at or below score_a
        ended = db.table(0, "trajectories")
        tid = int(ended["id"][np.flatnonzero(ended["status"] == int(Status.FELL_BACK))[0]])
        t = db.trajectory(tid, 0)
        assert t.scores[-1] <= 0.1 and (t.scores[:-1] > 0.1).any()


@pytest.mark.slow  # a campaign long enough to be watched
def test_status_while_running(tmp_path):
    """A second process reads the database while the driver writes it."""
    path = write_campaign(tmp_path, replicas=2, tams__trajectories=20, tams__horizon=6.0)
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "camp.h5"
    seen = []
    try:
        while proc.poll() is None:
            if db.exists():
                res = subprocess.run(CLI + ["status", str(db)], capture_output=True, text=True,
                                     timeout=60)
                assert res.returncode == 0, res.stderr
                seen.append(res.stdout)
            time.sleep(0.2)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(seen) >= 2, "the run ended before status could be read twice"
    assert any("running" in s for s in seen)
    assert all("ETA: " in s for s in seen)
    # an estimate of the remaining time appears once iterations have started
    assert any(re.search(r"ETA: ~[0-9.]+ (s|min|h) \(about \d+ more iterations", s) for s in seen) \
        or all("ETA: unknown" in s or "ETA: done" in s for s in seen)
    final = subprocess.run(CLI + ["status", str(db)], capture_output=True, text=True)
    assert final.stdout.count("converged") == 2
    assert "ETA: done" in final.stdout


def _our_parsl_processes(tmp_path) -> list[str]:
    """Parsl interchange / worker-pool processes started by *this* test's driver: those whose
    working directory or command line lies in the test's directory (other runs on the machine
    are not ours to judge)."""
    ours = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if ("process_worker_pool" in cmd or "interchange" in cmd) and (
                cwd.startswith(str(tmp_path)) or str(tmp_path) in cmd):
            ours.append(f"{pid} {cmd}")
    return ours


@pytest.mark.slow  # campaigns interrupted and resumed, Parsl processes
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_resumes(tmp_path, sig):
    path = write_campaign(tmp_path, runner__kind="processes", runner__workers=2,
                          tams__segment_steps=100)
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "camp.h5"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:  # wait until segments are being ingested
        if db.exists():
            with Database(db) as d:
                if sum(v.segments for v in d.replicas()) > 5:
                    break
        time.sleep(0.1)
    assert _our_parsl_processes(tmp_path), "the check below would prove nothing"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "Traceback" not in err and "resume" in err
    time.sleep(1)
    assert _our_parsl_processes(tmp_path) == [], "Parsl processes outlived the driver"
    assert not (tmp_path / "camp.h5.lock").exists()
    res = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    with Database(db) as d:
        assert all(v.outcome == 1 for v in d.replicas())
