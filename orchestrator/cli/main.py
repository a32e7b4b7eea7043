"""The ``tams`` command line: run, status, report, export, check.

Bad input never produces a traceback: a :class:`UserError` becomes one line on stderr and
exit status 2.  Ctrl-C and SIGTERM stop the run cleanly (Parsl cleaned up, database
committed) with exit status 130 / 143; ``tams run`` on the same campaign resumes.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

from orchestrator import __version__
from orchestrator.errors import CampaignFailed, Terminated, UserError
from orchestrator.runtime.diskuse import dir_bytes


def _on_sigterm(signum, frame):
    raise Terminated()


def _fmt_p(p: float) -> str:
    return "—" if p is None or not math.isfinite(p) else f"{p:.4g}"


# --- run ---------------------------------------------------------------------------------
class _ProgressView:
    """A rich live view when stderr is a terminal; a line every 10 s otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.live = None
        self.last_line = 0.0
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live
            self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
            self.live.start()

    def _table(self, p):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        t = Table(title=f"TAMS — segments: {p.running} running, {p.queued} queued — "
                  f"{p.elapsed:.0f} s",
                  title_justify="left")
        for col in ("replica", "iteration", "level", "progress", "running p", "state"):
            t.add_column(col)
        reps = p.replicas
        shown = [r for r in reps if not r.done][:12] or reps[-12:]
        for r in shown:
            target = r.s.target
            frac = 0.0 if not math.isfinite(r.level) else max(0.0, min(1.0, r.level / target))
            t.add_row(str(r.r), str(r.iteration), _fmt_p(r.level),
                      ProgressBar(total=1.0, completed=1.0 if r.done else frac, width=20),
                      _fmt_p(r.running_estimate()), r.outcome.name.lower())
        done = sum(r.done for r in reps)
        t.caption = f"{done}/{len(reps)} replicas done"
        return t

    def __call__(self, p):
        if not self.enabled:
            return
        if self.live is not None:
            # the view redraws 4 times a second; building its table after every segment
            # (hundreds a second) cost more than the segments' own bookkeeping
            now = time.monotonic()
            if now - self.last_line >= 0.25 or p.in_flight == 0:
                self.last_line = now
                self.live.update(self._table(p))
        elif time.monotonic() - self.last_line > 10:
            self.last_line = time.monotonic()
            done = sum(r.done for r in p.replicas)
            active = [r for r in p.replicas if not r.done]
            lv = min((r.level for r in active), default=math.nan)
            print(f"[{p.elapsed:6.0f} s] replicas done {done}/{len(p.replicas)}, "
                  f"lowest level {_fmt_p(lv)}, segments {p.running} running, {p.queued} queued",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.live is not None:
            self.live.stop()


def cmd_run(args) -> int:
    from orchestrator.config import load
    from orchestrator.runtime.driver import Driver
    loaded = load(args.campaign)
    view = _ProgressView(not args.quiet)
    driver = Driver(loaded, db_path=args.db, on_progress=view)
    try:
        driver.run()
    finally:
        view.close()
    print(f"database: {driver.db_path}")
    return report(driver.db_path, figures=False)


# --- status / report ---------------------------------------------------------------------
def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"


def run_state_line(db) -> str:
    """What the driver does, or when and why it stopped: a run that stopped (signal, model
    failure) must not look as if it still ran."""
    rs = db.run_state()
    active = db.writer_active()
    if rs.state == "running" and active:
        return f"run: running (driver pid {rs.pid}, since {_when(rs.time)})"
    if rs.state == "running":
        return (f"run: interrupted — the driver (pid {rs.pid}, started {_when(rs.time)}) died "
                "without stopping cleanly; `tams run` on the campaign resumes it")
    if rs.state == "finished":
        return f"run: finished at {_when(rs.time)}"
    if rs.state in ("stopped", "failed"):
        why = f" — {rs.reason}" if rs.reason else ""
        return f"run: {rs.state} at {_when(rs.time)}{why}"
    return "run: not started"


def cmd_status(args) -> int:
    from orchestrator.store import Database
    with Database(args.database) as db:
        reps = db.replicas()
        done = sum(v.outcome != 0 for v in reps)
        run_dir = db.run_dir()
        if run_dir.is_dir():
            states = f"states on disk {dir_bytes(run_dir) / 1e6:.1f} MB ({run_dir})"
        else:  # e.g. the run directory moved: the driver's last figure
            states = (f"states on disk {db.state_bytes() / 1e6:.1f} MB (as last measured by the "
                      f"driver; {run_dir} not found from here)")
        rs = db.run_state()
        live = rs.state == "running" and db.writer_active()
        print(f"campaign {db.name}: {done}/{len(reps)} replicas done, wall time "
              f"{db.wall_time():.1f} s, {states}")
        print(run_state_line(db))
        for line in _slurm_lines(args.database):
            print(line)
        in_flight = sum(v.in_flight for v in reps) if live else 0
        if live:
            running = min(in_flight, rs.workers) if rs.workers else in_flight
            print(f"segments: {running} running, {in_flight - running} queued "
                  f"({rs.workers} workers)")
        print(f"{'replica':>7} {'state':>14} {'iter':>6} {'level':>9} {'p (running)':>12} "
              f"{'in flight':>9} {'failed':>6} {'segments':>8} {'steps':>10}")
        n = db.meta.n
        for v in reps:
            run_p = math.exp(v.log_weight) * v.n_reached / n if v.n_reached else 0.0
            p = v.estimate if v.outcome != 0 else run_p
            state = v.outcome.name.lower()
            if v.outcome == 0 and not live:
                state = "stopped" if rs.state in ("stopped", "failed") else "interrupted"
            print(f"{v.index:>7} {state:>14} {v.iterations:>6} {_fmt_p(v.level):>9} "
                  f"{_fmt_p(p):>12} {v.in_flight if live else 0:>9} {v.failed_segments:>6} "
                  f"{v.segments:>8} {v.model_steps:>10}")
        print(_eta(db, reps) if live or done == len(reps) else
              "ETA: none while stopped (run `tams run` on the campaign to resume)")
    return 0


def _slurm_lines(database) -> list[str]:
    """The campaign's Slurm jobs (`tams submit`'s driver jobs, blocks), if Slurm is here."""
    from orchestrator.runtime import slurm
    name = slurm.job_name(database)
    jobs = slurm.jobs(name)
    drivers = [j for j in jobs if j.name == name + slurm.DRIVER]
    blocks = [j for j in jobs if j.name.startswith(name + slurm.BLOCK)]
    out = []
    for j in drivers:
        if j.state == "PENDING":
            out.append(f"driver job: {j.id} pending ({j.reason}) — continues the campaign")
        else:
            out.append(f"driver job: {j.id} {j.state.lower()} on {j.reason}, {j.time} of "
                       f"{j.time_limit}")
    if blocks:
        states = sorted({j.state.lower() for j in blocks})
        out.append(f"blocks: {len(blocks)} ({', '.join(states)}): "
                   f"{' '.join(j.id for j in blocks)}")
    return out


def _eta(db, reps) -> str:
    """A rough time to completion.  Per running replica, the expected number of iterations
    J = log p / log(1 - k/N) (the weight falls by (1 - k/N) per iteration), with log p taken
    from the finished replicas (mean log-estimate), else from the running estimates of the
    replicas where trajectories already reached the target, else extrapolated from each replica's
    levels (log W linear in the level over the recent half of its iterations, extrapolated
    to the target).  Remaining iterations times the driver's wall time per iteration so far."""
    n, k, target = db.meta.n, db.meta.k, db.meta.target
    per_iter = math.log1p(-k / n)
    running = [v for v in reps if v.outcome == 0]
    if not running:
        return "ETA: done"
    done_iters = sum(v.iterations for v in reps)
    if done_iters == 0:
        return "ETA: unknown (initial ensemble running)"
    logs = [v.log_estimate for v in reps if v.outcome != 0 and math.isfinite(v.log_estimate)]
    if not logs:  # running estimates W_j n_reached / N of the replicas where some reached B
        logs = [v.log_weight + math.log(v.n_reached / n) for v in running if v.n_reached > 0]
    remaining = 0.0
    for v in running:
        if logs:
            log_p = sum(logs) / len(logs)
        else:
            it = db.iterations(v.index)
            lv, lw = it["level"], it["log_weight"]
            h = lv.size // 2  # the recent half: the level rises fastest at the start
            if lv.size < 4 or not lv[-1] > lv[h]:
                return "ETA: unknown (too few iterations)"
            log_p = lw[-1] + (lw[-1] - lw[h]) * (target - lv[-1]) / (lv[-1] - lv[h])
        remaining += max(0.0, log_p / per_iter - v.iterations)
    wall = db.wall_time()
    if wall <= 0:
        return "ETA: unknown"
    secs = wall * remaining / done_iters
    when = f"{secs:.0f} s" if secs < 120 else (f"{secs / 60:.0f} min" if secs < 7200
                                                else f"{secs / 3600:.1f} h")
    return (f"ETA: ~{when} (about {remaining:.0f} more iterations at "
            f"{wall / done_iters:.3g} s each; rough)")


def report(path, figures=False, reference=None, return_times_of=None) -> int:
    from orchestrator.cli.report import report as _report
    return _report(path, figures=figures, reference=reference, return_times_of=return_times_of)


def cmd_report(args) -> int:
    figures = args.figures if args.figures else (False if args.no_figures else True)
    return report(args.database, figures=figures, reference=args.reference,
                  return_times_of=args.return_times)


def cmd_export(args) -> int:
    from orchestrator.store import Database
    from orchestrator.store.export import export
    with Database(args.database) as db:
        if db.meta.algorithm == "gklt":  # its trajectory weights are not the TAMS ones
            raise UserError(f"{args.database}: tams export does not write GKLT weights yet (its "
                            "weight columns would hold TAMS weights); use `tams report` or the "
                            "Python API's RunResult.diagnostics() for GKLT estimates.")
        out = export(db, args.format, args.out)
    print(f"exported: {out}")
    return 0


def cmd_check(args) -> int:
    from orchestrator.cli.check import check
    return check(args.campaign, n_steps=args.steps, guess_p=args.guess_p)


def _cmd_check_db(args) -> int:
    from orchestrator.cli.checkdb import cmd_check_db
    return cmd_check_db(args)


def _yaml_error():
    import yaml
    return yaml.YAMLError  # a damaged database's stored campaign YAML


def _closed_outputs() -> list:
    """Those of stdout and stderr that are pipes whose reader has gone (``tams status DB |
    head -1``).

    A BrokenPipeError can also come from elsewhere (a socket to a Parsl worker): only one on
    our own output means "the reader has what it wanted", so ask the kernel rather than guess
    from the exception: poll() flags the write end of a pipe without readers with POLLERR.
    Without poll() (Windows) a BrokenPipeError is taken to be stdout's."""
    import select
    if not hasattr(select, "poll"):
        return [sys.stdout]
    closed = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # captured or replaced streams
            continue
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(ev & select.POLLERR for _, ev in poller.poll(0)):
            closed.append(stream)
    return closed


def _quiet_exit(streams) -> int:
    """End after the reader of our output went away: silently, with the status a program
    killed by SIGPIPE has (128 + 13 = 141), as `yes | head -1` does.  The closed streams are
    pointed at /dev/null first, so that the interpreter's final flush of what is still
    buffered does not print "Exception ignored ... BrokenPipeError" on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    os.close(devnull)
    return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tams", description="TAMS rare-event estimation over "
                                     "external forward models.")
    parser.add_argument("--version", action="version", version=f"tams {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run (or resume) a campaign")
    p.add_argument("campaign", help="the campaign YAML file")
    p.add_argument("--db", help="database path (overrides database.path)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(fn=cmd_run)
    from orchestrator.cli.submit import add_parsers as submit_parsers
    submit_parsers(sub)
    p = sub.add_parser("status", help="show a campaign's progress (works during a run)")
    p.add_argument("database")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("report", help="estimate with its confidence interval across replicas, "
                       "cost, figures, return times")
    p.add_argument("database")
    p.add_argument("--figures", metavar="DIR", help="folder of the PNG figures "
                   "(default: the database path with .report instead of .h5)")
    p.add_argument("--no-figures", action="store_true", help="text only")
    p.add_argument("--reference", metavar="P", type=float,
                   help="a known probability, drawn on the estimates figure")
    p.add_argument("--return-times", metavar="QUANTITY",
                   help="return-time curve of the maximum of `score` or of an observable")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("export", help="export trajectories, iterations and estimates")
    p.add_argument("database")
    p.add_argument("--format", choices=("netcdf", "csv"), default="netcdf")
    p.add_argument("--out", metavar="PATH", help="output file (netcdf) or folder (csv); default "
                   "the database path with .nc or .csv")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("check", help="validate a campaign; prove on a few steps that the model "
                       "runs, is deterministic and restarts exactly; show its cost")
    p.add_argument("campaign")
    p.add_argument("--steps", metavar="N", type=int, help="steps of the test segment (default "
                   "100 or two checkpoint intervals up to 1000, whichever is more, at most the horizon)")
    p.add_argument("--guess-p", metavar="P", type=float, help="a guess of the probability: "
                   "estimate the campaign's iterations, model steps, wall time and state disk")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("check-db", help="check a database's internal consistency (exit 0 if "
                       "consistent, 2 with one line per problem)")
    p.add_argument("database")
    p.set_defaults(fn=_cmd_check_db)
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, --version or a usage error, printed but maybe not yet flushed
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # `tams --help | head -1`
            return _quiet_exit([sys.stdout])
        raise
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = args.fn(args)
        # flush here, not at interpreter exit, so that a reader gone away is handled below
        sys.stdout.flush()
        return code
    except UserError as exc:
        # one line, whatever the message quotes (a model's multi-line exception, stderr tail)
        print(f"tams: error: {' / '.join(filter(None, map(str.strip, str(exc).splitlines())))}",
              file=sys.stderr)
        return exc.exit_code
    except (OSError, KeyError, ValueError, IndexError, _yaml_error()) as exc:
        closed = _closed_outputs() if isinstance(exc, BrokenPipeError) else []
        if closed:  # the reader of our output has gone (`| head`): not a damaged database
            return _quiet_exit(closed)
        if args.command not in ("status", "report", "check-db", "export"):
            raise
        # h5py's errors on a damaged database (checksum, filter, truncated data)
        what = " ".join(str(exc).split())
        print(f"tams: error: {args.database}: cannot be read ({type(exc).__name__}: {what}); the "
              "file is damaged or not a tams database — restore it from a copy or re-run the "
              "campaign into a new database.path.", file=sys.stderr)
        return 2
    except CampaignFailed as exc:
        print(f"tams: campaign stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tams: interrupted; the database is consistent — run the same command to resume.",
              file=sys.stderr)
        return 130
    except Terminated:
        print("tams: terminated; the database is consistent — run the same command to resume.",
              file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
