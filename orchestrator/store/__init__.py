"""The campaign store (DESIGN §9): the HDF5 file (the only module importing h5py), the
in-memory store, and the read API that `status`, `report`, `export` and `check-db` use."""
from orchestrator.store.reader import Database, ReplicaRecord, ReplicaView, Trajectory, Writer

__all__ = ["Database", "Writer", "ReplicaRecord", "Trajectory", "ReplicaView"]
