"""Crash torture, short version (bench/torture.py is the long one): SIGKILL the driver at 3
random moments (by committed progress plus a random sub-50 ms delay), run `tams check-db`
after each kill, resume; the final database is bit-identical to an undisturbed run."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.cli import main
from orchestrator.cli.checkdb import check_database
from orchestrator.runtime.driver import Driver
from test_executable import FORTRAN_MODEL

pytestmark = pytest.mark.slow  # repeated SIGKILLs of long campaigns


def _segments(db) -> int:
    from orchestrator.store import Database
    try:
        with Database(db) as d:
            return sum(v.segments for v in d.replicas())
    except Exception:
        return 0


@pytest.mark.parametrize("model", ["python", "checkpoint-file"])
def test_three_kills_check_db_and_identical(tmp_path, model):
    """The python adapter (a record file per trajectory), and the Fortran model with every
    checkpoint of a segment in one file and a binary trace (issue 15)."""
    ref_db = tmp_path / "ref.h5"
    kw = {} if model == "python" else {"model": {
        **FORTRAN_MODEL, "checkpoint_file": "checkpoints.bin", "trace_format": "binary",
        "trace_file": "trace.bin", "checkpoint_every": 10}}
    path = write_campaign(tmp_path, name="ref", **kw)
    Driver(config.load(path), db_path=str(ref_db)).run()
    reference = digest(ref_db)
    assert check_database(ref_db) == []
    total = int(reference["segments"])
    db = tmp_path / "k.h5"
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--db", str(db), "-q"]
    rng = random.Random(6)
    kills = 0
    for frac in sorted(rng.uniform(0.1, 0.8) for _ in range(3)):
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and _segments(db) < frac * total:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        kills += proc.wait() == -signal.SIGKILL
        assert check_database(db) == [], "inconsistent after a kill"
    assert kills >= 1, "every run ended before its kill: the test proved nothing"
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert main(["check-db", str(db)]) == 0
    assert_same(reference, digest(db))


def test_check_db_reports_a_broken_weight(tmp_path, capsys):
    import h5py
    path = write_campaign(tmp_path)
    db = tmp_path / "w.h5"
    Driver(config.load(path), db_path=str(db)).run()
    with h5py.File(db, "r+") as f:
        f["replicas/0000/iterations/log_weight"][0] += 1e-3
    assert main(["check-db", str(db)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out and all("replica" in ln for ln in out)
