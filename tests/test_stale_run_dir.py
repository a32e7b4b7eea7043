"""A new campaign never takes an earlier campaign's model output for its own.

Finished segments are found by path (that is how a resumed campaign skips work already
done), so replica directories left behind by a campaign whose database was deleted used to
be ingested as the new campaign's segments: deleting the database and running again with
another seed took 130 of 643 segments from the old run.  The driver now refuses to start a
new database over a run directory holding replica directories, and touches nothing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.core.meta import CampaignMeta
from orchestrator.errors import DatabaseError
from orchestrator.runtime.driver import Driver
from orchestrator.runtime.inline import InlineExecutor
from orchestrator.store.memory import MemoryStore


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def _reseed(path: Path, seed: int) -> None:
    data = yaml.safe_load(path.read_text())
    data["seed"] = seed
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_new_database_refuses_a_run_directory_with_replica_output(tmp_path):
    path = write_campaign(tmp_path, replicas=1)
    db = tmp_path / "camp.h5"
    Driver(config.load(path), db_path=str(db)).run()
    run_dir = tmp_path / "camp.run"
    assert (run_dir / "r0000").is_dir()
    db.unlink()
    _reseed(path, 12)
    before = _listing(tmp_path)
    with pytest.raises(DatabaseError) as err:
        Driver(config.load(path), db_path=str(db)).run()
    msg = str(err.value)
    assert str(run_dir) in msg and "r0000" in msg and "database.run_dir" in msg
    assert "\n" not in msg
    assert _listing(tmp_path) == before  # no new database, nothing deleted or changed


def test_after_the_directory_is_moved_the_new_seed_runs_all_its_own_segments(tmp_path):
    path = write_campaign(tmp_path, replicas=1)
    db = tmp_path / "camp.h5"
    Driver(config.load(path), db_path=str(db)).run()
    db.unlink()
    (tmp_path / "camp.run").rename(tmp_path / "old.run")
    _reseed(path, 12)
    Driver(config.load(path), db_path=str(db)).run()
    fresh = tmp_path / "fresh.h5"
    Driver(config.load(path), db_path=str(fresh)).run()  # its own run dir, fresh.run
    assert_same(digest(db), digest(fresh))


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    path = write_campaign(tmp_path, replicas=1)
    (tmp_path / "camp.run" / "r0000").mkdir(parents=True)
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "r0000" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "camp.h5").exists()


def test_submit_logs_alone_are_not_output(tmp_path):
    """``tams submit`` writes its script and logs under <run dir>/driver before the driver
    starts on a new database."""
    path = write_campaign(tmp_path, replicas=1)
    (tmp_path / "camp.run" / "driver").mkdir(parents=True)
    (tmp_path / "camp.run" / "driver" / "driver.sh").write_text("#!/bin/sh\n")
    Driver(config.load(path), db_path=str(tmp_path / "camp.h5")).run()
    assert (tmp_path / "camp.run" / "r0000").is_dir()


def test_a_fresh_memory_store_refuses_too(tmp_path):
    path = write_campaign(tmp_path, replicas=1)
    loaded = config.load(path)
    run_dir = tmp_path / "work"
    (run_dir / "r0000").mkdir(parents=True)
    store = MemoryStore(CampaignMeta.from_loaded(loaded, str(run_dir)))
    with pytest.raises(DatabaseError, match="r0000"):
        Driver(loaded, store=store, executor=InlineExecutor(), run_dir=run_dir).run()
