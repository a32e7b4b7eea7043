"""The HDF5 store: the only module that imports h5py, and it exposes no h5py object.

:class:`HDF5Store` (alias ``Writer``) is the driver's handle: one driver process, SWMR mode (readers see a consistent file at every moment, and a
SIGKILLed writer leaves a file whose flushed contents are intact).  Every structure is made
before SWMR starts (SWMR forbids new objects later), so the replica count is fixed at
creation.  Rows are buffered and committed in batches: rows first, flush, then the
``committed`` counters and the summary, flush.  A crash between the two flushes leaves rows
beyond the counters, which the next writer truncates.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

import h5py
import numpy as np

from orchestrator import SCHEMA_VERSION, __version__
from orchestrator.core.meta import CampaignMeta
from orchestrator.errors import DatabaseError
from orchestrator.store.base import ReplicaRecord, RunState, Store, empty_summary, new_run_state
from orchestrator.store.h5clear import clear_write_flags
from orchestrator.store.schema import CHUNK, TABLES

TABLE_NAMES = tuple(TABLES)
# Shuffle + LZF on the integer and string columns (trajectory ids, steps, checkpoint
# indexes, paths): they shrink 50-fold at ~0.2 µs per row; both ship with h5py.  Not on the
# float columns (times, scores, observables, weights): their bits are nearly random, LZF
# saved under 10 % of them and cost 2-3.5 µs per row, more than the rest of a commit
# together (bench: 25 000 rows of a score column, 3.5 µs/row with LZF, 0.15 without).
# Fletcher-32 on every dataset: HDF5 checksums its metadata but not raw data, so without it a
# flipped byte in a chunk (or in the committed counters) would be read back silently.
COMPRESS = {"shuffle": True, "compression": "lzf", "fletcher32": True}
FLOATS = {"fletcher32": True}
CHECKSUM = {"fletcher32": True, "chunks": True}


def _filters(dt: np.dtype) -> dict:
    return FLOATS if dt.kind == "f" else COMPRESS
# HDF5 caches up to 1 MiB of chunks per open dataset by default; a campaign of 64 replicas
# has ~1 300 datasets, so the default let the cache alone grow past a gigabyte of driver
# memory.  One chunk per dataset is what appending needs (the partial last chunk).
CHUNK_CACHE = 0
# A chunk must stay small, or every append to a table's partial last chunk reads,
# decompresses, recompresses and rewrites it whole: the string columns (files.path S512:
# 2 MiB chunks at 4096 rows; segments.image S100: 400 KiB) did so at every commit.
CHUNK_BYTES = 32 * 1024


def _chunk_rows(row_bytes: int) -> int:
    return max(16, min(CHUNK, CHUNK_BYTES // max(1, row_bytes)))
RUN_STATE = np.dtype("S2048")


def _rgroup(r: int) -> str:
    return f"replicas/{r:04d}"


class Lock:
    """An exclusive lock file beside the database: one writer at a time."""

    def __init__(self, db_path: Path):
        self.path = Path(str(db_path) + ".lock")
        self.fh: IO[str] | None = None

    def acquire(self) -> None:
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            fh.close()
            raise DatabaseError(f"{self.path.with_suffix('')}: another `tams run` (pid {pid}) is "
                                "writing this database; wait for it or stop it first.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self.fh = fh

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _open_for_writing(path: Path, patience: float = 10.0) -> h5py.File:
    """Open for writing, waiting out a reader that holds HDF5's file lock for a moment (a
    `tams status` opened just before this driver started): without this, a status call at
    the wrong instant made `tams run` refuse to start."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return h5py.File(path, "r+", libver="latest", rdcc_nbytes=CHUNK_CACHE)
        except OSError as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class HDF5Store(Store):
    """The driver's handle on the database file."""

    def __init__(self, path: Path, f: h5py.File, lock: Lock):
        meta = CampaignMeta.from_json(str(f.attrs["meta"]))
        super().__init__(meta)
        self.path = path
        self._f = f
        self.lock = lock
        self._counts = [np.array(f[_rgroup(r)]["committed"][...]) for r in range(self.n_replicas)]
        self._summary = [f[_rgroup(r)]["summary"][0] for r in range(self.n_replicas)]
        self._ds = {(r, t, c): f[_rgroup(r)][t][c] for r in range(self.n_replicas)
                    for t, cols in TABLES.items() for c in cols}
        self._meta_ds = {r: (f[_rgroup(r)]["committed"], f[_rgroup(r)]["summary"])
                         for r in range(self.n_replicas)}

    # --- creation / opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, meta: CampaignMeta, *, config_text: str, fingerprint: str,
               identity: str = "{}") -> HDF5Store:
        path.parent.mkdir(parents=True, exist_ok=True)  # before the lock file goes there
        lock = Lock(path)
        lock.acquire()
        try:
            tmp = path.with_name(path.name + ".creating")
            f = h5py.File(tmp, "w", libver="latest")
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["software_version"] = __version__
            f.attrs["config_yaml"] = config_text
            f.attrs["fingerprint"] = fingerprint
            f.attrs["identity"] = identity
            f.attrs["meta"] = meta.to_json()
            f.attrs["seed"] = np.int64(meta.seed)
            f.attrs["replicas"] = np.int64(meta.replicas)
            f.attrs["name"] = meta.name
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            n_obs = len(meta.observables)
            for r in range(meta.replicas):
                g = f.create_group(_rgroup(r))
                for table, cols in TABLES.items():
                    tg = g.create_group(table)
                    for col, dt in cols.items():
                        if table == "steps" and col == "obs":
                            tg.create_dataset(col, shape=(0, n_obs), maxshape=(None, n_obs),
                                              dtype=dt, chunks=(_chunk_rows(dt.itemsize * n_obs),
                                                                n_obs), **_filters(dt))
                        else:
                            tg.create_dataset(col, shape=(0,), maxshape=(None,), dtype=dt,
                                              chunks=(_chunk_rows(dt.itemsize),), **_filters(dt))
                g.create_dataset("committed", data=np.zeros(len(TABLES), dtype=np.int64), **CHECKSUM)
                g.create_dataset("summary", data=np.array([empty_summary()]), **CHECKSUM)
            g = f.create_group("run")
            g.create_dataset("wall_time", data=np.zeros(1), **CHECKSUM)
            g.create_dataset("sessions", data=np.zeros(1, dtype=np.int64), **CHECKSUM)
            g.create_dataset("state_bytes", data=np.zeros(1, dtype=np.int64), **CHECKSUM)
            g.create_dataset("state", data=np.array([RunState().to_json().encode()],
                                                    dtype=RUN_STATE), **CHECKSUM)
            f.close()
            os.replace(tmp, path)  # a database either exists whole or not at all
            f = _open_for_writing(path)
            f.swmr_mode = True
            return cls(path, f, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: Path) -> HDF5Store:
        lock = Lock(path)
        lock.acquire()
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)
            try:
                clear_write_flags(str(path))  # a previous driver was killed: h5clear -s
            except (OSError, ValueError) as exc:
                raise DatabaseError(f"{path}: not a usable database ({exc}); move it away or give "
                                    "another database.path.") from None
            version = _schema_version(path)
            if version is not None and version != SCHEMA_VERSION:
                raise DatabaseError(f"{path}: database schema version {version} is not "
                                    f"{SCHEMA_VERSION}; use the tams version that made it or a new "
                                    "database.path.")
            try:
                _validate(path)
            except Exception as exc:  # noqa: BLE001 - any failure to read is damage
                with open(path, "r+b") as fh:  # leave the damaged file exactly as it was
                    fh.write(head)
                what = " ".join(str(exc).split())
                raise DatabaseError(f"{path}: the database is damaged ({type(exc).__name__}: "
                                    f"{what}); nothing was changed — restore it from a copy or "
                                    "give another database.path.") from None
            try:
                f = _open_for_writing(path)
            except OSError as exc:
                raise DatabaseError(f"{path}: cannot open the database for writing ({exc}); "
                                    "move it away or give another database.path.") from None
            if "meta" not in f.attrs or "replicas" not in f.attrs:
                f.close()
                raise DatabaseError(f"{path}: an HDF5 file but not a tams database; move it away "
                                    "or give another database.path.")
            # truncate rows beyond the committed counters (debris of a killed driver)
            for r in range(int(f.attrs["replicas"])):
                g = f[_rgroup(r)]
                counts = g["committed"][...]
                for ti, (table, cols) in enumerate(TABLES.items()):
                    for col in cols:
                        ds = g[table][col]
                        if ds.shape[0] != counts[ti]:
                            ds.resize(int(counts[ti]), axis=0)
            f.swmr_mode = True
            return cls(path, f, lock)
        except BaseException:
            lock.release()
            raise

    # --- attributes ---------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return str(self._f.attrs["fingerprint"])

    @property
    def identity(self) -> str:
        return str(self._f.attrs.get("identity", "{}"))

    @property
    def config_text(self) -> str:
        return str(self._f.attrs["config_yaml"])

    def set_state_bytes(self, n: int) -> None:
        self._f["run/state_bytes"][0] = n

    def state_bytes(self) -> int:
        return int(self._f["run/state_bytes"][0])

    def wall_time(self) -> float:
        return float(self._f["run/wall_time"][0]) + self._wall_pending

    def set_run_state(self, state: str, reason: str = "", workers: int = 0) -> None:
        self._f["run/state"][0] = new_run_state(state, reason, workers).to_json().encode()[:2048]
        self._f.flush()

    def run_state(self) -> RunState:
        return RunState.from_json(bytes(self._f["run/state"][0]).decode(errors="replace"))

    def commit(self) -> None:
        """Write buffered rows, flush, then the counters and summaries, flush."""
        dirty = sorted(self._dirty)
        new_counts = {}
        for r in dirty:
            counts = self._counts[r].copy()
            rows = self._take_rows(r)
            for ti, table in enumerate(TABLES):
                if table not in rows:
                    continue
                n0 = int(counts[ti])
                n_new = 0
                for col, data in rows[table].items():
                    n_new = data.shape[0]
                    ds = self._ds[(r, table, col)]
                    ds.resize(n0 + n_new, axis=0)
                    ds[n0:n0 + n_new] = data
                counts[ti] = n0 + n_new
            new_counts[r] = counts
        if dirty:
            self._f.flush()
        for r in dirty:
            committed, summary = self._meta_ds[r]
            committed[...] = new_counts[r]
            self._counts[r] = new_counts[r]
            summary[0] = self._summary[r]
        if self._wall_pending:
            self._f["run/wall_time"][0] += self._wall_pending
            self._wall_pending = 0.0
        self._f.flush()
        self._dirty.clear()
        self.last_commit = time.monotonic()

    def new_session(self) -> None:
        self._f["run/sessions"][0] += 1

    # --- reading back (resume) ----------------------------------------------------------
    def load_replica(self, r: int) -> ReplicaRecord:
        return _load_replica(self._f, r, self._counts[r])

    def close(self) -> None:
        try:
            if self._f.id.valid:
                self.commit()
                self._f.close()
        finally:
            self.lock.release()


