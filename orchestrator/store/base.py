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
        # per replica and table, the buffered rows: one tuple per event, in the table's column
        # order (for steps and checkpoints the trajectory id, then the event's arrays); the
        # columns are built once per commit (:meth:`_take_rows`), not per event
        self._buffers: list[dict[str, list[tuple]]] = [self._new_buffer()
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
    def _new_buffer() -> dict[str, list[tuple]]:
        return {t: [] for t in TABLES}

    # --- events -> rows -------------------------------------------------------------------
    def record(self, events: Iterable[Any]) -> None:
        """Buffer the rows of these events (durable after the next :meth:`commit`)."""
        for e in events:
            self._record(e)

    def _record(self, e: Any) -> None:
        r = e.replica
        buf = self._buffers[r]
        if isinstance(e, ev.StepsRecorded):
            buf["steps"].append((e.traj, e.steps, e.times, e.scores, e.observables))
        elif isinstance(e, ev.ReplicaSummary):
            self._latest[r] = e
        elif isinstance(e, ev.SegmentRecorded):
            pv = e.provenance
            cached = self._enc_cache
            if cached is None or cached[0] != pv:  # a worker's provenance repeats
                cached = self._enc_cache = (pv, (_enc(pv.host, 64), _enc(pv.slurm_job_id, 32),
                                                 _enc(pv.image_digest, 100),
                                                 _enc(pv.launcher, 16)))
            host, job, image, launcher = cached[1]
            buf["segments"].append((e.traj, e.step0, e.n_steps, e.first_own, e.last_own,
                                    e.wall_time, e.model_time, e.attempts, int(e.reused),
                                    host, pv.pid, job, image, launcher))
        elif isinstance(e, ev.CheckpointsRecorded):
            buf["checkpoints"].append((e.traj, e.steps, e.files, e.index))
        elif isinstance(e, ev.StateFilesRegistered):
            buf["files"].append((np.array([p.encode() for p in e.paths],
                                          dtype=TABLES["files"]["path"]),))
        elif isinstance(e, ev.TrajectoryCreated):
            buf["created"].append((e.iteration, e.slot, e.id, e.killed, e.parent,
                                   e.branch_step, e.start_step))
        elif isinstance(e, ev.TrajectoryEnded):
            buf["trajectories"].append((e.id, e.end_step, e.status, e.max_score))
        elif isinstance(e, ev.IterationDecided):
            buf["iterations"].append((e.iteration, e.level, e.n_killed, e.log_weight,
                                      math.exp(e.log_weight)))
        elif isinstance(e, ev.ReplicaEnded):
            return  # the summary that follows it holds the outcome
        else:
            raise TypeError(f"a store cannot record {type(e).__name__}")
        self._dirty.add(r)

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
            rows = self._buffers[replica][table]
            if not rows:
                continue
            names = list(cols)
            if table in ("steps", "checkpoints"):  # (traj, arrays...) per event
                counts = [np.shape(row[1])[0] for row in rows]
                parts = list(zip(*rows))
                columns = [np.repeat(np.array(parts[0], dtype=cols[names[0]]), counts)]
                for col, part in zip(names[1:], parts[1:]):
                    if col == "obs":
                        columns.append(np.concatenate(
                            [np.asarray(p, dtype=cols[col]).reshape(-1, self.n_obs)
                             for p in part]))
                    else:
                        columns.append(np.concatenate(part).astype(cols[col], copy=False))
            elif table == "files":
                columns = [np.concatenate([row[0] for row in rows])]
            else:  # one scalar per column and row (created, segments, trajectories, ...)
                columns = [np.array(part, dtype=cols[col])
                           for col, part in zip(names, zip(*rows))]
            n_new = columns[0].shape[0]
            for col, data in zip(names, columns):
                if data.shape[0] != n_new:
                    raise AssertionError(f"table {table}: column {col} has {data.shape[0]} "
                                         f"rows, expected {n_new}")
            out[table] = dict(zip(names, columns))
            rows.clear()
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
