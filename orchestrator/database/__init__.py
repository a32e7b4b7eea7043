"""The campaign database (DESIGN §9).  Only this package touches h5py.

``Database(path)`` is the read API: replicas, iterations, trajectories with their full path
(the parent's prefix up to the branch step plus the trajectory's own steps), the estimate.
It can be used while a driver is writing the file (HDF5 SWMR).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..algorithm import Outcome, Status
from ..errors import DatabaseError
from .hdf5 import ReplicaRecord, Writer, open_reader, read_replica

__all__ = ["Database", "Writer", "ReplicaRecord", "Trajectory", "ReplicaView"]


@dataclass(frozen=True)
class Trajectory:
    """A trajectory's full path from step 1 to its end."""

    id: int
    parent: int
    branch_step: int
    status: Status
    steps: np.ndarray
    times: np.ndarray
    scores: np.ndarray
    observables: np.ndarray

    @property
    def max_score(self) -> float:
        return float(self.scores.max()) if self.scores.size else -math.inf


@dataclass(frozen=True)
class ReplicaView:
    index: int
    outcome: Outcome
    iterations: int
    log_weight: float
    n_reached: int
    estimate: float
    log_estimate: float
    model_steps: int
    segments: int
    failed_segments: int
    in_flight: int
    level: float
    wall_time: float


class Database:
    """Read access to a campaign database, safe while a run writes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open_reader(self.path)
        a = self.f.attrs
        missing = [k for k in ("seed", "replicas", "name", "config_yaml", "schema_version",
                               "software_version", "observables") if k not in a]
        if missing:
            self.f.close()
            raise DatabaseError(f"{self.path}: an HDF5 file but not a tams database (no root "
                                f"attribute {missing[0]!r}); give the path of the .h5 file a "
                                "`tams run` made.")
        self.seed = int(a["seed"])
        self.n_replicas = int(a["replicas"])
        self.name = str(a["name"])
        self.config_yaml = str(a["config_yaml"])
        self.schema_version = int(a["schema_version"])
        self.software_version = str(a["software_version"])
        self.observables = [o["name"] for o in json.loads(a["observables"])]
        self.observable_specs = json.loads(a["observables"])
        self._cache: dict[int, ReplicaRecord] = {}

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def refresh(self) -> None:
        self._cache.clear()

    def record(self, r: int) -> ReplicaRecord:
        if r not in self._cache:
            self._cache[r] = read_replica(self.f, r)
        return self._cache[r]

    def replica(self, r: int) -> ReplicaView:
        s = self.record(r).summary
        return ReplicaView(r, Outcome(int(s["outcome"])), int(s["iterations"]),
                           float(s["log_weight"]), int(s["n_reached"]), float(s["estimate"]),
                           float(s["log_estimate"]), int(s["model_steps"]), int(s["segments"]),
                           int(s["failed_segments"]), int(s["in_flight"]), float(s["level"]),
                           float(s["wall_time"]))

    def replicas(self) -> list[ReplicaView]:
        return [self.replica(r) for r in range(self.n_replicas)]

    def iterations(self, r: int) -> dict[str, np.ndarray]:
        return dict(self.record(r).tables["iterations"])

    def table(self, r: int, name: str) -> dict[str, np.ndarray]:
        return dict(self.record(r).tables[name])

    def estimates(self) -> np.ndarray:
        return np.array([v.estimate for v in self.replicas()])

    def wall_time(self) -> float:
        ds = self.f["run/wall_time"]
        ds.refresh()
        return float(ds[0])

    def state_bytes(self) -> int:
        ds = self.f["run/state_bytes"]
        ds.refresh()
        return int(ds[0])

    def trajectory(self, traj_id: int, replica: int = 0) -> Trajectory:
        """The full path of a trajectory: its ancestors' prefix plus its own steps."""
        rec = self.record(replica)
        created = rec.tables["created"]
        steps = rec.tables["steps"]
        where = np.flatnonzero(created["id"] == traj_id)
        if where.size == 0:
            raise KeyError(f"replica {replica} has no trajectory {traj_id}")
        ended = rec.tables["trajectories"]
        e = np.flatnonzero(ended["id"] == traj_id)
        status = Status(int(ended["status"][e[0]])) if e.size else Status.RUNNING
        chain = []  # (id, lo, hi]: own steps of each ancestor used by the path
        tid, hi = traj_id, np.iinfo(np.int64).max
        parent0, branch0 = int(created["parent"][where[0]]), int(created["branch_step"][where[0]])
        while tid >= 0:
            i = np.flatnonzero(created["id"] == tid)[0]
            lo = int(created["branch_step"][i])
            chain.append((tid, lo, hi))
            hi = lo
            tid = int(created["parent"][i])
        parts = []
        for tid, lo, hi in reversed(chain):
            m = np.flatnonzero((steps["traj"] == tid) & (steps["step"] > lo) & (steps["step"] <= hi))
            m = m[np.argsort(steps["step"][m], kind="stable")]
            parts.append(m)
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return Trajectory(traj_id, parent0, branch0, status, steps["step"][idx], steps["time"][idx],
                          steps["score"][idx], steps["obs"][idx])

    def ensemble(self, r: int = 0) -> np.ndarray:
        """Ids of the trajectories in the replica's current (or final) ensemble, by slot."""
        created = self.record(r).tables["created"]
        n = int(np.sum(created["iteration"] == 0))
        slots = np.full(n, -1, dtype=np.int64)
        for s, t in zip(created["slot"], created["id"]):
            slots[s] = t
        return slots