Writer = HDF5Store  # the name before the store interface


def _schema_version(path: Path) -> int | None:
    try:
        with h5py.File(path, "r", libver="latest") as f:
            v = f.attrs.get("schema_version")
            return None if v is None else int(v)
    except Exception:  # noqa: BLE001 - damage is reported by _validate
        return None


def _validate(path: Path) -> None:
    """Read everything a resume will read, without SWMR and without writing: a damaged file
    fails here, at once (an SWMR handle retries a bad checksum with back-off for up to an
    hour) and before the writer has touched it."""
    with h5py.File(path, "r", libver="latest") as f:
        for key in ("schema_version", "replicas", "meta", "fingerprint", "config_yaml"):
            f.attrs[key]
        for r in range(int(f.attrs["replicas"])):
            g = f[_rgroup(r)]
            counts = g["committed"][...]
            if counts.shape != (len(TABLES),) or (counts < 0).any():
                raise ValueError(f"replica {r}: bad committed counters {counts.tolist()}")
            g["summary"][0]
            for ti, (table, cols) in enumerate(TABLES.items()):
                for col in cols:
                    ds = g[table][col]
                    if ds.shape[0] < counts[ti]:
                        raise ValueError(f"replica {r}: table {table} column {col} has "
                                         f"{ds.shape[0]} rows, {int(counts[ti])} committed")
                    ds[:int(counts[ti])]
        for key in ("wall_time", "sessions", "state_bytes", "state"):
            f["run"][key][...]


