"""The campaign store (DESIGN §9): a small interface (:class:`Store`) with an in-memory and an
HDF5 implementation (the only module importing h5py), and the read API (:class:`Database`)
that `status`, `report`, `export` and `check-db` use on either."""
from orchestrator.store.base import ReplicaRecord, RunState, Store
from orchestrator.store.hdf5 import HDF5Store, Writer
from orchestrator.store.memory import MemoryStore
from orchestrator.store.reader import Database, ReplicaView, Trajectory

__all__ = ["Database", "HDF5Store", "MemoryStore", "ReplicaRecord", "ReplicaView", "RunState",
           "Store", "Trajectory", "Writer"]
