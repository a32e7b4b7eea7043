"""The ``python`` adapter: a user step function, for prototypes, tests and benchmarks.

The user gives ``step(state, t, dt, noise, **parameters) -> new_state`` and optionally
``observe(state) -> observables`` by import path.  ``t`` is the time at the *start* of the
step, ``noise`` the step's standard normals (length ``noise_dim``).  The states of one
segment are saved as a single ``states.npy`` (one row per checkpointed step); with the
default ``checkpoint_every: 1`` every step is a checkpoint, so branching never replays noise.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field, field_validator

from orchestrator.config import ModelSection
from orchestrator.imports import ImportPathError, resolve
from orchestrator.model import (Checkpoints, ForwardModel, ModelRunError, Provenance,
                                SegmentRequest, SegmentResult, StateRef)

_STATES = "states.npy"
_OBS = "observables.npy"  # written last, atomically: its presence marks a finished segment


class PythonModelConfig(ModelSection):
    """`adapter: python` — a Python step function, run in the worker; states saved as .npy."""

    adapter: Literal["python"] = Field(description="`python` selects this adapter.")
    step: str = Field(description="Import path `module:function` of "
                      "`step(state, t, dt, noise, **parameters) -> new_state`.")
    observe: str | None = Field(None, description="Import path of `observe(state) -> observables`; "
                                "default: the state itself.")
    initial_state: Union[list[float], str] = Field(
        description="The state at step 0: a list of numbers, or the path of a .npy file "
        "(relative to the YAML).")

    @field_validator("step", "observe")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (":" not in v or v.startswith(":") or v.endswith(":")):
            raise ValueError("must be an import path 'module:function', e.g. mymodel:step")
        return v


def _provenance() -> Provenance:
    """This worker's host, pid and Slurm job (empty outside Slurm)."""
    return Provenance(socket.gethostname(), os.getpid(),
                      slurm_job_id=os.environ.get("SLURM_JOB_ID", ""), launcher="python")


def _identity(state):
    return state


class PythonModel(ForwardModel):
    Config = PythonModelConfig

    def __init__(self, config: PythonModelConfig, base_dir: str):
        self.config = config
        self.base_dir = base_dir
        self.noise_mode = config.noise
        self._step = None
        self._observe = None

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(config, base_dir)

    def _functions(self):
        if self._step is None:
            self._step = resolve(self.config.step, self.base_dir)
            self._observe = (resolve(self.config.observe, self.base_dir)
                             if self.config.observe else _identity)
        return self._step, self._observe

    def check(self) -> list[str]:
        problems = []
        for key in ("step", "observe"):
            path = getattr(self.config, key)
            if path is None:
                continue
            try:
                resolve(path, self.base_dir)
            except ImportPathError as exc:
                problems.append(f"key model.{key}: {exc}")
        init = self.config.initial_state
        if isinstance(init, str):
            p = Path(self.base_dir, init)
            if not p.is_file():
                problems.append(f"key model.initial_state: file {p} does not exist; give a .npy "
                                "file (relative to the campaign file) or a list of numbers")
            else:
                try:
                    state = np.load(p, allow_pickle=False)
                    ok = state.dtype.kind in "biuf"
                except Exception as exc:
                    problems.append(f"key model.initial_state: file {p} cannot be read as a .npy "
                                    f"array ({type(exc).__name__}); save the state with numpy.save")
                else:
                    if not ok:
                        problems.append(f"key model.initial_state: file {p} holds {state.dtype} "
                                        "data, not numbers; save a numeric array with numpy.save")
        return problems

    def initial_state(self, workdir: str) -> StateRef:
        init = self.config.initial_state
        state = (np.load(Path(self.base_dir, init)) if isinstance(init, str)
                 else np.asarray(init, dtype=np.float64))
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "initial.npy")
        np.save(path, state)
        return StateRef(path, -1)

    @staticmethod
    def _load(ref: StateRef) -> np.ndarray:
        arr = np.load(ref.path, mmap_mode="r" if ref.index >= 0 else None)
        return np.array(arr[ref.index] if ref.index >= 0 else arr, dtype=np.float64)

    def _checkpoints(self, request: SegmentRequest, states_path: str) -> Checkpoints:
        steps = request.promised_checkpoints()
        return Checkpoints(steps, np.zeros(steps.size, dtype=np.int64),
                           np.arange(steps.size, dtype=np.int64), (states_path,))

    def collect(self, request: SegmentRequest) -> SegmentResult | None:
        obs_path = os.path.join(request.workdir, _OBS)
        states_path = os.path.join(request.workdir, _STATES)
        if not (os.path.exists(obs_path) and os.path.exists(states_path)):
            return None
        try:
            obs = np.load(obs_path)
        except Exception:
            return None
        if obs.shape[0] != request.n_steps:
            return None
        steps = np.arange(request.step0 + 1, request.step0 + request.n_steps + 1, dtype=np.int64)
        return SegmentResult(steps, obs, self._checkpoints(request, states_path),
                             provenance=_provenance(), reused=True)

    def run_segment(self, request: SegmentRequest) -> SegmentResult:
        wall0 = time.perf_counter()
        step, observe = self._functions()
        n, dt, s0 = request.n_steps, request.dt, request.step0
        try:
            state = (self._load(request.start) if request.start is not None
                     else self._load(self.initial_state(request.workdir)))
        except Exception as exc:
            raise ModelRunError(f"segment {request.workdir}: cannot read the start state "
                                f"{request.start}: {exc}", request.workdir, transient=False) from None
        if request.noise is not None:
            noise = np.asarray(request.noise)
        else:
            noise = np.random.default_rng(request.seed).standard_normal((n, self.config.noise_dim))
        params = self.config.parameters
        ckpt_steps = request.promised_checkpoints()
        every_step = ckpt_steps.size == n
        states = None
        obs = None
        model0 = time.perf_counter()
        try:
            for i in range(n):
                state = step(state, (s0 + i) * dt, dt, noise[i], **params)
                o = observe(state)
                if states is None:
                    state = np.asarray(state, dtype=np.float64)
                    o = np.atleast_1d(np.asarray(o, dtype=np.float64))
                    states = np.empty((ckpt_steps.size,) + state.shape)
                    obs = np.empty((n, o.size))
                    k = 0
                obs[i] = o
                if every_step:
                    states[i] = state
                elif s0 + i + 1 == ckpt_steps[k]:
                    states[k] = state
                    k += 1
        except Exception as exc:
            raise ModelRunError(f"segment {request.workdir}: the step function raised "
                                f"{type(exc).__name__}: {exc}", request.workdir,
                                transient=False) from None
        model_time = time.perf_counter() - model0
        os.makedirs(request.workdir, exist_ok=True)
        states_path = os.path.join(request.workdir, _STATES)
        np.save(states_path, states)
        tmp = os.path.join(request.workdir, "observables.tmp.npy")
        np.save(tmp, obs)
        os.replace(tmp, os.path.join(request.workdir, _OBS))
        steps = np.arange(s0 + 1, s0 + n + 1, dtype=np.int64)
        return SegmentResult(steps, obs, self._checkpoints(request, states_path),
                             wall_time=time.perf_counter() - wall0, model_time=model_time,
                             provenance=_provenance())
