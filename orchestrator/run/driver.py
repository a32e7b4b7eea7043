"""The driver: runs every replica of a campaign to the end, resuming what the database holds.

One thread, one loop: submit every segment whose inputs exist, wait for any to finish, hand
it to its replica, submit what that unlocks, commit to the database every
``commit_interval`` seconds.  Replicas never wait for each other.  A segment that fails is
retried ``runner.retries`` times (one lost with its worker — a Slurm block cancelled — is
re-run without counting, up to ``LOST_LIMIT`` times); after that no new segment is submitted, the ones in
flight are ingested, the database is committed and :class:`CampaignFailed` is raised —
``tams run`` then resumes once the cause is fixed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.core.algorithm import Outcome
from orchestrator.config import LoadedCampaign
from orchestrator.store import Writer
from orchestrator.errors import CampaignFailed, ConfigError, DatabaseError
from orchestrator.run.diskuse import dir_bytes
from orchestrator.run.executor import Executor, executor_failed, lost_worker
from orchestrator.imports import ImportPathError
from orchestrator.model import ModelRunError
from orchestrator.registry import adapter_class
from orchestrator.core.ensemble import Replica, Settings, Task
from orchestrator.core.scoring import ScoreError, Scorer

log = logging.getLogger(__name__)

# a segment lost with its worker (block cancelled, node lost) is re-run at most this many times
LOST_LIMIT = 10


def campaign_identity(loaded: LoadedCampaign) -> dict:
    """The parts of a campaign that determine its results (runner and storage excluded)."""
    c = loaded.campaign
    return {"seed": c.seed, "replicas": c.replicas, "model": loaded.model.model_dump(mode="json"),
            "score": c.score.model_dump(mode="json"), "tams": c.tams.model_dump(mode="json")}


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
    """What the driver reports after each batch (the CLI draws it)."""

    replicas: list[Replica]
    in_flight: int
    elapsed: float


class Driver:
    def __init__(self, loaded: LoadedCampaign, db_path: str | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 commit_interval: float = 0.5, max_segments: int | None = None):
        self.loaded = loaded
        self.db_path = loaded.db_path(db_path)
        self.run_dir = loaded.run_dir(self.db_path).resolve()
        self.on_progress = on_progress
        self.commit_interval = commit_interval
        self.max_segments = max_segments  # for tests: stop after this many segments

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
        return model, scorer, spec

    def _open_db(self) -> Writer:
        ld = self.loaded
        ident = campaign_identity(ld)
        fp = fingerprint(ident)
        if self.db_path.exists():
            db = Writer.open(self.db_path)
            if db.fingerprint != fp:
                stored = json.loads(db.f.attrs.get("identity", "{}"))
                db.close()
                diff = _first_difference(stored, ident)
                what = (f"key {diff[0]} is {diff[1]!r} there but {diff[2]!r} in {ld.path}"
                        if diff else "its campaign differs")
                raise DatabaseError(f"{self.db_path}: this database was made by another campaign "
                                    f"({what}); use the original YAML, or a new database.path.")
            return db
        obs = [o.model_dump() for o in ld.model.observable_specs()]
        db = Writer.create(self.db_path, config_text=ld.text, seed=ld.campaign.seed,
                           replicas=ld.campaign.replicas, observables=obs, name=ld.name,
                           fingerprint=fp, identity=json.dumps(ident, sort_keys=True))
        return db

    def settings(self) -> Settings:
        ld, c = self.loaded, self.loaded.campaign
        return Settings(seed=c.seed, n=c.tams.trajectories, k=c.tams.kill_per_iteration,
                        target=c.score.target, score_a=c.score.score_a, horizon=ld.n_steps,
                        max_iterations=c.tams.max_iterations, segment_steps=c.tams.segment_steps,
                        dt=ld.model.dt, noise_mode=ld.model.noise, noise_dim=ld.model.noise_dim,
                        checkpoint_every=ld.model.checkpoint_every,
                        n_obs=len(ld.model.observables), parameters=dict(ld.model.parameters),
                        timeout=c.runner.segment_timeout)

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> list[Replica]:
        model, scorer, spec = self._prepare()
        db = self._open_db()
        t_start = time.monotonic()
        last_wall = t_start
        try:
            db.new_session()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            initial = model.initial_state(str(self.run_dir / "initial"))
            run_dir = str(self.run_dir)
            prefix = run_dir + os.sep
            rel = lambda p: p[len(prefix):] if p.startswith(prefix) else p
            s = self.settings()
            replicas = [Replica(r, s, db, scorer, run_dir, initial, rel)
                        for r in range(self.loaded.campaign.replicas)]
            tasks: list[Task] = []
            for rep in replicas:
                tasks += rep.restore(db.load_replica(rep.r))
            db.commit()
            if not tasks:
                return replicas
            retries = self.loaded.campaign.runner.retries
            keep_live = self.loaded.campaign.database.keep_states == "live"
            failure: BaseException | None = None
            n_done = 0
            last_measure = time.monotonic()
            with Executor(self.loaded.campaign.runner, self.run_dir) as ex:
                pending = {}
                # finished futures arrive here (a callback per future): O(1) per completion,
                # where wait(list(pending)) cost O(in flight) per batch, O(N^2) over an
                # initial ensemble of N trajectories
                finished: queue.SimpleQueue = queue.SimpleQueue()

                def submit(task: Task, attempt: int = 1, lost: int = 0):
                    fut = ex.submit(spec, task.request, collect=attempt == 1)
                    pending[fut] = (task, attempt, lost)
                    fut.add_done_callback(finished.put)

                for task in tasks:
                    submit(task)
                while pending:
                    done = []
                    try:
                        done.append(finished.get(timeout=0.2))
                        while True:
                            done.append(finished.get_nowait())
                    except queue.Empty:
                        pass
                    for fut in done:
                        task, attempt, lost = pending.pop(fut)
                        rep = replicas[task.replica]
                        try:
                            res = fut.result()
                            rep.validate(task.request, res)
                        except Exception as exc:  # model failure, worker lost, ...
                            if lost_worker(exc) and lost < LOST_LIMIT and failure is None:
                                # not the model's fault: run it again, not counted as a retry
                                log.warning("segment %s lost with its worker (%s); re-running it",
                                            task.request.workdir, type(exc).__name__)
                                submit(task, attempt, lost + 1)
                                continue
                            if executor_failed(exc):  # Parsl gave up: the blocks cannot start
                                if failure is None:
                                    failure = exc
                                continue
                            err = exc if isinstance(exc, ModelRunError) else ModelRunError(
                                f"segment {task.request.workdir}: {type(exc).__name__}: {exc}",
                                task.request.workdir)
                            rep.failed += 1
                            if failure is None and err.transient and attempt <= retries:
                                submit(task, attempt + 1)
                            elif failure is None:
                                failure = err
                            continue
                        if attempt > 1:
                            object.__setattr__(res, "attempts", attempt)
                        try:
                            new = rep.on_result(task, res)
                        except ScoreError as exc:
                            raise ConfigError(f"{self.loaded.path}: key score.function: {exc}.") from None
                        n_done += 1
                        if failure is None and not (self.max_segments and n_done >= self.max_segments):
                            for t in new:
                                submit(t)
                    now = time.monotonic()
                    if now - db.last_commit >= self.commit_interval or not pending:
                        db.add_wall_time(now - last_wall)
                        last_wall = now
                        db.commit()
                        self._collect_garbage(replicas, delete=keep_live)
                        if not pending or now - last_measure >= 10.0:
                            last_measure = now
                            db.set_state_bytes(dir_bytes(self.run_dir))
                    if self.on_progress:
                        self.on_progress(Progress(replicas, len(pending), now - t_start))
            if failure is not None and executor_failed(failure):
                raise CampaignFailed(
                    f"the workers could not be started ({self.loaded.campaign.runner.kind}): "
                    f"{' '.join(str(failure).split())[:600]} — see {self.run_dir / 'parsl'} for "
                    f"the block logs; the database {self.db_path} is consistent; fix the cause "
                    f"and run `tams run {self.loaded.path}` again to resume.")
            if failure is not None:
                raise CampaignFailed(
                    f"the model failed after {retries + 1} attempt(s): {failure} — the database "
                    f"{self.db_path} is consistent; fix the cause and run `tams run "
                    f"{self.loaded.path}` again to resume.")
            return replicas
        finally:
            db.add_wall_time(time.monotonic() - last_wall)
            db.close()

    def _collect_garbage(self, replicas: list[Replica], delete: bool) -> None:
        """Delete the directories of trajectories no live trajectory descends from.  Runs only
        after a commit, so a crash can never resume into a state whose files are gone."""
        for rep in replicas:
            for tid in rep.garbage if delete else ():
                shutil.rmtree(Path(rep.run_dir) / f"r{rep.r:04d}" / f"t{tid:07d}", ignore_errors=True)
            rep.garbage.clear()
