"""Segments: where a trajectory's next model run goes, what it is asked, and whether what came
back keeps the protocol.

A segment's directory is a pure function of (replica, trajectory, first step), so a resumed
driver finds a finished segment's outputs where it would have put them and ingests them
instead of running the model again.  Validation is the orchestrator's side of the file
protocol (DESIGN §7): every step once and in order, the promised shape, finite values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from orchestrator.model import ModelRunError, SegmentRequest, SegmentResult


@dataclass(frozen=True)
class Task:
    """A segment to run for a trajectory of a replica."""

    replica: int
    traj: int
    request: SegmentRequest


def replica_dir(run_dir: str, replica: int) -> str:
    return os.path.join(run_dir, f"r{replica:04d}")


def trajectory_dir(run_dir: str, replica: int, traj: int) -> str:
    """Every segment directory of a trajectory lies here (deleted when it is forgotten)."""
    return os.path.join(run_dir, f"r{replica:04d}", f"t{traj:07d}")


def segment_dir(run_dir: str, replica: int, traj: int, step0: int) -> str:
    return os.path.join(run_dir, f"r{replica:04d}", f"t{traj:07d}", f"s{step0:08d}")


def validate(req: SegmentRequest, res: SegmentResult, n_obs: int) -> None:
    """Raise :class:`ModelRunError` unless ``res`` is a valid answer to ``req``."""
    expect = np.arange(req.step0 + 1, req.step0 + req.n_steps + 1)
    steps = np.asarray(res.steps)
    if steps.shape != expect.shape or not (steps == expect).all():
        raise ModelRunError(f"segment {req.workdir}: the model reported steps "
                            f"{steps[:3].tolist()}...; expected {req.step0 + 1}.."
                            f"{req.step0 + req.n_steps}", req.workdir)
    obs = res.observables
    if obs.ndim != 2 or obs.shape != (req.n_steps, n_obs):
        raise ModelRunError(f"segment {req.workdir}: the model reported observables of shape "
                            f"{obs.shape}; expected ({req.n_steps}, {n_obs}) as listed "
                            "in model.observables", req.workdir, transient=False)
    if not np.isfinite(obs).all():
        bad = int(steps[np.flatnonzero(~np.isfinite(obs).all(axis=1))[0]])
        raise ModelRunError(f"segment {req.workdir}: the model reported a non-finite observable "
                            f"at step {bad}", req.workdir)
