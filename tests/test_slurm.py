"""`runner.kind: slurm` against a real single-node Slurm cluster (tests/services/slurm.sh).

Skipped on a laptop without Slurm; a failure under TAMS_CI=1.  The campaigns are small: each
runs in ~15 s, most of it Slurm and Parsl start-up."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_same, digest, require, write_campaign
from orchestrator import config
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database

pytestmark = pytest.mark.slow  # a real Slurm cluster, minutes of blocks

CLI = [sys.executable, "-m", "orchestrator.cli"]
SMALL = dict(tams__trajectories=8, tams__horizon=4.0, tams__segment_steps=400)
# commits every 0.5 s: the tests act on what the database shows while segments still run
SLURM = dict(runner__kind="slurm", runner__workers=2, runner__slurm__poll_interval=2,
             database__commit_interval=0.5, **SMALL)


def _slurm_state() -> str:
    if not shutil.which("sinfo"):
        return ""
    res = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


@pytest.fixture(scope="module")
def cluster() -> Path | None:
    """The slurmctld log (to prove that job ids were real jobs), or None if unreadable."""
    state = _slurm_state()
    require(bool(re.search(r"\b(idle|mix|alloc|comp)\b", state)),
            f"no Slurm cluster with an idle node (sinfo: {state or 'absent'}); run "
            "tests/services/slurm.sh as root")
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    m = re.search(r"^SlurmctldLogFile\s*=\s*(\S+)", out, re.M)
    log = Path(m.group(1)) if m else None
    return log if log is not None and os.access(log, os.R_OK) else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same campaign run by threads."""
    tmp = tmp_path_factory.mktemp("threads")
    # the same campaign on threads: runner.slurm belongs to kind slurm only (a clear error
    # otherwise), so it goes with the kind
    path = write_campaign(tmp, **{**SLURM, "runner__kind": "threads", "runner__slurm": None})
    Driver(config.load(path), db_path=str(tmp / "ref.h5")).run()
    return digest(tmp / "ref.h5")


def our_jobs(tmp_path: Path) -> list[str]:
    """Slurm jobs whose batch script lies under tmp_path (Parsl writes it in the run dir)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True,
                         check=True).stdout
    return [ln.split("|")[0] for ln in out.splitlines() if str(tmp_path) in ln]


def assert_no_jobs_left(tmp_path: Path, what: str = "the block outlived the driver",
                        within: float = 15.0) -> None:
    """The driver cancelled its blocks when it returned; Slurm takes a moment to drop a
    cancelled job from squeue (it shows it COMPLETING first: CI saw one listed right after
    the driver returned).  A block left running would stay for its walltime (minutes)."""
    deadline = time.monotonic() + within
    while our_jobs(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert our_jobs(tmp_path) == [], what


def parsl_processes(tmp_path: Path, driver_pid: int) -> set[str]:
    """Our Parsl processes: worker pools logging under tmp_path, and the interchange (a child
    of the driver until the driver dies; Parsl renames it `parsl: HTEX interchange`).  Other
    campaigns on the machine are not counted."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    found = set()
    for ln in out.splitlines()[1:]:
        pid, ppid, args = ln.split(None, 2)
        # a block runs Parsl's pool under orchestrator.runtime.poolwatch (its watchdog)
        if ("process_worker_pool" in args or "runtime.poolwatch" in args) and str(tmp_path) in args:
            found.add(f"{pid} {args}")
        elif "interchange" in args and (int(ppid) == driver_pid or pid in INTERCHANGES):
            INTERCHANGES.add(pid)
            found.add(f"{pid} {args}")
    return found


INTERCHANGES: set[str] = set()  # pids of our interchanges seen so far


def slurm_jobs_of(db: Path) -> tuple[set[str], set[str]]:
    """(Slurm job ids, hosts) recorded in the segments of every replica."""
    jobs, hosts = set(), set()
    with Database(db) as d:
        for r in range(d.n_replicas):
            t = d.table(r, "segments")
            assert t["slurm_job"].size > 0
            assert all(j for j in t["slurm_job"]), "a segment ran outside a Slurm job"
            jobs |= {j.decode() for j in t["slurm_job"]}
            hosts |= {h.decode() for h in t["host"]}
    return jobs, hosts


def assert_real_jobs(jobs: set[str], log: Path | None) -> None:
    """Each id was submitted to slurmctld: its log (no accounting here), else scontrol."""
    if log is not None:
        submitted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", log.read_text()))
        assert jobs <= submitted, f"jobs {jobs - submitted} are not in {log}"
        return
    for j in jobs:  # completed jobs stay visible for MinJobAge (300 s)
        res = subprocess.run(["scontrol", "show", "job", j], capture_output=True, text=True)
        assert res.returncode == 0 and f"JobId={j}" in res.stdout, res.stderr


