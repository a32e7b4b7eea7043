"""The driver as a chain of Slurm jobs (`tams submit`) and no orphaned blocks, on the real
single-node Slurm cluster of tests/services/slurm.sh (issue 13).

Skipped on a laptop without Slurm; a failure under TAMS_CI=1.  Every test cancels what it
left in the queue, also when it fails."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.runtime import slurm
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database
from test_slurm import SLURM, cluster, our_jobs, wait_segments  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow  # real Slurm jobs

CLI = [sys.executable, "-m", "orchestrator.cli"]

# the double well with a simulated cost per step, read from the environment, so that the
# reference (no delay, in this process) and the Slurm jobs (a delay) are the same campaign
SLOW_WELL = '''\
import os, time
from adapters.examples.doublewell2d import score, step as _step

DELAY = float(os.environ.get("SLOW_WELL_DELAY", "0"))


def step(state, t, dt, noise, eps=0.1):
    if DELAY:
        time.sleep(DELAY)
    return _step(state, t, dt, noise, eps)
'''


def _campaign(tmp_path: Path, **kw) -> Path:
    (tmp_path / "slow_well.py").write_text(SLOW_WELL)
    return write_campaign(tmp_path, model__step="slow_well:step", score__function="slow_well:score",
                          runner__slurm__exclusive=False, **{**SLURM, **kw})


def _reference(tmp_path: Path) -> dict:
    """The same campaign, uninterrupted, on threads in this process (no delay)."""
    ref = tmp_path / "ref"
    ref.mkdir()
    path = _campaign(ref, runner__kind="threads", runner__workers=8, runner__slurm=None)
    Driver(config.load(path), db_path=str(ref / "ref.h5")).run()
    return digest(ref / "ref.h5")


def _cleanup(tmp_path: Path, db: Path) -> None:
    """Cancel every job of the campaign (driver jobs and blocks) and of this directory."""
    name = slurm.job_name(db)
    slurm.cancel([j.id for j in slurm.jobs(name)] + our_jobs(tmp_path))


def _state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    m = re.search(r"JobState=(\S+)", out)
    return m.group(1) if m else "?"


def _wait_empty(tmp_path: Path, db: Path, timeout: float) -> list:
    name = slurm.job_name(db)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = slurm.jobs(name) + our_jobs(tmp_path)
        if not left:
            return []
        time.sleep(0.5)
    return left


def test_submit_chain_of_driver_jobs_identical(cluster, tmp_path):  # noqa: F811
    """`tams submit` with a one-minute walltime: the driver stops on Slurm's signal 50 s
    before it, its follow-up job resumes, and the chain finishes the campaign bit for bit as
    one uninterrupted run, leaving nothing in the queue."""
    path = _campaign(tmp_path)
    reference = _reference(tmp_path)
    db = tmp_path / "camp.h5"
    env = {**os.environ, "SLOW_WELL_DELAY": "0.0015"}
    try:
        res = subprocess.run(CLI + ["submit", str(path), "--walltime", "1", "--grace", "50"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        first = re.search(r"submitted driver job (\d+)", res.stdout).group(1)
        # `tams status` shows the driver's job while the chain runs
        t0 = time.monotonic()
        seen = ""
        while time.monotonic() - t0 < 30 and "driver job" not in seen:
            if db.exists():
                seen = subprocess.run(CLI + ["status", str(db)], capture_output=True,
                                      text=True).stdout
            time.sleep(0.5)
        assert "driver job: " in seen, seen
        left = _wait_empty(tmp_path, db, 200)
        assert left == [], f"still queued: {left}"
    finally:
        _cleanup(tmp_path, db)
    logs = sorted((tmp_path / "camp.run" / "driver").glob("driver-*.out"))
    jobs = (tmp_path / "camp.run" / "driver" / "jobs").read_text().split()
    text = "\n".join(p.read_text() for p in logs)
    assert jobs[0] == first and len(jobs) >= 2, text  # the walltime stopped the first job
    assert "the walltime is near: stopped cleanly" in text, text
    assert "Traceback" not in text, text
    with Database(db) as d:
        assert d.run_state().state == "finished"
        seg_jobs = set()
        for r in range(d.n_replicas):
            seg_jobs |= {j.decode() for j in d.table(r, "segments")["slurm_job"]}
    assert len(seg_jobs) >= 2  # segments ran in the blocks of at least two driver jobs
    assert_same(reference, digest(db))
    for j in jobs:  # every follow-up that was not needed was cancelled, the others completed
        assert _state(j) in ("COMPLETED", "CANCELLED"), (j, _state(j))


def test_next_run_cancels_blocks_of_a_killed_driver(cluster, tmp_path):  # noqa: F811
    """SIGKILL the driver as soon as its block is queued: the next `tams run` of the campaign
    cancels that block (by the campaign's job name) before it starts its own, and finishes
    with the same result."""
    path = _campaign(tmp_path)
    db = tmp_path / "camp.h5"
    name = slurm.job_name(db)
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not slurm.jobs(name) and time.monotonic() - t0 < 60 and proc.poll() is None:
            time.sleep(0.05)
        orphans = [j.id for j in slurm.jobs(name)]
        assert orphans and all(j.name.startswith(name + ".block-") for j in slurm.jobs(name))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        res = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        assert f"cancelled 1 Slurm block(s) left by an earlier driver of this campaign: " \
               f"{orphans[0]}" in res.stderr, res.stderr
        assert _state(orphans[0]) == "CANCELLED"
        assert _wait_empty(tmp_path, db, 30) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _cleanup(tmp_path, db)
    assert_same(_reference(tmp_path), digest(db))


def _pool_found_interchange(tmp_path: Path) -> bool:
    return any("Probe discovered interchange" in p.read_text(errors="replace")
               for p in tmp_path.glob("camp.run/parsl/tams/block-*/*/manager.log"))


@pytest.mark.parametrize("when", ["connecting", "running"])
def test_blocks_end_by_themselves_when_the_driver_is_killed(cluster, tmp_path, when):  # noqa: F811
    """SIGKILL the driver while its block's worker pool connects (it has just found the
    interchange: Parsl's pool alone then waits forever) or runs segments: with no driver, the
    block ends by itself (runtime/poolwatch.py; Parsl's heartbeat) long before its walltime,
    without anyone cancelling it."""
    path = _campaign(tmp_path, runner__slurm__walltime="00:10:00")
    db = tmp_path / "camp.h5"
    name = slurm.job_name(db)
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SLOW_WELL_DELAY": "0.002"})
    try:
        t0 = time.monotonic()
        if when == "running":
            wait_segments(db, proc, 1)
        else:
            while not _pool_found_interchange(tmp_path) and time.monotonic() - t0 < 60:
                time.sleep(0.01)
        blocks = [j.id for j in slurm.jobs(name)]
        assert len(blocks) == 1 and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        t_kill = time.monotonic()
        left = _wait_empty(tmp_path, db, 60)
        gone_after = time.monotonic() - t_kill
        assert left == [], f"the block outlived its driver by 60 s: {left}"
        assert _state(blocks[0]) != "CANCELLED", "someone cancelled it"
        print(f"block {blocks[0]} ({when}) ended {gone_after:.0f} s after the driver's SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
        _cleanup(tmp_path, db)
