"""The store interface: events in, committed columnar tables out (emcee's backend idea).

A :class:`Store` records the ensemble's events (:mod:`orchestrator.core.events`) as rows of
the tables of :mod:`orchestrator.store.schema`, buffers them, and makes them durable on
:meth:`Store.commit`; :meth:`Store.load_replica` gives back every committed row (resume, and
the read API).  The mapping from events to rows is written once, here, so the in-memory
store (:mod:`orchestrator.store.memory`) and the HDF5 store (:mod:`orchestrator.store.hdf5`)
hold exactly the same facts; they differ only in where committed rows live.
"""
from __future__ import annotations

import abc
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from orchestrator.core import events as ev
from orchestrator.core.meta import CampaignMeta
from orchestrator.store.schema import SUMMARY, TABLES


@dataclass
class ReplicaRecord:
    """Every committed row of one replica, as numpy columns."""

    tables: dict[str, dict[str, np.ndarray]]
    summary: np.void


@dataclass(frozen=True)
class RunState:
    """What the campaign's driver is doing, or why and when it stopped.

    ``state``: ``new`` (never run), ``running``, ``finished``, ``stopped`` (signal, Ctrl-C),
    ``failed`` (the model kept failing, workers could not start) or ``interrupted`` (the
    driver died without saying so: it was ``running`` but holds no lock any more).
    """

    state: str = "new"
    reason: str = ""
    time: float = 0.0  # seconds since the epoch of the last change
    pid: int = 0
    workers: int = 0  # segments that can run at once (runner.workers) while running

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunState:
        try:
            return cls(**json.loads(text or "{}"))
        except (ValueError, TypeError):
            return cls()


def empty_summary() -> np.void:
    s = np.zeros(1, dtype=SUMMARY)
    s["estimate"] = np.nan
    s["log_estimate"] = np.nan
    s["level"] = np.nan
    return s[0]


def _enc(text: str, n: int) -> bytes:
    return text.encode()[:n]


