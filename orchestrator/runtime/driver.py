"""The driver: runs every replica of a campaign to the end, resuming what the store holds.

One thread, one loop: submit every segment whose inputs exist, wait for any to finish, hand
it to its replica's state machine (:class:`~orchestrator.core.ensemble.Ensemble`), record the
events it emits in the store, submit what it unlocks, commit every ``commit_interval``
seconds.  Replicas never wait for each other.  Failures go through the retry policy
(:mod:`orchestrator.runtime.retry`); when it says stop, no new segment is submitted, the ones in
flight are ingested, the store is committed and :class:`CampaignFailed` is raised --
``tams run`` then resumes once the cause is fixed.

SIGTERM and SIGINT only set a flag that the loop reads between segments: a signal can never
land between two rows of one segment, so the committed database is always consistent.  The
driver then commits, records the run as stopped (when and why) and raises
:class:`~orchestrator.errors.Terminated` or :class:`KeyboardInterrupt`.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import LoadedCampaign
from orchestrator.core.ensemble import Ensemble
from orchestrator.core.meta import CampaignMeta, Settings
from orchestrator.core.scoring import ScoreError, Scorer
from orchestrator.core.segments import Task, trajectory_dir
from orchestrator.errors import CampaignFailed, ConfigError, DatabaseError, Terminated
from orchestrator.imports import ImportPathError
from orchestrator.model import ModelRunError
from orchestrator.registry import adapter_class, algorithm
from orchestrator.runtime import slurm
from orchestrator.runtime.diskuse import dir_bytes
from orchestrator.runtime.retry import Action, RetryPolicy
from orchestrator.store.base import Store
from orchestrator.store.hdf5 import HDF5Store

log = logging.getLogger(__name__)

_REPLICA_DIR = re.compile(r"r\d{4,}")  # a replica's directory in the run directory

# a segment lost with its worker (block cancelled, node lost) is re-run at most this many times
LOST_LIMIT = 10

# kept for the bench scripts written before the rebuild
Replica = Ensemble


def campaign_identity(loaded: LoadedCampaign) -> dict:
    """The parts of a campaign that determine its results (runner and storage excluded)."""
    c = loaded.campaign
    ident = {"seed": c.seed, "replicas": c.replicas,
             "model": loaded.model.model_dump(mode="json"),
             "score": c.score.model_dump(mode="json"), "tams": c.tams.model_dump(mode="json")}
    if c.algorithm != "tams":  # absent for TAMS: databases made before the key resume
        ident["algorithm"] = c.algorithm
    if c.gklt is not None:
        ident["gklt"] = c.gklt.model_dump(mode="json")
    return ident


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _first_difference(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
            if d:
                return d
        return None
    return None if a == b else (prefix, a, b)


@dataclass
class Progress:
    """What the driver reports after each batch (the CLI and the Python API draw it)."""

    replicas: list[Ensemble]
    in_flight: int
    elapsed: float
    running: int = 0  # segments running now (at most the workers available)
    queued: int = 0  # submitted, waiting for a worker

    @property
    def done(self) -> int:
        return sum(r.done for r in self.replicas)


@dataclass
class _Pending:
    task: Task
    attempt: int = 1
    lost: int = 0


@dataclass
class _Stop:
    """Why the loop stops submitting (first reason wins)."""

    reason: str = ""
    signal: int = 0
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Driver:
    def __init__(self, loaded: LoadedCampaign, db_path: str | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 commit_interval: float | None = None, max_segments: int | None = None,
                 store: Store | None = None, executor: Any = None,
                 run_dir: str | os.PathLike | None = None):
        self.loaded = loaded
        self.db_path = loaded.db_path(db_path)
        base = Path(run_dir) if run_dir is not None else loaded.run_dir(self.db_path)
        self.run_dir = base.resolve()
        self.on_progress = on_progress
        self.commit_interval = (loaded.campaign.database.commit_interval
                                if commit_interval is None else commit_interval)
        self.max_segments = max_segments  # for tests: stop after this many segments
        self.store = store  # given: a MemoryStore (tests, notebooks); else the HDF5 file
        self.executor = executor  # given: e.g. InlineExecutor; else Parsl from runner
        self.replicas: list[Ensemble] = []
        self.algorithm: Any = Ensemble
        self._resuming = True  # the store has run before (set by run())

    # --- preparation: everything that can fail on bad input, before writing anything --------
    def _prepare(self):
        ld = self.loaded
        cls = adapter_class(ld.model.adapter)
        model = cls.from_config(ld.model, ld.base_dir)
        problems = model.check()
        if problems:
            raise ConfigError(f"{ld.path}: {problems[0]}.")
        try:
            scorer = Scorer(ld.campaign.score.function, ld.campaign.score.parameters, ld.base_dir)
        except ImportPathError as exc:
            raise ConfigError(f"{ld.path}: key score.function: {exc}.") from None
        spec = (ld.model.adapter, ld.model.model_dump(mode="json"), ld.base_dir)
        try:
            self.algorithm = algorithm(ld.campaign.algorithm)
        except KeyError as exc:
            raise ConfigError(f"{ld.path}: key algorithm: {exc}.") from None
        return model, scorer, spec

    def meta(self) -> CampaignMeta:
        return CampaignMeta.from_loaded(self.loaded, str(self.run_dir))

    def settings(self) -> Settings:
        ld = self.loaded
        return Settings(self.meta(), parameters=dict(ld.model.parameters),
                        timeout=ld.campaign.runner.segment_timeout)

    def _open_store(self) -> Store:
        if self.store is not None:
            return self.store
        ld = self.loaded
        ident = campaign_identity(ld)
        fp = fingerprint(ident)
        if self.db_path.exists():
            db = HDF5Store.open(self.db_path)
            # a key absent there and null here (a new optional key) is no difference
            if db.fingerprint != fp and _first_difference(json.loads(db.identity), ident):
                stored = json.loads(db.identity)
                db.close()
                diff = _first_difference(stored, ident)
                what = (f"key {diff[0]} is {diff[1]!r} there but {diff[2]!r} in {ld.path}"
                        if diff else "its campaign differs")
                raise DatabaseError(f"{self.db_path}: this database was made by another campaign "
                                    f"({what}); use the original YAML, or a new database.path.")
            return db
        self._refuse_stale_run_dir()  # before the new file exists: a refusal leaves nothing
        return HDF5Store.create(self.db_path, self.meta(), config_text=ld.text, fingerprint=fp,
                                identity=json.dumps(ident, sort_keys=True))

    def _refuse_stale_run_dir(self) -> None:
        """A new campaign must not find replica directories in its run directory.

        Segments are looked up by path: a finished one found on disk is ingested instead of
        run (that is how a resumed campaign skips work already done).  Replica directories
        left by a campaign whose database was deleted would therefore be taken as this
        campaign's output -- another seed's paths, silently.  (Found by deleting a database
        and running again with another seed: 130 of 643 segments came from the old run.)
        ``driver/`` (``tams submit``'s script and logs) and ``parsl/`` are not output."""
        try:
            stale = sorted(e.name for e in os.scandir(self.run_dir)
                           if e.is_dir() and _REPLICA_DIR.fullmatch(e.name))
        except (FileNotFoundError, NotADirectoryError):
            return
        if stale:
            shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
            raise DatabaseError(
                f"{self.run_dir}: this run directory holds model output ({shown}) of an "
                f"earlier campaign, but the database {self.db_path} is new; delete or move the "
                "directory, or set database.run_dir to an empty one, so that no earlier output "
                "is taken as this campaign's.")

    def _make_executor(self):
        if self.executor is not None:
            return self.executor
        from orchestrator.runtime.executor import Executor
        return Executor(self.loaded.campaign.runner, self.run_dir,
                        job_name=slurm.job_name(self.db_path))

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> list[Ensemble]:
        model, scorer, spec = self._prepare()
        store = self._open_store()
        if self.store is None and self.executor is None:
            # blocks of this campaign still queued or running were left by a driver that was
            # killed (we hold the database's lock: no live driver owns them): cancel them
            gone = slurm.cancel_blocks(slurm.job_name(self.db_path))
            if gone:
                log.warning("cancelled %d Slurm block(s) left by an earlier driver of this "
                            "campaign: %s", len(gone), " ".join(gone))
        t_start = time.monotonic()
        self._last_wall = t_start
        stop = _Stop()
        old_handlers = self._catch_signals(stop)
        try:
            # a store that never ran has no segment on disk (a run directory with replica
            # output is refused for it), so nothing can be collected: no segment asks
            self._resuming = store.run_state().state != "new"
            if self.store is not None and not self._resuming:
                self._refuse_stale_run_dir()  # a fresh store given by the caller
            store.new_session()
            store.set_run_state("running", workers=self.loaded.campaign.runner.workers)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            initial = model.initial_state(str(self.run_dir / "initial"))
            run_dir = str(self.run_dir)
            prefix = run_dir + os.sep

            def rel(p: str) -> str:
                return p[len(prefix):] if p.startswith(prefix) else p

            s = self.settings()
            # the algorithm's replica state machine (orchestrator.core.ensemble.Ensemble for
            # TAMS): start/restore/on_result/drain...; the store and executor are shared
            replicas = [self.algorithm(r, s, scorer, run_dir, initial, rel)
                        for r in range(self.loaded.campaign.replicas)]
            self.replicas = replicas
            tasks: list[Task] = []
            for rep in replicas:
                tasks += rep.restore(store.load_replica(rep.r))
                store.record(rep.drain())
            store.commit()
            if tasks:
                self._loop(store, replicas, tasks, spec, stop, t_start)
            self._tick_wall(store)
            self._finish(store, replicas, stop)
            return replicas
        except BaseException as exc:
            if not isinstance(exc, (CampaignFailed, Terminated, KeyboardInterrupt)):
                try:
                    store.set_run_state("failed", f"{type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001 - the store itself may be what failed
                    pass
            raise
        finally:
            self._restore_signals(old_handlers)
            self._tick_wall(store)
            store.close()

    def _loop(self, store: Store, replicas: list[Ensemble], tasks: list[Task], spec,
              stop: _Stop, t_start: float) -> None:
        runner = self.loaded.campaign.runner
        keep_live = self.loaded.campaign.database.keep_states == "live"
        n_done = 0
        last_measure = time.monotonic()
        commit_every = self.commit_interval
        with self._make_executor() as ex:
            policy = RetryPolicy(runner.retries, ex.is_lost, ex.is_fatal, LOST_LIMIT)
            pending: dict[Any, _Pending] = {}
            # finished futures arrive here (a callback per future): O(1) per completion
            finished: queue.SimpleQueue = queue.SimpleQueue()

            # Tasks beyond the window wait here, not in the executor: every task handed to
            # Parsl holds a task record and, once done, its result (observables, checkpoint
            # columns) until this thread ingests it.  Submitting a whole initial ensemble at
            # once let finished results pile up while the driver, sharing the GIL with thread
            # workers, was behind (~40 kB each: a third of the driver's memory at 64
            # replicas).  A window of a few tasks per worker keeps every worker fed.  Elastic
            # executors (Slurm) get no window: their scaling strategy sizes blocks by the
            # outstanding tasks.  Results do not depend on the order of submission.
            window = ex.window()
            backlog: collections.deque[_Pending] = collections.deque()

            def submit(p: _Pending) -> None:
                if window is not None and len(pending) >= window:
                    backlog.append(p)
                    return
                # a first attempt may find its output from an earlier session on disk
                fut = ex.submit(spec, p.task.request, collect=self._resuming and p.attempt == 1)
                pending[fut] = p
                fut.add_done_callback(finished.put)

            for task in tasks:
                submit(_Pending(task))
            while pending:
                done = []
                try:
                    done.append(finished.get(timeout=0.2))
                    while True:
                        done.append(finished.get_nowait())
                except queue.Empty:
                    pass
                for fut in done:
                    p = pending.pop(fut)
                    rep = replicas[p.task.replica]
                    try:
                        res = fut.result()
                        rep.validate(p.task.request, res)
                    except Exception as exc:  # model failure, worker lost, ...
                        self._on_failure(exc, p, rep, policy, stop, submit)
                        continue
                    try:
                        new = rep.on_result(p.task, res, attempts=p.attempt)
                    except ScoreError as exc:
                        raise ConfigError(f"{self.loaded.path}: key score.function: {exc}.") from None
                    store.record(rep.drain())
                    n_done += 1
                    if self.max_segments and n_done >= self.max_segments and not stop.reason:
                        stop.reason = f"stopped after {n_done} segments (max_segments)"
                    if not stop.reason:
                        for t in new:
                            submit(_Pending(t))
                while backlog and not stop.reason and len(pending) < (window or 0):
                    submit(backlog.popleft())
                if stop.signal:
                    break  # a signal: do not wait for the segments in flight
                now = time.monotonic()
                if now - store.last_commit >= commit_every or not pending:
                    self._tick_wall(store)
                    began = time.monotonic()
                    store.commit()
                    # a commit writes every column of every replica that changed, so its
                    # cost grows with the replicas running at once (0.5 s at 40 replicas
                    # here, most of the run's time at 200 with a 2 s interval): a commit
                    # over 0.1 s waits ten times its duration for the next, so commits stay
                    # about a tenth of the run.  Shorter ones keep the interval asked for
                    # (the states of forgotten trajectories are deleted after commits)
                    spent = time.monotonic() - began
                    commit_every = (max(self.commit_interval, 10.0 * spent) if spent > 0.1
                                    else self.commit_interval)
                    self._collect_garbage(replicas, delete=keep_live)
                    if not pending or now - last_measure >= 10.0:
                        last_measure = now
                        store.set_state_bytes(dir_bytes(self.run_dir))
                if self.on_progress:
                    n = len(pending) + len(backlog)
                    running = min(len(pending), max(0, ex.capacity()))
                    self.on_progress(Progress(replicas, n, now - t_start, running, n - running))
            for rep in replicas:  # what was in flight is not any more (re-run on resume)
                if rep.in_flight:
                    rep.in_flight = 0
                    store.record([rep.summary()])
            store.commit()

    def _tick_wall(self, store: Store) -> None:
        now = time.monotonic()
        store.add_wall_time(now - self._last_wall)
        self._last_wall = now

    def _on_failure(self, exc: BaseException, p: _Pending, rep: Ensemble, policy: RetryPolicy,
                    stop: _Stop, submit) -> None:
        transient = exc.transient if isinstance(exc, ModelRunError) else True
        action = policy.decide(exc, p.attempt, p.lost, transient)
        if action == Action.RERUN_LOST and not stop.reason:
            # not the model's fault: run it again, not counted as a retry
            log.warning("segment %s lost with its worker (%s); re-running it",
                        p.task.request.workdir, type(exc).__name__)
            submit(_Pending(p.task, p.attempt, p.lost + 1))
            return
        if action == Action.STOP_EXECUTOR or (action == Action.RERUN_LOST and policy.is_fatal(exc)):
            if stop.error is None:
                stop.error = exc
                stop.reason = stop.reason or "the workers could not be started"
            return
        if action == Action.RERUN_LOST:
            return  # stopping anyway: it is re-run on resume
        err = exc if isinstance(exc, ModelRunError) else ModelRunError(
            f"segment {p.task.request.workdir}: {type(exc).__name__}: {exc}",
            p.task.request.workdir)
        rep.on_failure()
        if action == Action.RETRY and not stop.reason:
            submit(_Pending(p.task, p.attempt + 1))
        elif stop.error is None:
            stop.error = err
            stop.reason = stop.reason or "the model kept failing"

    def _finish(self, store: Store, replicas: list[Ensemble], stop: _Stop) -> None:
        """Record how the run ended, and raise what the caller must know."""
        ld = self.loaded
        runner = ld.campaign.runner
        if stop.signal:
            name = signal.Signals(stop.signal).name
            store.set_run_state("stopped", f"{name} received")
            store.commit()
            if stop.signal == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated()
        err = stop.error
        if err is not None and not isinstance(err, ModelRunError):
            msg = (f"the workers could not be started ({runner.kind}): "
                   f"{' '.join(str(err).split())[:600]} — see {self.run_dir / 'parsl'} for "
                   f"the block logs; the database {self.db_path} is consistent; fix the cause "
                   f"and run `tams run {ld.path}` again to resume.")
            store.set_run_state("failed", msg)
            raise CampaignFailed(msg)
        if err is not None:
            msg = (f"the model failed after {runner.retries + 1} attempt(s): {err} — the database "
                   f"{self.db_path} is consistent; fix the cause and run `tams run "
                   f"{ld.path}` again to resume.")
            store.set_run_state("failed", msg)
            raise CampaignFailed(msg)
        if all(r.done for r in replicas):
            store.set_run_state("finished")
        else:
            store.set_run_state("stopped", stop.reason or "stopped")

    # --- signals ------------------------------------------------------------------------
    @staticmethod
    def _catch_signals(stop: _Stop) -> dict:
        """SIGTERM/SIGINT set a flag the loop reads (main thread only: Python delivers
        signals there, and a driver in another thread leaves them to its host)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame):
            if not stop.signal:
                stop.signal = signum
                stop.reason = f"{signal.Signals(signum).name} received"
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                pass
        return old

    @staticmethod
    def _restore_signals(old: dict) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _collect_garbage(self, replicas: list[Ensemble], delete: bool) -> None:
        """Delete the directories, and the state files outside them, of trajectories no live
        trajectory descends from.  Runs only after a commit, so a crash can never resume into
        a state whose files are gone."""
        for rep in replicas:
            if delete:
                dirs = [trajectory_dir(rep.run_dir, rep.r, tid) + os.sep for tid in rep.garbage]
                for d in dirs:
                    shutil.rmtree(d, ignore_errors=True)
                inside = tuple(dirs)
                for path in rep.garbage_files:
                    if not path.startswith(inside):  # those went with their directory
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
            rep.garbage.clear()
            rep.garbage_files.clear()
