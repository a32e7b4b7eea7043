"""Typed events: what the ensemble state machine tells the store.

The state machine (:mod:`orchestrator.core.ensemble`) never writes a table: every fact it
establishes leaves it as one of these frozen dataclasses, and a store
(:mod:`orchestrator.store`) turns events into rows.  So the rules can be run and tested
without any storage, the in-memory and the HDF5 store record exactly the same facts, and a
second algorithm reuses the store by emitting the same events.

Columnar events (``StepsRecorded``, ``CheckpointsRecorded``) carry numpy arrays, so a
segment of 10 000 steps is one event, not 10 000.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.model import Provenance


@dataclass(frozen=True)
class TrajectoryCreated:
    """A trajectory entered the ensemble: an initial one (iteration 0, parent -1) or the child
    that replaced the member ``killed`` of ``slot`` at ``iteration``."""

    replica: int
    iteration: int
    slot: int
    id: int
    killed: int
    parent: int
    branch_step: int  # last step copied from the parent's path
    start_step: int  # step of the state its first segment starts from


@dataclass(frozen=True)
class StateFilesRegistered:
    """State files (paths relative to the run directory) got the ids ``first``, ``first+1``,
    ...: one event per segment, however many checkpoint files it wrote."""

    replica: int
    first: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class StepsRecorded:
    """Own steps of a trajectory (never a copy of its parent's prefix)."""

    replica: int
    traj: int
    steps: np.ndarray  # int64 (n,)
    times: np.ndarray  # float64 (n,)
    scores: np.ndarray  # float64 (n,)
    observables: np.ndarray  # float64 (n, n_observables)


@dataclass(frozen=True)
class CheckpointsRecorded:
    """Checkpoints on a trajectory's own steps: state ``index`` of file ``files[i]``."""

    replica: int
    traj: int
    steps: np.ndarray
    files: np.ndarray
    index: np.ndarray


@dataclass(frozen=True)
class SegmentRecorded:
    """One segment (model run) was ingested: its cost and provenance."""

    replica: int
    traj: int
    step0: int
    n_steps: int
    first_own: int
    last_own: int
    wall_time: float
    model_time: float
    attempts: int
    reused: bool
    provenance: Provenance


@dataclass(frozen=True)
class TrajectoryEnded:
    replica: int
    id: int
    end_step: int
    status: int  # orchestrator.core.algorithm.Status
    max_score: float


@dataclass(frozen=True)
class IterationDecided:
    """An executed iteration (a stopping decision is not one: it never enters the weight)."""

    replica: int
    iteration: int
    level: float
    n_killed: int
    log_weight: float


@dataclass(frozen=True)
class ReplicaSummary:
    """The replica's running totals after a change; the last one is its result."""

    replica: int
    outcome: int  # orchestrator.core.algorithm.Outcome
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


@dataclass(frozen=True)
class ReplicaEnded:
    """The replica stopped: converged, extinct or at max_iterations (its summary follows)."""

    replica: int
    outcome: int  # orchestrator.core.algorithm.Outcome
    iterations: int
    log_weight: float
    n_reached: int


Event = (ReplicaEnded | TrajectoryCreated | StateFilesRegistered
         | StepsRecorded | CheckpointsRecorded
         | SegmentRecorded | TrajectoryEnded | IterationDecided | ReplicaSummary)
