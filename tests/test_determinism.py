"""Determinism (DESIGN §5): the same campaign and seed give bit-identical databases with 1 or 2
workers, threads or processes, and after SIGKILL + resume."""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.runtime.driver import Driver

pytestmark = pytest.mark.slow  # many full campaigns, processes, SIGKILLs: ~2.5 min


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


def committed_segments(db) -> int:
    from orchestrator.store import Database
    try:
        with Database(db) as d:
            return sum(v.segments for v in d.replicas())
    except Exception:  # not created yet, or caught mid-creation
        return 0


@pytest.mark.parametrize("moment", [0, 1, 2])
def test_sigkill_then_resume_identical(reference, tmp_path, moment):
    """SIGKILL the driver at a random moment of its progress (a random fraction of the
    reference run's segments committed, plus a random delay of up to 50 ms so the kill lands
    anywhere: in a segment, in a database write, in a decision), then resume with `tams run`:
    bit-identical result.  Progress, not time, picks the moment, so a loaded machine cannot
    make the kill land after the end."""
    path = write_campaign(tmp_path)
    db = tmp_path / "k.h5"
    rng = random.Random(1000 + moment)
    total = int(sum(reference[f"{r}/summary"][1] for r in (0, 1)))  # iterations, for scale
    n_segments = committed_segments_of_reference(reference)
    at = int(rng.uniform(0.1, 0.7) * n_segments)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--db", str(db), "-q"]
    delay = rng.uniform(0, 0.05)
    for _ in range(4):  # the driver is fast: a kill may land after its last commit; go earlier
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while proc.poll() is None and committed_segments(db) < at:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the driver ended before the kill: the test proved nothing"
        partial = digest(db)  # the killed database is readable and consistent
        if partial["0/steps/step"].size + partial["1/steps/step"].size < (
                reference["0/steps/step"].size + reference["1/steps/step"].size):
            break
        db.unlink()
        shutil.rmtree(db.with_suffix(".run"), ignore_errors=True)
        at, delay = at // 2, delay / 4
    else:
        raise AssertionError("every kill landed after the last commit: the test proved nothing")
    assert total > 0
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same(reference, digest(db))


def committed_segments_of_reference(reference) -> int:
    return int(reference["segments"])
