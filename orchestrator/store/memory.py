"""The in-memory store: the same tables as the HDF5 file, in numpy arrays.

For notebooks, the statistical tests (thousands of replicas, no file each) and anything that
wants the read API (:class:`orchestrator.store.reader.Database`) without a file.  Committed
rows are kept as lists of array chunks and joined when read, so appending stays O(rows).
"""
from __future__ import annotations

import time

import numpy as np

from orchestrator.core.meta import CampaignMeta
from orchestrator.store.base import ReplicaRecord, RunState, Store, new_run_state
from orchestrator.store.schema import TABLES


class MemoryStore(Store):
    def __init__(self, meta: CampaignMeta, config_text: str = ""):
        super().__init__(meta)
        self._config_text = config_text
        self._chunks: list[dict[str, dict[str, list[np.ndarray]]]] = [
            {t: {c: [] for c in cols} for t, cols in TABLES.items()} for _ in range(meta.replicas)]
        self._committed_summary = [s.copy() for s in self._summary]
        self._wall = 0.0
        self._state_bytes = 0
        self._sessions = 0
        self._run_state = RunState()

    @property
    def config_text(self) -> str:
        return self._config_text

    def commit(self) -> None:
        for r in sorted(self._dirty):
            for table, arrays in self._take_rows(r).items():
                for col, data in arrays.items():
                    self._chunks[r][table][col].append(data)
            self._committed_summary[r] = self._summary[r].copy()
        self._dirty.clear()
        self._wall += self._wall_pending
        self._wall_pending = 0.0
        self.last_commit = time.monotonic()

    def load_replica(self, r: int) -> ReplicaRecord:
        tables = {}
        for table, cols in TABLES.items():
            t = {}
            for col, dt in cols.items():
                chunks = self._chunks[r][table][col]
                if len(chunks) > 1:
                    chunks[:] = [np.concatenate(chunks)]
                if chunks:
                    t[col] = chunks[0]
                elif table == "steps" and col == "obs":
                    t[col] = np.zeros((0, self.n_obs), dtype=dt)
                else:
                    t[col] = np.zeros(0, dtype=dt)
            tables[table] = t
        return ReplicaRecord(tables, self._committed_summary[r].copy())

    def set_run_state(self, state: str, reason: str = "", workers: int = 0) -> None:
        self._run_state = new_run_state(state, reason, workers)

    def run_state(self) -> RunState:
        return self._run_state

    def wall_time(self) -> float:
        return self._wall

    def state_bytes(self) -> int:
        return self._state_bytes

    def set_state_bytes(self, n: int) -> None:
        self._state_bytes = n

    def new_session(self) -> None:
        self._sessions += 1

    def sessions(self) -> int:
        return self._sessions
