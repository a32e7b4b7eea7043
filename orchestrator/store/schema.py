"""The database schema (version 1): columnar, append-only tables per replica.

Each table is a group of 1-D datasets (one per column; ``obs`` is 2-D, one column per
observable) that grow together.  A table's rows count only up to the replica's ``committed``
counter, written last in every commit: rows beyond it are the debris of a killed driver and
are truncated on the next open for writing.  See docs/database.md.
"""
from __future__ import annotations

import numpy as np

I8 = np.dtype("<i8")
F8 = np.dtype("<f8")
I1 = np.dtype("<i1")

TABLES: dict[str, dict[str, np.dtype]] = {
    # one row per trajectory created: the N initial ones (iteration 0) and every child
    "created": {"iteration": I8, "slot": I8, "id": I8, "killed": I8, "parent": I8,
                "branch_step": I8, "start_step": I8},
    # one row per trajectory when it ends
    "trajectories": {"id": I8, "end_step": I8, "status": I1, "max_score": F8},
    # one row per executed iteration (the stopping decision is not an iteration)
    "iterations": {"iteration": I8, "level": F8, "n_killed": I8, "log_weight": F8, "weight": F8},
    # one row per segment ingested
    "segments": {"traj": I8, "step0": I8, "n_steps": I8, "first_own": I8, "last_own": I8,
                 "wall_time": F8, "model_time": F8, "attempts": I8, "reused": I1,
                 "host": np.dtype("S64"), "pid": I8, "slurm_job": np.dtype("S32"),
                 "image": np.dtype("S100"), "launcher": np.dtype("S16")},
    # one row per own step of a trajectory (a child stores only steps after its branch step)
    "steps": {"traj": I8, "step": I8, "time": F8, "score": F8, "obs": F8},
    # one row per checkpoint on a trajectory's own steps; file indexes the files table
    "checkpoints": {"traj": I8, "step": I8, "file": I8, "index": I8},
    # one row per state file, path relative to the run directory
    "files": {"path": np.dtype("S512")},
}

SUMMARY = np.dtype([
    ("outcome", "<i8"), ("iterations", "<i8"), ("log_weight", "<f8"), ("n_reached", "<i8"),
    ("estimate", "<f8"), ("log_estimate", "<f8"), ("model_steps", "<i8"), ("segments", "<i8"),
    ("failed_segments", "<i8"), ("in_flight", "<i8"), ("level", "<f8"), ("wall_time", "<f8"),
])

CHUNK = 4096
