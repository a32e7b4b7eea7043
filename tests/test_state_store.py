"""Bounded state store (issue #3): with `keep_states: live` the run directory's disk use stays
bounded however many iterations run, and no state a live trajectory may branch from is ever
deleted."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_campaign
from orchestrator import config
from orchestrator.cli import main
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database
from test_executable import DW2D, FORTRAN_MODEL

pytestmark = [pytest.mark.skipif(not DW2D.exists(), reason="build the models: make -C containers"),
              pytest.mark.slow]  # a long Fortran campaign watched for its disk use


def du(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:  # deleted under our feet
                        pass
        except OSError:
            pass
    return total


# issue 15: the same with every checkpoint of a segment in one file (and a binary trace)
FEW_FILES = {**FORTRAN_MODEL, "checkpoint_file": "checkpoints.bin", "trace_format": "binary",
             "trace_file": "trace.bin"}


def long_campaign(tmp_path, keep, model=FORTRAN_MODEL, **kw):
    return write_campaign(tmp_path, keep, replicas=1, model=model, tams__trajectories=10,
                          tams__kill_per_iteration=1, tams__horizon=3.0, tams__segment_steps=100,
                          tams__max_iterations=60, runner__workers=2, database__keep_states=keep,
                          **kw)


def run_sampled(path, db) -> tuple[list[tuple[float, int]], Path]:
    driver = Driver(config.load(path), db_path=str(db), commit_interval=0.05)
    samples, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            samples.append((time.monotonic(), du(driver.run_dir)))
            time.sleep(0.05)

    th = threading.Thread(target=poll)
    th.start()
    try:
        driver.run()
    finally:
        stop.set()
        th.join()
    samples.append((time.monotonic(), du(driver.run_dir)))
    return samples, driver.run_dir


@pytest.mark.parametrize("model", [FORTRAN_MODEL, FEW_FILES], ids=["file-per-checkpoint",
                                                                     "checkpoint-file"])
def test_live_states_bounded_and_sufficient(tmp_path, monkeypatch, capsys, model):
    monkeypatch.chdir(tmp_path)
    states = tmp_path / "states-live"  # database.run_dir: `tams status` must measure it
    samples, run_dir = run_sampled(long_campaign(tmp_path, "live", model,
                                                 database__run_dir=str(states)),
                                   tmp_path / "live.h5")
    assert run_dir == states
    _, all_dir = run_sampled(long_campaign(tmp_path, "all", model), tmp_path / "all.h5")
    with Database(tmp_path / "live.h5") as db:
        assert db.replica(0).iterations >= 50  # long enough to show growth, if any
        created = db.table(0, "created")
        ck = db.table(0, "checkpoints")
        files = db.table(0, "files")
        ensemble = db.ensemble(0)
    t = np.array([s[0] for s in samples])
    size = np.array([s[1] for s in samples])
    # halves of the run itself: from the first state on disk (Parsl's start-up before it
    # could otherwise fill the "first half" with zeros on a fast driver)
    t, size = t[np.argmax(size > 0):], size[np.argmax(size > 0):]
    half = t[0] + (t[-1] - t[0]) / 2
    first, second = size[t <= half].max(), size[t > half].max()
    full = du(all_dir)
    with capsys.disabled():
        print(f"\nlive: max first half {first}, second half {second}, final {size[-1]}; all: {full} bytes")
    assert second <= 1.5 * first, (first, second)
    assert size.max() < 0.5 * full, (size.max(), full)

    # every checkpoint of the final ensemble and of its ancestors is still on disk
    parent = dict(zip(created["id"].tolist(), created["parent"].tolist()))
    needed = set()
    for tid in ensemble.tolist():
        while tid >= 0 and tid not in needed:
            needed.add(tid)
            tid = parent[tid]
    rows = np.isin(ck["traj"], sorted(needed))
    paths = {files["path"][f].decode() for f in np.unique(ck["file"][rows])}
    assert len(paths) >= len(ensemble)
    missing = [p for p in paths if not (run_dir / p).is_file() or (run_dir / p).stat().st_size == 0]
    assert not missing, missing[:5]
    # and dead trajectories' directories are gone
    dead = set(created["id"].tolist()) - needed
    assert dead and not any((run_dir / "r0000" / f"t{d:07d}").exists() for d in dead)

    # `tams status` reports the disk use of the run directory
    capsys.readouterr()
    assert main(["status", str(tmp_path / "live.h5")]) == 0
    out = capsys.readouterr().out
    mb = float(out.split("states on disk ")[1].split(" MB")[0])
    assert mb == pytest.approx(du(run_dir) / 1e6, abs=0.05) and mb > 0 and str(states) in out
    with Database(tmp_path / "live.h5") as db:  # the driver's own figure, at its end
        assert db.state_bytes() == du(run_dir)
