"""The read API of a campaign (DESIGN §9): what `status`, `report`, `export` and `check-db` use.

``Database(path)`` reads an HDF5 file (safe while a driver writes it); ``Database(store)``
reads a :class:`~orchestrator.store.memory.MemoryStore` (a notebook's or a test's run) the
same way: replicas, iterations, trajectories with their full path (the parent's prefix up to
the branch step plus the trajectory's own steps), weights, estimates, and the campaign's
typed metadata (``Database.meta``), so no reader parses the stored YAML.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.core.algorithm import Outcome, Status
from orchestrator.core.meta import CampaignMeta
from orchestrator.errors import DatabaseError
from orchestrator.store.base import ReplicaRecord, RunState, Store
from orchestrator.store.hdf5 import HDF5Reader, Writer

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
    """Read access to a campaign: an HDF5 file (safe while a run writes it) or a store."""

    def __init__(self, source: str | Path | Store):
        self._src: Store | HDF5Reader
        if isinstance(source, Store):
            self.path = Path(getattr(source, "path", "(in memory)"))
            self._src = source
            self.schema_version = 0
            self.software_version = ""
            self._owned = False
        else:
            self.path = Path(source)
            reader = HDF5Reader(self.path)
            self._src = reader
            self.schema_version = reader.schema_version
            self.software_version = reader.software_version
            self._owned = True
        self.meta: CampaignMeta = self._src.meta
        self.config_yaml = self._src.config_text
        self.seed = self.meta.seed
        self.n_replicas = self.meta.replicas
        self.name = self.meta.name
        self.observables = self.meta.observable_names
        self.observable_specs = [{"name": o.name, "units": o.units, "long_name": o.long_name}
                                 for o in self.meta.observables]
        self._cache: dict[int, ReplicaRecord] = {}
        self._index_cache: dict = {}

    def close(self) -> None:
        if self._owned:
            self._src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def refresh(self) -> None:
        self._cache.clear()
        self._index_cache.clear()

    def record(self, r: int) -> ReplicaRecord:
        if r not in self._cache:
            self._cache[r] = self._src.load_replica(r)
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

    def run_state(self) -> RunState:
        """What the driver is doing, or when and why it stopped."""
        return self._src.run_state()

    def writer_active(self) -> bool:
        """Does a live driver write this database now?  (A store in memory: never.)"""
        fn = getattr(self._src, "writer_active", None)
        return bool(fn()) if fn else False

    def short_tables(self, r: int) -> list[str]:
        """Columns with fewer rows than committed (damage; HDF5 files only)."""
        fn = getattr(self._src, "short_tables", None)
        return fn(r) if fn else []

    def run_dir(self) -> Path:
        """The directory of the campaign's segment directories and states."""
        if self.meta.run_dir and Path(self.meta.run_dir).is_dir():
            return Path(self.meta.run_dir)
        return self.path.with_suffix(".run")

    def iterations(self, r: int) -> dict[str, np.ndarray]:
        return dict(self.record(r).tables["iterations"])

    def table(self, r: int, name: str) -> dict[str, np.ndarray]:
        return dict(self.record(r).tables[name])

    def estimates(self) -> np.ndarray:
        return np.array([v.estimate for v in self.replicas()])

    def wall_time(self) -> float:
        return self._src.wall_time()

    def state_bytes(self) -> int:
        return self._src.state_bytes()

    def _index(self, replica: int):
        """Per replica, computed once: the steps table's rows sorted by (trajectory, step),
        and for every created trajectory its row in ``created`` and its slice of own steps."""
        key = ("index", replica)
        if key not in self._index_cache:
            rec = self.record(replica)
            steps, created = rec.tables["steps"], rec.tables["created"]
            order = np.lexsort((steps["step"], steps["traj"]))
            traj_sorted = steps["traj"][order]
            ids = created["id"]
            lo = np.searchsorted(traj_sorted, ids, side="left")
            hi = np.searchsorted(traj_sorted, ids, side="right")
            row = {int(t): i for i, t in enumerate(ids)}
            self._index_cache[key] = (order, row, lo, hi)
        return self._index_cache[key]

    def _path_rows(self, traj_id: int, replica: int) -> np.ndarray:
        """Rows of the steps table forming the full path of ``traj_id``, in step order."""
        rec = self.record(replica)
        created, steps = rec.tables["created"], rec.tables["steps"]
        order, row, lo, hi = self._index(replica)
        if traj_id not in row:
            raise KeyError(f"replica {replica} has no trajectory {traj_id}")
        parts = []
        tid, upto = traj_id, np.iinfo(np.int64).max
        while tid >= 0:  # walk up the ancestors: (branch_step, upto] of each one's own steps
            i = row[tid]
            b = int(created["branch_step"][i])
            own = order[lo[i]:hi[i]]
            s = steps["step"][own]
            parts.append(own[(s > b) & (s <= upto)])
            upto = b
            tid = int(created["parent"][i])
        return np.concatenate(parts[::-1]) if parts else np.zeros(0, dtype=np.int64)

    def trajectory(self, traj_id: int, replica: int = 0) -> Trajectory:
        """The full path of a trajectory: its ancestors' prefix plus its own steps."""
        rec = self.record(replica)
        created, steps, ended = rec.tables["created"], rec.tables["steps"], rec.tables["trajectories"]
        idx = self._path_rows(traj_id, replica)
        i = self._index(replica)[1][traj_id]
        e = np.flatnonzero(ended["id"] == traj_id)
        status = Status(int(ended["status"][e[0]])) if e.size else Status.RUNNING
        return Trajectory(traj_id, int(created["parent"][i]), int(created["branch_step"][i]),
                          status, steps["step"][idx], steps["time"][idx], steps["score"][idx],
                          steps["obs"][idx])

    def trajectory_ids(self, replica: int = 0) -> np.ndarray:
        """Every trajectory of a replica, in creation order."""
        return self.record(replica).tables["created"]["id"].copy()

    def weights(self, replica: int = 0) -> dict[str, np.ndarray]:
        """The weighted ensemble of all trajectories (Lestang et al. 2018, §4): a trajectory
        killed at iteration j weighs W_{j-1}/N, one of the final ensemble W_J/N (W_0 = 1).
        Returns ``id``, ``log_weight`` (of the trajectory, i.e. including 1/N) and ``final``.
        The weights sum to 1.  Only meaningful for a finished replica."""
        created = self.record(replica).tables["created"]
        it = self.record(replica).tables["iterations"]
        n = int(np.sum(created["iteration"] == 0))
        logw = np.concatenate([[0.0], np.asarray(it["log_weight"], dtype=np.float64)])
        ids = created["id"]
        out = np.full(ids.size, np.nan)
        killed_at = {int(k): int(j) for k, j in zip(created["killed"], created["iteration"]) if k >= 0}
        final = np.zeros(ids.size, dtype=bool)
        for i, t in enumerate(ids):
            j = killed_at.get(int(t))
            if j is None:
                final[i] = True
                out[i] = logw[-1]
            else:
                out[i] = logw[j - 1]
        return {"id": ids.copy(), "log_weight": out - np.log(n), "final": final}

    def path_maxima(self, replica: int = 0, quantity: str = "score") -> np.ndarray:
        """Per trajectory (creation order): the maximum of ``quantity`` (``score`` or an
        observable's name) over its full path, NaN for a path without steps."""
        col = self._column(replica, quantity)
        out = np.full(self.trajectory_ids(replica).size, np.nan)
        for i, t in enumerate(self.trajectory_ids(replica)):
            rows = self._path_rows(int(t), replica)
            if rows.size:
                out[i] = col[rows].max()
        return out

    def _column(self, replica: int, quantity: str) -> np.ndarray:
        steps = self.record(replica).tables["steps"]
        if quantity == "score":
            return steps["score"]
        if quantity not in self.observables:
            raise DatabaseError(f"{self.path}: no observable {quantity!r}; choose `score` or one "
                                f"of {', '.join(self.observables)}.")
        return steps["obs"][:, self.observables.index(quantity)]

    def to_xarray(self):
        """Every replica's trajectories (full paths), iterations and estimates as an
        ``xarray.Dataset`` with CF names and units (needs the ``export`` extra)."""
        from orchestrator.store.export import to_xarray
        return to_xarray(self)

    def ensemble(self, r: int = 0) -> np.ndarray:
        """Ids of the trajectories in the replica's current (or final) ensemble, by slot."""
        created = self.record(r).tables["created"]
        n = int(np.sum(created["iteration"] == 0))
        slots = np.full(n, -1, dtype=np.int64)
        for s, t in zip(created["slot"], created["id"]):
            slots[s] = t
        return slots