def _load_replica(f: h5py.File, r: int, counts: np.ndarray) -> ReplicaRecord:
    g = f[_rgroup(r)]
    tables = {}
    for ti, (table, cols) in enumerate(TABLES.items()):
        n = int(counts[ti])
        tables[table] = {col: g[table][col][:n] for col in cols}
    return ReplicaRecord(tables, g["summary"][0])


def _writer_active(path: Path) -> bool:
    """Does a live `tams run` hold the database's lock?  Read from /proc/locks (Linux), so a
    reader never touches the lock itself; True when it cannot tell."""
    lock = Path(str(path) + ".lock")
    try:
        ino = lock.stat().st_ino
    except OSError:
        return False  # no lock file: no writer (a clean exit removes it)
    try:
        with open("/proc/locks") as fh:
            return any(ln.split()[5].rsplit(":", 1)[-1] == str(ino)
                       for ln in fh if len(ln.split()) > 5 and "FLOCK" in ln)
    except (OSError, IndexError):
        return True


def _open_reader_file(path: Path) -> h5py.File:
    """Open for reading.  SWMR only while a writer runs: an SWMR reader retries a metadata
    block whose checksum fails (it might be mid-write) with back-off for up to an hour, so a
    damaged file would hang `tams status` instead of failing at once."""
    try:
        if not _writer_active(path):
            try:
                return h5py.File(path, "r", libver="latest")
            except FileNotFoundError:
                raise
            except OSError as exc:
                # the write flags of a killed writer are still set: SWMR reads them; any other
                # failure is damage, reported at once
                if "consistency flags" not in str(exc) and "already open for write" not in str(exc):
                    raise
        return h5py.File(path, "r", swmr=True, libver="latest")
    except FileNotFoundError:
        raise DatabaseError(f"{path}: no such database; give the path of a campaign's .h5 file.") from None
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot be read as a tams database ({exc}); give the path of "
                            "the .h5 file a `tams run` made.") from None


