"""Regression tests for what a new user hit first, each through the real CLI on real databases:

1. ``tams status DB | head -1`` claimed the database was damaged (a BrokenPipeError was taken
   for an h5py error): a reader that goes away now ends the command quietly, for every command;
2. ``tams check`` named a ``segment.failed-1`` directory kept "for inspection" and then
   deleted it: the directory is now kept, and the message says where.
"""
from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_campaign

_SCRIPT = Path(sys.executable).with_name("tams")
# what a user types: the installed console script (else the module, same code)
TAMS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def tams(cwd: Path, *argv, **env) -> subprocess.CompletedProcess:
    return subprocess.run(TAMS + list(argv), cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_env(**env), check=False)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished 2-replica campaign made by `tams run` (one segment per trajectory: fast)."""
    tmp = tmp_path_factory.mktemp("small")
    path = write_campaign(tmp, tams__segment_steps=400)
    res = tams(tmp, "run", "-q", path.name)
    assert res.returncode == 0, res.stderr
    return tmp, path, tmp / "camp.h5", res.stdout


# --- 1. a closed pipe is not a damaged database --------------------------------------------
@pytest.mark.parametrize("argv, first", [
    (["status", "camp.h5"], "campaign camp: 2/2 replicas done"),
    (["report", "--no-figures", "camp.h5"], "campaign camp (seed 11), 2/2 replicas finished"),
    (["run", "-q", "camp.yaml"], "database: camp.h5"),  # resumes the finished campaign
    (["--help"], "usage: tams"),
])
def test_closed_pipe_ends_quietly(small_run, argv, first):
    """`tams ... | head -1` in a real shell pipe.  Unbuffered output (PYTHONUNBUFFERED=1, as on
    many clusters and in this project's shells) writes line by line, so later lines hit the
    closed pipe for sure; the command must end without a word on stderr and with 0 or 141."""
    tmp, _, db, _ = small_run
    cmd = " ".join(shlex.quote(a) for a in TAMS + argv)
    for _ in range(2):
        res = subprocess.run(["bash", "-c", f'{cmd} | head -1; echo "rc=${{PIPESTATUS[0]}}" >&2'],
                             cwd=tmp, capture_output=True, text=True, timeout=300,
                             env=_env(PYTHONUNBUFFERED="1"), check=False)
        assert res.stdout.startswith(first) and res.stdout.count("\n") == 1, res.stdout
        rc = res.stderr.strip().splitlines()[-1]
        assert rc in ("rc=0", "rc=141"), res.stderr
        assert res.stderr.strip() == rc, f"something was said on stderr: {res.stderr!r}"
    check = tams(tmp, "check-db", db.name)  # and the database is intact
    assert check.returncode == 0 and check.stdout.strip() == "camp.h5: consistent", check


def test_closed_pipe_in_process_is_not_a_damaged_database(small_run, monkeypatch):
    """The same through `orchestrator.cli.main` with stdout on a pipe whose reader is gone."""
    from orchestrator.cli import main
    db = small_run[2]
    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w", buffering=1)  # line-buffered: the first line reaches the pipe
    monkeypatch.setattr(sys, "stdout", out)
    try:
        code = main(["status", str(db)])
    finally:
        monkeypatch.undo()
        try:
            out.close()
        except BrokenPipeError:
            pass
    assert code in (0, 141)


# --- 2. tams check keeps the directory it names -----------------------------------------------
def _failing_campaign(tmp: Path) -> Path:
    exe = tmp / "failing-model"
    exe.write_text("#!/bin/sh\necho 'failing model: the solver diverged at step 3' >&2\nexit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return write_campaign(tmp, model={"adapter": "executable", "executable": str(exe),
                                      "dt": 0.01, "noise": "file", "noise_dim": 2,
                                      "observables": ["x", "y"], "checkpoint_every": 10})


def test_check_keeps_the_failed_segment_directory_it_names(tmp_path):
    scratch = tmp_path / "scratch"  # TMPDIR: where tams check makes its temporary directory
    scratch.mkdir()
    path = _failing_campaign(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = tams(tmp_path, "check", path.name, TMPDIR=str(scratch))
    assert res.returncode == 2, res
    err = res.stderr.strip()
    assert "\n" not in err and err.startswith("tams: error: ") and "Traceback" not in err
    assert "camp.yaml" in err and "exit code 1" in err and "the solver diverged" in err
    m = re.search(r"kept for inspection in (\S+) \(delete (\S+) when done\)", err)
    assert m, err
    kept, parent = Path(m.group(1)), Path(m.group(2))
    assert kept.name == "segment.failed-1" and kept.parent == parent and parent.parent == scratch
    assert kept.is_dir(), f"{kept} is named as kept but does not exist"
    assert "the solver diverged" in (kept / "stderr.txt").read_text()
    assert (kept / "request.json").is_file() and (kept / "request.nml").is_file()
    # every path the message names exists; nothing written next to the campaign
    for p in re.findall(r"(/\S+?)[;),]?(?=\s|$)", err):
        assert Path(p).exists(), f"the message names {p}, which does not exist"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_check_names_no_directory_when_none_is_left(tmp_path):
    """A python step function that raises fails before its segment directory exists: the
    message must not name one, and the temporary directory is gone."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "failing.py").write_text(
        "def step(state, t, dt, noise, eps=0.1):\n    raise RuntimeError('boom')\n")
    path = write_campaign(tmp_path, model__step="failing:step")
    res = tams(tmp_path, "check", path.name, TMPDIR=str(scratch), PYTHONPATH=str(tmp_path))
    assert res.returncode == 2 and "boom" in res.stderr, res
    assert "kept for inspection" not in res.stderr and "tams-check-" not in res.stderr
    assert list(scratch.iterdir()) == []


def test_check_that_passes_leaves_no_temporary_directory(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = write_campaign(tmp_path)
    res = tams(tmp_path, "check", path.name, TMPDIR=str(scratch))
    assert res.returncode == 0 and "check passed" in res.stdout, res
    assert list(scratch.iterdir()) == []