class Store(abc.ABC):
    """A campaign's store.  Subclasses implement where buffered rows go on commit."""

    meta: CampaignMeta

    def __init__(self, meta: CampaignMeta):
        self.meta = meta
        self.n_replicas = meta.replicas
        self.n_obs = len(meta.observables)
        self._buffers: list[dict[str, dict[str, list]]] = [self._new_buffer()
                                                           for _ in range(self.n_replicas)]
        self._summary = [empty_summary() for _ in range(self.n_replicas)]
        # the newest ReplicaSummary event of each replica since the last commit: an event
        # comes with every segment, and copying its 13 fields into the numpy record cost
        # more than the rest of the segment's rows; only the last one before a commit counts
        self._latest: dict[int, ev.ReplicaSummary] = {}
        self._enc_cache: tuple[Any, tuple] | None = None  # the last provenance, encoded
        self._dirty: set[int] = set()
        self._wall_pending = 0.0
        self.last_commit = time.monotonic()

    @staticmethod
    def _new_buffer() -> dict[str, dict[str, list]]:
        return {t: {c: [] for c in cols} for t, cols in TABLES.items()}

    # --- events -> rows -------------------------------------------------------------------
    def record(self, events: Iterable[Any]) -> None:
        """Buffer the rows of these events (durable after the next :meth:`commit`)."""
        for e in events:
            self._record(e)

    def _record(self, e: Any) -> None:
        r = e.replica
        if isinstance(e, ev.StepsRecorded):
            n = e.steps.shape[0]
            self._append(r, "steps", traj=np.full(n, e.traj, dtype=np.int64), step=e.steps,
                         time=e.times, score=e.scores, obs=e.observables)
        elif isinstance(e, ev.ReplicaSummary):
            self._latest[r] = e
            self._dirty.add(r)
        elif isinstance(e, ev.SegmentRecorded):
            pv = e.provenance
            cached = self._enc_cache
            if cached is None or cached[0] != pv:  # a worker's provenance repeats
                cached = self._enc_cache = (pv, (_enc(pv.host, 64), _enc(pv.slurm_job_id, 32),
                                                 _enc(pv.image_digest, 100),
                                                 _enc(pv.launcher, 16)))
            host, job, image, launcher = cached[1]
            self._append(r, "segments", traj=e.traj, step0=e.step0, n_steps=e.n_steps,
                         first_own=e.first_own, last_own=e.last_own, wall_time=e.wall_time,
                         model_time=e.model_time, attempts=e.attempts, reused=int(e.reused),
                         host=host, pid=pv.pid, slurm_job=job, image=image, launcher=launcher)
        elif isinstance(e, ev.CheckpointsRecorded):
            self._append(r, "checkpoints", traj=np.full(e.steps.size, e.traj, dtype=np.int64),
                         step=e.steps, file=e.files, index=e.index)
        elif isinstance(e, ev.StateFilesRegistered):  # files: one array per event
            self._append(r, "files", path=np.array([p.encode() for p in e.paths],
                                                   dtype=TABLES["files"]["path"]))
        elif isinstance(e, ev.TrajectoryCreated):
            self._append(r, "created", iteration=e.iteration, slot=e.slot, id=e.id,
                         killed=e.killed, parent=e.parent, branch_step=e.branch_step,
                         start_step=e.start_step)
        elif isinstance(e, ev.TrajectoryEnded):
            self._append(r, "trajectories", id=e.id, end_step=e.end_step, status=e.status,
                         max_score=e.max_score)
        elif isinstance(e, ev.IterationDecided):
            self._append(r, "iterations", iteration=e.iteration, level=e.level,
                         n_killed=e.n_killed, log_weight=e.log_weight,
                         weight=math.exp(e.log_weight))
        elif isinstance(e, ev.ReplicaEnded):
            pass  # the summary that follows it holds the outcome
        else:
            raise TypeError(f"a store cannot record {type(e).__name__}")

    def _append(self, replica: int, table: str, **columns: Any) -> None:
        buf = self._buffers[replica][table]
        for col in TABLES[table]:
            buf[col].append(columns[col])
        self._dirty.add(replica)

    def _take_rows(self, replica: int) -> dict[str, dict[str, np.ndarray]]:
        """The buffered rows of a replica as arrays (tables with no new rows left out);
        empties the buffer, and brings ``_summary[replica]`` up to its newest event."""
        e = self._latest.pop(replica, None)
        if e is not None:
            s = self._summary[replica]
            for name in SUMMARY.names or ():
                s[name] = getattr(e, name)
        out = {}
        for table, cols in TABLES.items():
            buf = self._buffers[replica][table]
            if not buf[next(iter(cols))]:
                continue
            arrays = {}
            n_new = None
            for col, dt in cols.items():
                parts = buf[col]
                if table == "steps" and col == "obs":
                    data = np.concatenate([np.asarray(p, dtype=dt).reshape(-1, self.n_obs)
                                           for p in parts])
                elif isinstance(parts[0], np.ndarray):  # columnar events: one array each
                    data = np.concatenate(parts).astype(dt, copy=False)
                else:  # one scalar per row (created, segments, trajectories, ...)
                    data = np.array(parts, dtype=dt)
                if n_new is None:
                    n_new = data.shape[0]
                elif data.shape[0] != n_new:
                    raise AssertionError(f"table {table}: column {col} has {data.shape[0]} "
                                         f"rows, expected {n_new}")
                arrays[col] = data
                parts.clear()
            out[table] = arrays
        return out

    # --- what subclasses provide -----------------------------------------------------------
    @abc.abstractmethod
    def commit(self) -> None:
        """Make every buffered row and the summaries durable, atomically per replica."""

    @abc.abstractmethod
    def load_replica(self, r: int) -> ReplicaRecord:
        """Every committed row of replica r."""

    @abc.abstractmethod
    def set_run_state(self, state: str, reason: str = "", workers: int = 0) -> None:
        """Record what the driver is doing (written at once: it must survive a crash)."""

    @abc.abstractmethod
    def run_state(self) -> RunState: ...

    @abc.abstractmethod
    def wall_time(self) -> float: ...

    @abc.abstractmethod
    def state_bytes(self) -> int: ...

    @abc.abstractmethod
    def set_state_bytes(self, n: int) -> None: ...

    @abc.abstractmethod
    def new_session(self) -> None: ...

    def add_wall_time(self, seconds: float) -> None:
        self._wall_pending += seconds

    def close(self) -> None:
        self.commit()

    @property
    def config_text(self) -> str:
        return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def new_run_state(state: str, reason: str = "", workers: int = 0) -> RunState:
    return RunState(state, " ".join(reason.split())[:1500], time.time(), os.getpid(), workers)