class HDF5Reader:
    """Read-only access to a database file, safe while a driver writes it (SWMR).  The same
    methods as a :class:`~orchestrator.store.base.Store`'s read side, so the read API
    (:class:`orchestrator.store.reader.Database`) works on either."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = _open_reader_file(self.path)
        a = self._f.attrs
        version = a.get("schema_version")
        if version is not None and "replicas" in a and int(version) != SCHEMA_VERSION:
            self._f.close()
            raise DatabaseError(f"{self.path}: database schema version {int(version)} is not "
                                f"{SCHEMA_VERSION}; read it with the tams version that made it.")
        missing = [k for k in ("meta", "replicas", "config_yaml", "schema_version",
                               "software_version") if k not in a]
        if missing:
            self._f.close()
            raise DatabaseError(f"{self.path}: an HDF5 file but not a tams database (no root "
                                f"attribute {missing[0]!r}); give the path of the .h5 file a "
                                "`tams run` made.")
        self.meta = CampaignMeta.from_json(str(a["meta"]))
        self.n_replicas = int(a["replicas"])
        self.config_text = str(a["config_yaml"])
        self.schema_version = int(a["schema_version"])
        self.software_version = str(a["software_version"])
        self.created = str(a.get("created", ""))

    def close(self) -> None:
        self._f.close()

    def _run_value(self, key: str):
        ds = self._f["run"][key]
        ds.refresh()
        return ds[0]

    def wall_time(self) -> float:
        return float(self._run_value("wall_time"))

    def state_bytes(self) -> int:
        return int(self._run_value("state_bytes"))

    def sessions(self) -> int:
        return int(self._run_value("sessions"))

    def run_state(self) -> RunState:
        return RunState.from_json(bytes(self._run_value("state")).decode(errors="replace"))

    def load_replica(self, r: int) -> ReplicaRecord:
        g = self._f[_rgroup(r)]
        for ds in (g["committed"], g["summary"]):
            ds.refresh()
        counts = g["committed"][...]
        for table, cols in TABLES.items():
            for col in cols:
                g[table][col].refresh()
        return _load_replica(self._f, r, counts)

    def writer_active(self) -> bool:
        """Does a live driver hold the database's lock?"""
        return _writer_active(self.path)

    def short_tables(self, r: int) -> list[str]:
        """Columns holding fewer rows than the replica's committed counter (damage)."""
        g = self._f[_rgroup(r)]
        counts = g["committed"][...]
        out = []
        for ti, (table, cols) in enumerate(TABLES.items()):
            for col in cols:
                have = g[table][col].shape[0]
                if have < counts[ti]:
                    out.append(f"table {table} column {col} has {have} rows, "
                               f"{int(counts[ti])} committed")
        return out
