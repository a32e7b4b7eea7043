"""The Slurm command line (`sbatch`, `squeue`, `scancel`): the one place the project calls it.

Parsl submits, polls and cancels the *blocks* itself (runtime/executor.py); this module does
what Parsl cannot know about:

- every Slurm job of a campaign carries the campaign's **job name** (:func:`job_name`, from
  the database path): blocks are ``NAME.block-N.<time>``, the driver's own jobs (``tams
  submit``) ``NAME.driver``.  So a block left behind by a driver that was killed is found by
  name and cancelled by the next ``tams run``/``tams submit`` of the campaign
  (:func:`cancel_blocks`), and ``tams status`` finds the campaign's jobs (:func:`jobs`);
- ``tams submit`` writes and submits the driver's batch script (:func:`submit_driver`).

Every function is a no-op (or returns nothing) where Slurm's commands are not installed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BLOCK = ".block-"
DRIVER = ".driver"


def job_name(db_path: str | os.PathLike) -> str:
    """The campaign's Slurm job name: `tams-<database stem>-<hash of its absolute path>`;
    readable in `squeue` and unique per database."""
    path = Path(db_path).resolve()
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)[:24]
    return f"tams-{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def available() -> bool:
    return shutil.which("squeue") is not None


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    state: str  # squeue's long state: PENDING, RUNNING, COMPLETING, ...
    time: str  # time used
    time_limit: str
    reason: str  # why pending, or the node list


def jobs(name: str) -> list[Job]:
    """This user's jobs whose name is `name` or starts with `name.` (queued or running)."""
    if not available():
        return []
    try:
        res = subprocess.run(["squeue", "--me", "-h", "-o", "%i|%j|%T|%M|%l|%R"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # the controller is down or slow
        return []
    if res.returncode != 0:
        return []
    out = []
    for line in res.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 6 and (parts[1] == name or parts[1].startswith(name + ".")):
            out.append(Job(*parts))
    return out


def cancel(ids: list[str]) -> None:
    if ids and available():
        try:
            subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):  # best effort: the blocks end by themselves
            pass


def cancel_blocks(name: str) -> list[str]:
    """Cancel the blocks of campaign `name` still queued or running (left by a driver that was
    killed); the caller holds the database's lock, so no live driver owns them.  The ids."""
    ids = [j.id for j in jobs(name) if j.name.startswith(name + BLOCK)]
    cancel(ids)
    return ids


class SubmitError(Exception):
    """`sbatch` refused the driver's job: its message."""


def sbatch(script: Path, *options: str) -> str:
    """Submit a batch script; its job id."""
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch is not on PATH (is this a Slurm cluster's login node?)")
    try:
        res = subprocess.run(["sbatch", "--parsable", *options, str(script)],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SubmitError(f"sbatch did not answer ({exc})") from None
    if res.returncode != 0:
        raise SubmitError(" ".join(res.stderr.split()) or f"sbatch exited {res.returncode}")
    return res.stdout.strip().split(";")[0]


def driver_script(*, name: str, command: list[str], workdir: Path, log_dir: Path,
                  walltime: str, grace: int, partition: str | None, account: str | None,
                  qos: str | None, options: str = "") -> str:
    """The driver's batch script.  Slurm sends SIGUSR1 to the batch shell `grace` seconds
    before the walltime (`--signal=B:USR1@grace`); the shell is replaced by the driver
    (`exec`), which stops cleanly on it and leaves the campaign to its follow-up job."""
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={name}{DRIVER}",
             "#SBATCH --ntasks=1",
             "#SBATCH --cpus-per-task=1",
             f"#SBATCH --time={walltime}",
             f"#SBATCH --signal=B:USR1@{grace}",
             f"#SBATCH --output={log_dir}/driver-%j.out",
             f"#SBATCH --chdir={workdir}",
             "#SBATCH --no-requeue"]
    lines += [f"#SBATCH --{k}={v}" for k, v in
              (("partition", partition), ("account", account), ("qos", qos)) if v]
    lines += [ln for ln in options.splitlines() if ln.strip()]
    lines += ["", "exec " + " ".join(shlex.quote(c) for c in command), ""]
    return "\n".join(lines)
