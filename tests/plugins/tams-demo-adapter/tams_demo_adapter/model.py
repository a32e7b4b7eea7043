"""``adapter: demo`` — the 1-D double well as a ForwardModel of its own.

It uses only the public contract: :class:`orchestrator.model.ForwardModel` and its messages,
and :class:`orchestrator.config.ModelSection` for the campaign's ``model`` keys.
"""
from __future__ import annotations

import math
import os
import socket
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from orchestrator.config import ModelSection
from orchestrator.model import (
    Checkpoints,
    ForwardModel,
    ModelRunError,
    Provenance,
    SegmentRequest,
    SegmentResult,
    StateRef,
)


class DemoConfig(ModelSection):
    """`adapter: demo` — the 1-D double well dx = (x - x^3) dt + sqrt(eps) dW."""

    adapter: Literal["demo"] = Field(description="`demo`.")
    x0: float = Field(-1.0, description="The state at step 0.")
    eps: float = Field(0.1, description="Noise strength.")

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be a number > 0")
        return v


def score(t, observables, a: float = -1.0, b: float = 1.0):
    """Fraction of the way from the well at ``a`` to the well at ``b``."""
    x = np.asarray(observables)[:, 0]
    return (x - a) / (b - a)


class DemoModel(ForwardModel):
    Config = DemoConfig

    def __init__(self, config: DemoConfig, base_dir: str):
        self.config = config
        self.base_dir = base_dir
        self.noise_mode = config.noise

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(config, base_dir)

    def initial_state(self, workdir: str) -> StateRef:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "x0.npy")
        np.save(path, np.array([self.config.x0]))
        return StateRef(path)

    def run_segment(self, request: SegmentRequest) -> SegmentResult:
        os.makedirs(request.workdir, exist_ok=True)
        try:
            x = float(np.load(request.start.path)[0])
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelRunError(f"segment {request.workdir}: cannot read the start state "
                                f"({exc})", request.workdir, transient=False) from None
        sq = math.sqrt(self.config.eps * request.dt)
        promised = {int(s) for s in request.promised_checkpoints()}
        xs, files, steps = [], [], []
        for i in range(request.n_steps):
            x = x + request.dt * (x - x ** 3) + sq * float(request.noise[i, 0])
            xs.append(x)
            step = request.step0 + i + 1
            if step in promised:
                path = os.path.join(request.workdir, f"x{step:08d}.npy")
                np.save(path, np.array([x]))
                files.append(path)
                steps.append(step)
        n = len(steps)
        ck = Checkpoints(np.array(steps, dtype=np.int64), np.arange(n, dtype=np.int64),
                         np.full(n, -1, dtype=np.int64), tuple(files))
        return SegmentResult(np.arange(request.step0 + 1, request.step0 + request.n_steps + 1,
                                       dtype=np.int64),
                             np.array(xs, dtype=np.float64).reshape(-1, 1), ck,
                             provenance=Provenance(socket.gethostname(), os.getpid(),
                                                   launcher="demo"))
