"""Regression tests for what a new user hit first, each through the real CLI on real databases:

1. ``tams status DB | head -1`` claimed the database was damaged (a BrokenPipeError was taken
   for an h5py error): a reader that goes away now ends the command quietly, for every command.
"""
from __future__ import annotations

import os
import shlex
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