def stop(proc, tmp_path: Path) -> None:
    """After a failed test: stop the driver the way a user would (SIGTERM: it cancels its
    block), else kill it and cancel its block here, so the next test gets the node."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for job in our_jobs(tmp_path):
        subprocess.run(["scancel", job])


def wait_segments(db: Path, proc, n: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if db.exists():
            try:
                with Database(db) as d:
                    if sum(v.segments for v in d.replicas()) >= n:
                        return
            except Exception:  # the driver is between commits
                pass
        time.sleep(0.1)
    pytest.fail(f"the driver did not ingest {n} segments (exit status {proc.poll()})")


def test_reference_is_a_real_run(reference):
    assert any(reference[f"{r}/summary"][0] == 1 for r in (0, 1))  # a replica converged
    assert all(reference[f"{r}/summary"][1] > 3 for r in (0, 1))  # with iterations


def test_slurm_campaign_identical_to_threads(cluster, reference, tmp_path):
    path = write_campaign(tmp_path, **SLURM)
    db = tmp_path / "slurm.h5"
    Driver(config.load(path), db_path=str(db)).run()
    assert_same(reference, digest(db))
    jobs, hosts = slurm_jobs_of(db)
    assert len(jobs) == 1 and hosts == {socket.gethostname()}
    assert_real_jobs(jobs, cluster)
    assert_no_jobs_left(tmp_path)


def test_scancel_block_mid_campaign(cluster, reference, tmp_path):
    """Cancel the block under running segments: they are re-run on a new block, the
    campaign completes with the identical result, and no model retry was spent."""
    path = write_campaign(tmp_path, **SLURM)
    db = tmp_path / "camp.h5"
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_segments(db, proc, 8)
        jobs = our_jobs(tmp_path)
        assert len(jobs) == 1 and proc.poll() is None
        subprocess.run(["scancel", jobs[0]], check=True)
        out, err = proc.communicate(timeout=240)
    finally:
        stop(proc, tmp_path)
    assert proc.returncode == 0, err
    assert "lost with its worker" in err  # segments were running when the block went
    assert_same(reference, digest(db))
    ran_on, _ = slurm_jobs_of(db)
    assert jobs[0] in ran_on and len(ran_on) == 2, ran_on  # the old block, then a new one
    assert_real_jobs(ran_on, cluster)
    with Database(db) as d:
        assert all(v.failed_segments == 0 for v in d.replicas())
        assert all((d.table(r, "segments")["attempts"] == 1).all() for r in range(d.n_replicas))
    assert_no_jobs_left(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_cancels_blocks_and_resumes(cluster, reference, tmp_path, sig):
    path = write_campaign(tmp_path, **SLURM)
    db = tmp_path / "camp.h5"
    proc = subprocess.Popen(CLI + ["run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_segments(db, proc, 5)
        assert len(our_jobs(tmp_path)) == 1 and proc.poll() is None
        running = parsl_processes(tmp_path, proc.pid)
        assert any("interchange" in p for p in running) and any(
            "runtime.poolwatch" in p for p in running), running
        proc.send_signal(sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc, tmp_path)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "Traceback" not in err and "resume" in err
    while time.monotonic() - t0 < 30 and (our_jobs(tmp_path) or parsl_processes(tmp_path, proc.pid)):
        time.sleep(0.2)
    assert our_jobs(tmp_path) == [], "the Slurm block outlived the driver"
    assert parsl_processes(tmp_path, proc.pid) == set(), "Parsl processes outlived the driver"
    with Database(db) as d:
        assert not all(v.outcome != 0 for v in d.replicas()), "the run ended before the signal"
    res = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same(reference, digest(db))
    jobs, _ = slurm_jobs_of(db)
    assert len(jobs) == 2  # the interrupted run's block and the resumed run's
    assert_real_jobs(jobs, cluster)


def test_blocks_that_cannot_start_stop_the_campaign(cluster, tmp_path):
    """A block Slurm refuses (a partition that does not exist) stops the run with one line
    naming Slurm's reason, instead of waiting for workers forever."""
    path = write_campaign(tmp_path, runner__slurm__partition="nosuch", **SLURM)
    res = subprocess.run(CLI + ["run", str(path), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "workers could not be started" in res.stderr and "partition" in res.stderr
    assert "Traceback" not in res.stderr
    assert_no_jobs_left(tmp_path)


@pytest.mark.parametrize("persistent", [False, True])
def test_slurm_apptainer_campaign_identical_to_threads_local(cluster, tmp_path, persistent):
    """Apptainer inside real Slurm jobs: the AMOC box model's SIF, run by `apptainer exec` in
    the block's workers (or in one instance per worker), gives bit for bit what the local
    binary gives on threads, and no instance outlives the block."""
    from test_containers import AMOC_SIF, amoc_campaign, write
    require(shutil.which("apptainer") is not None, "no apptainer on PATH (as root: bash "
            "../shared/tools/apptainer/install.sh)")
    require(AMOC_SIF.exists(), f"no {AMOC_SIF} (make -C containers images)")
    local = amoc_campaign("local")
    Driver(config.load(write(tmp_path / "local.yaml", local)), db_path=str(tmp_path / "local.h5")).run()
    data = amoc_campaign("apptainer", persistent=persistent)
    data["runner"] |= {"kind": "slurm", "slurm": {"poll_interval": 2}}
    db = tmp_path / "slurm.h5"
    Driver(config.load(write(tmp_path / "slurm.yaml", data)), db_path=str(db)).run()
    assert_same(digest(tmp_path / "local.h5"), digest(db))
    jobs, hosts = slurm_jobs_of(db)
    assert len(jobs) == 1 and hosts == {socket.gethostname()}
    assert_real_jobs(jobs, cluster)
    with Database(db) as d:
        assert {x.decode() for x in d.table(0, "segments")["launcher"]} == {"apptainer"}
    assert_no_jobs_left(tmp_path)
    if persistent:
        from test_containers import _instances
        deadline = time.monotonic() + 30  # the block's workers end with it, their instances too
        while _instances(f"tams-{_label(tmp_path / 'slurm.yaml')}-") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _instances(f"tams-{_label(tmp_path / 'slurm.yaml')}-") == []


def _label(yml: Path) -> str:
    from adapters.executable import ExecutableModel
    return ExecutableModel(config.load(yml).model, str(yml.parent)).launcher._label
