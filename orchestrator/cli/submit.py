"""`tams submit`: the driver itself as a chain of Slurm batch jobs (docs/hpc.md).

``tams submit CAMPAIGN.yaml`` writes a batch script (``<run_dir>/driver/driver.sh``) and
submits it.  Each job of the chain, at its start, submits its own follow-up, dependent on it
(``--dependency=afterany:<this job>``), then runs the campaign as ``tams run`` does:

- ``grace`` seconds before its walltime Slurm sends SIGUSR1 (``--signal=B:USR1@grace``); the
  driver stops cleanly (blocks cancelled, database committed) and the job ends; the follow-up
  starts and resumes (a resumed campaign is bit for bit the uninterrupted one);
- killed outright (SIGKILL, the node lost) it leaves the follow-up to resume as well;
- when the campaign is finished, fails (a model error, blocks that cannot start) or the job
  is cancelled by its user (`scancel` sends SIGTERM), the driver cancels the follow-up, so
  nothing is left in the queue.

At most ``--max-jobs`` jobs run in a chain (a guard against a chain that makes no progress).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from orchestrator.errors import CampaignFailed, Terminated, UserError
from orchestrator.runtime import slurm

WALLTIME_DEFAULT = "1-00:00:00"


def _seconds(walltime: str) -> int:
    """Slurm's `[D-]HH:MM:SS` (or `MM:SS`, `MM`) in seconds."""
    days, _, rest = walltime.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if len(parts) == 1:  # minutes
        parts = [0, parts[0], 0]
    elif len(parts) == 2:  # MM:SS
        parts = [0, *parts]
    h, m, s = parts
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def _check_walltime(walltime: str, grace: int) -> None:
    import re
    if not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}|\d+", walltime):
        raise UserError(f"tams submit: --walltime {walltime!r} is not a Slurm time; give "
                        "HH:MM:SS, D-HH:MM:SS or minutes, e.g. --walltime 12:00:00.")
    if grace < 10 or _seconds(walltime) < grace + 10:
        raise UserError(f"tams submit: --grace {grace} must be >= 10 s and leave the driver at "
                        f"least 10 s of its --walltime {walltime}; raise --walltime or lower "
                        "--grace.")


def _paths(args):
    from orchestrator.config import load
    loaded = load(args.campaign)
    db = loaded.db_path(args.db).resolve()
    run_dir = (loaded.run_dir(db)).resolve()
    return loaded, db, run_dir


def cmd_submit(args) -> int:
    """Submit the first driver job of the chain."""
    _check_walltime(args.walltime, args.grace)
    if not slurm.available():
        raise UserError("tams submit: Slurm's squeue/sbatch are not on PATH; run it on a "
                        "cluster's login node, or use `tams run` here.")
    loaded, db, run_dir = _paths(args)
    name = slurm.job_name(db)
    running = [j for j in slurm.jobs(name) if j.name == name + slurm.DRIVER]
    if running:
        raise UserError(f"tams submit: the campaign {db} already has driver job(s) "
                        f"{', '.join(f'{j.id} ({j.state.lower()})' for j in running)}; "
                        f"wait for them, or cancel them with `scancel --name={name}.driver`.")
    from orchestrator.store import Database
    if db.exists():
        with Database(db) as d:
            if d.writer_active():
                raise UserError(f"tams submit: {db} is being written by a running `tams run`; "
                                "stop it first (Ctrl-C), then submit.")
    slurm.cancel_blocks(name)  # left by a killed driver: the lock is free, nobody owns them
    sl = getattr(loaded.campaign.runner, "slurm", None)
    log_dir = run_dir / "driver"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "jobs").write_text("")  # a new chain
    command = [sys.executable, "-m", "orchestrator.cli", "driver-job",
               str(Path(args.campaign).resolve()), "--db", str(db),
               "--max-jobs", str(args.max_jobs)]
    script = log_dir / "driver.sh"
    script.write_text(slurm.driver_script(
        name=name, command=command, workdir=Path.cwd(), log_dir=log_dir,
        walltime=args.walltime, grace=args.grace,
        partition=args.partition or (sl.partition if sl else None),
        account=args.account or (sl.account if sl else None),
        qos=args.qos or (sl.qos if sl else None), options=args.sbatch_options or ""))
    try:
        job = slurm.sbatch(script)
    except slurm.SubmitError as exc:
        raise UserError(f"tams submit: sbatch refused the driver job: {exc}; check "
                        f"--partition/--account/--qos (the script is {script}).") from None
    print(f"submitted driver job {job} ({name}.driver, walltime {args.walltime}); it continues "
          f"in follow-up jobs until the campaign is done")
    print(f"progress: tams status {db}; driver logs: {log_dir}/driver-<job>.out")
    return 0


