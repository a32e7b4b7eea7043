"""Determinism (DESIGN §5): the same campaign and seed give bit-identical databases with 1 or 2
workers, threads or processes, and after SIGKILL + resume."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.campaign import Driver


def run(path, db):
    Driver(config.load(path), db_path=str(db)).run()
    return digest(db)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    path = write_campaign(tmp, runner__workers=1)
    return run(path, tmp / "ref.h5")


def test_reference_is_a_real_run(reference):
    # both replicas converged with a positive estimate and did iterations
    for r in (0, 1):
        assert reference[f"{r}/summary"][0] == 1  # converged
        assert reference[f"{r}/summary"][1] > 3
        assert 0 < reference[f"{r}/summary"][4] < 1


def test_two_threads_identical(reference, tmp_path):
    path = write_campaign(tmp_path, runner__workers=2)
    assert_same(reference, run(path, tmp_path / "t2.h5"))


def test_processes_identical(reference, tmp_path):
    path = write_campaign(tmp_path, runner__kind="processes", runner__workers=2)
    assert_same(reference, run(path, tmp_path / "p2.h5"))


def test_different_seed_differs(reference, tmp_path):
    path = write_campaign(tmp_path, seed=12)
    other = run(path, tmp_path / "s.h5")
    assert other["0/steps/score"].tobytes() != reference["0/steps/score"].tobytes()


def test_resume_after_partial_run_identical(reference, tmp_path):
    """Stop the driver after a few segments (a clean stop), resume: identical."""
    path = write_campaign(tmp_path)
    db = tmp_path / "part.h5"
    Driver(config.load(path), db_path=str(db), max_segments=15).run()
    partial = digest(db)
    assert partial["0/steps/step"].size < reference["0/steps/step"].size
    assert_same(reference, run(path, db))


_DURATION: list[float] = []


def reference_duration(tmp_path) -> float:
    """Wall seconds of an undisturbed CLI run of the same campaign, counted from the moment
    its database appears (as the kill below is)."""
    if not _DURATION:
        path = write_campaign(tmp_path, name="timing")
        db = tmp_path / "timing.h5"
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(path),
                                 "--db", str(db), "-q"], cwd=tmp_path, stdout=subprocess.DEVNULL)
        while not db.exists() and proc.poll() is None:
            time.sleep(0.005)
        t0 = time.monotonic()
        assert proc.wait() == 0
        _DURATION.append(time.monotonic() - t0)
    return _DURATION[0]


@pytest.mark.parametrize("moment", [0, 1, 2])
def test_sigkill_then_resume_identical(reference, tmp_path, moment):
    """SIGKILL the driver at a random moment, resume with `tams run`: bit-identical result."""
    path = write_campaign(tmp_path)
    db = tmp_path / "k.h5"
    rng = random.Random(1000 + moment)
    duration = reference_duration(tmp_path)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--db", str(db), "-q"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until the database exists, then kill at a random moment of the run
    t0 = time.monotonic()
    while not db.exists() and time.monotonic() - t0 < 30:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.05, 0.8) * duration)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the driver ended before the kill: the test proved nothing"
    partial = digest(db)  # the killed database is readable and consistent
    assert partial["0/steps/step"].size + partial["1/steps/step"].size < (
        reference["0/steps/step"].size + reference["1/steps/step"].size)
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same(reference, digest(db))