def cmd_driver_job(args) -> int:
    """One job of the chain: submit the follow-up, run the campaign, keep or cancel it."""
    from orchestrator.cli.main import report
    from orchestrator.config import load
    from orchestrator.runtime.driver import Driver

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        raise UserError("tams driver-job: runs inside the batch job `tams submit` makes "
                        "(no SLURM_JOB_ID here); use `tams submit` or `tams run`.")
    loaded = load(args.campaign)
    db = Path(args.db).resolve()
    log_dir = loaded.run_dir(db).resolve() / "driver"
    jobs_file = log_dir / "jobs"
    with open(jobs_file, "a") as fh:
        fh.write(job + "\n")
    n = len(jobs_file.read_text().split())
    print(f"tams: driver job {job}, number {n} of the chain", flush=True)
    if n > args.max_jobs:
        raise CampaignFailed(f"the chain reached --max-jobs {args.max_jobs} driver jobs "
                             f"without finishing; `tams status {db}` shows where it is; "
                             "`tams submit` again (with a longer --walltime) continues it.")
    script = log_dir / "driver.sh"
    try:
        follow = slurm.sbatch(script, f"--dependency=afterany:{job}")
    except slurm.SubmitError as exc:  # this job still runs; resubmit by hand afterwards
        print(f"tams: warning: could not submit the follow-up job ({exc}); "
              f"`tams submit` continues the campaign after this job", file=sys.stderr)
        follow = ""
    print(f"tams: follow-up job {follow or 'none'} waits for this one", flush=True)

    walltime = []

    def on_usr1(signum, frame):  # Slurm: the walltime is near
        walltime.append(True)
        os.kill(os.getpid(), signal.SIGTERM)  # the driver's clean stop between segments

    old = signal.signal(signal.SIGUSR1, on_usr1)
    keep_follow = False
    try:
        Driver(loaded, db_path=str(db)).run()
    except Terminated:
        keep_follow = bool(walltime)
        if keep_follow:
            print(f"tams: the walltime is near: stopped cleanly; job {follow} continues",
                  flush=True)
            return 0
        raise
    finally:
        signal.signal(signal.SIGUSR1, old)
        if not keep_follow and follow:
            slurm.cancel([follow])
    print(f"database: {db}")
    return report(db, figures=False)


def add_parsers(sub) -> None:
    p = sub.add_parser("submit", help="run the campaign's driver as a chain of Slurm jobs that "
                       "stop cleanly before their walltime and continue in the next")
    p.add_argument("campaign", help="the campaign YAML file")
    p.add_argument("--db", help="database path (overrides database.path)")
    p.add_argument("--walltime", default=WALLTIME_DEFAULT, metavar="TIME",
                   help="walltime of each driver job, HH:MM:SS or D-HH:MM:SS "
                   f"(default {WALLTIME_DEFAULT})")
    p.add_argument("--grace", type=int, default=120, metavar="SECONDS",
                   help="the driver stops this long before its walltime (default 120)")
    p.add_argument("--partition", help="partition of the driver jobs (default "
                   "runner.slurm.partition, else the cluster's default)")
    p.add_argument("--account", help="account (default runner.slurm.account)")
    p.add_argument("--qos", help="quality of service (default runner.slurm.qos)")
    p.add_argument("--sbatch-options", metavar="LINES", help="extra `#SBATCH ...` lines for "
                   "the driver's script, e.g. '#SBATCH --mem=4G'")
    p.add_argument("--max-jobs", type=int, default=100, metavar="N",
                   help="most driver jobs in the chain (default 100)")
    p.set_defaults(fn=cmd_submit)
    p = sub.add_parser("driver-job", help="(what the batch job of `tams submit` runs)")
    p.add_argument("campaign")
    p.add_argument("--db", required=True)
    p.add_argument("--max-jobs", type=int, default=100)
    p.set_defaults(fn=cmd_driver_job)

