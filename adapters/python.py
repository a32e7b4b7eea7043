"""The ``python`` adapter: a user step function, for prototypes, tests and benchmarks.

The user gives ``step(state, t, dt, noise, **parameters) -> new_state`` and optionally
``observe(state) -> observables`` by import path.  ``t`` is the time at the *start* of the
step, ``noise`` the step's standard normals (length ``noise_dim``).  With the default
``checkpoint_every: 1`` every step is a checkpoint, so branching never replays noise.

Files: one per *trajectory*, not per segment, beside the trajectory's directory:
``<request.trajectory>.f64`` (``.../rRRRR/tNNNNNNN.f64``; ``<workdir>.f64`` for a request
that names no trajectory), raw little-endian float64 (the state's shape is the initial
state's).  Each segment appends one record to it -- its observables (n x m), then its
checkpointed states (c x d; the same numbers again when the states are the observables,
16 bytes a step for the 2-D double well, one layout for every case) -- written with one ``pwritev`` at a position that is
a pure function of the request: 0 for a trajectory's first segment (its start state lies in
an ancestor's file), otherwise just after the start state, which is the previous record's
last row.  A :class:`StateRef` index is the state's offset in float64 elements.  So a
re-run writes the same bytes at the same place (no truncation), and a segment is finished
(``collect`` ingests it after a crash instead of running it again) when the file reaches
its record's end: a write cut short by a crash leaves the file shorter.

Why one file per trajectory: creating a file (and a directory per trajectory) cost
0.3-0.8 ms of kernel time each on this machine's ext4 -- as much as 250 steps of the 2-D
double well -- and cluster file systems are slower still at creating files; a trajectory
has 2-4 segments on the README example.  The driver deletes the file of a trajectory no
live one descends from, as it deletes its directory.

Cost (docs/performance.md): the step loop stores results without a numpy call per step,
the parameters are bound as keywords once, a record is one ``pwritev`` and a start state one
``pread``: ~0.35 µs per step besides the step function, plus one file per trajectory.
"""
from __future__ import annotations

import collections
import contextlib
import io
import keyword
import math
import os
import socket
import threading
import time
from array import array
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.lib import format as npformat
from pydantic import Field, field_validator, model_validator

from orchestrator.config import ModelSection
from orchestrator.imports import ImportPathError, resolve
from orchestrator.model import (
    Checkpoints,
    ForwardModel,
    ModelRunError,
    Provenance,
    SegmentRequest,
    SegmentResult,
    StateRef,
)

_SUFFIX = ".f64"  # a trajectory's record file: <trajectory directory>.f64 (see _record_file)
_KEEP_STATES = 64  # last states kept in memory for the next segment (PythonModel._last) ...
_KEEP_NUMBERS = 4096  # ... when a state has at most this many numbers (32 KiB)


class PythonModelConfig(ModelSection):
    """`adapter: python` — a Python step function, run in the worker; states saved as .npy."""

    adapter: Literal["python"] = Field(description="`python` selects this adapter.")
    step: str | None = Field(None, description="Import path `module:function` of "
                             "`step(state, t, dt, noise, **parameters) -> new_state`. Give "
                             "`step` or `segment`.")
    segment: str | None = Field(
        None, description="Instead of `step`, the fast path: import path of `segment(state, t0, "
        "dt, noise, **parameters) -> (states, observables)`, which runs a whole segment per call "
        "(`noise` is the segment's (n, noise_dim) array, `states` one row per step, "
        "`observables` shape (n, number of observables)); for loops in plain floats, numba or "
        "vectorised code.")
    observe: str | None = Field(None, description="Import path of `observe(state) -> observables`; "
                                "default: the state itself (ignored with `segment`).")
    initial_state: list[float] | str = Field(
        description="The state at step 0: a list of numbers, or the path of a .npy file "
        "(relative to the YAML).")

    @field_validator("step", "observe", "segment")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (":" not in v or v.startswith(":") or v.endswith(":")):
            raise ValueError("must be an import path 'module:function', e.g. mymodel:step")
        return v

    @model_validator(mode="after")
    def _step_or_segment(self) -> PythonModelConfig:
        if (self.step is None) == (self.segment is None):
            raise ValueError("give exactly one of model.step (a step function) and "
                             "model.segment (a segment function)")
        return self


_PROVENANCE: tuple[int, Provenance] | None = None


def _provenance() -> Provenance:
    """This worker's host, pid and Slurm job (empty outside Slurm); built once per process."""
    global _PROVENANCE
    pid = os.getpid()
    if _PROVENANCE is None or _PROVENANCE[0] != pid:
        _PROVENANCE = (pid, Provenance(socket.gethostname(), pid,
                                       slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                                       launcher="python"))
    return _PROVENANCE[1]


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
        self._shape: tuple[int, ...] | None = None  # of every state: the initial state's
        self._size = 0  # numbers in a state (with _shape)
        self._files = _OpenFiles()  # record files kept open between segments
        # the last state each recent segment wrote, by (record file, index): the next segment
        # of the trajectory starts from it, and a pread costs a system call (see _OpenFiles)
        self._last: collections.OrderedDict[tuple[str, int], np.ndarray] = (
            collections.OrderedDict())
        self._last_lock = threading.Lock()
        self._initial: tuple[tuple, np.ndarray] | None = None  # (file identity, state)

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(config, base_dir)

    def _functions(self):
        """(step with the parameters bound, observe), resolved once per adapter."""
        if self._step is None:
            if self.config.segment is not None:
                fn = resolve(self.config.segment, self.base_dir)
                params = dict(self.config.parameters)
                self._step = lambda state, t0, dt, noise: fn(state, t0, dt, noise, **params)
                self._observe = None
                return self._step, self._observe
            assert self.config.step is not None
            self._step = _bind(resolve(self.config.step, self.base_dir), self.config.parameters)
            self._observe = (resolve(self.config.observe, self.base_dir)
                             if self.config.observe else _identity)
        return self._step, self._observe

    def check(self) -> list[str]:
        problems = []
        for key in ("step", "segment", "observe"):
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

    def state_shape(self) -> tuple[int, ...]:
        """The shape of every state (the initial state's): a record file holds bare numbers."""
        if self._shape is None:
            init = self.config.initial_state
            self._shape = (tuple(np.load(Path(self.base_dir, init), mmap_mode="r").shape)
                           if isinstance(init, str) else np.asarray(init, dtype=np.float64).shape)
            self._size = math.prod(self._shape)
        return self._shape

    def state_size(self) -> int:
        """Numbers in a state (asked several times per segment: kept as a plain int)."""
        if self._shape is None:
            self.state_shape()
        return self._size

    def _load(self, ref: StateRef) -> np.ndarray:
        if ref.path.endswith(_SUFFIX):
            shape = self.state_shape()
            with self._last_lock:
                kept = self._last.pop((ref.path, ref.index), None)
            if kept is not None:  # the bytes this process wrote there: a copy, never shared
                return kept.reshape(shape)
            return self._files.read(ref.path, ref.index, self._size).reshape(shape)
        if ref.index < 0:
            return self._load_whole(ref.path)
        row = _read_row(ref.path, ref.index)  # a .npy file of states (run directories of 0.x)
        if row is not None:
            return row
        with _AST_LOCK:
            arr = np.load(ref.path, mmap_mode="r")
        return np.array(arr[ref.index], dtype=np.float64)

    def _load_whole(self, path: str) -> np.ndarray:
        """A .npy file holding one state: the initial state, read by every first segment;
        kept (a copy handed out each time) while the file stays the same one."""
        st = os.stat(path)
        key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
        if self._initial is not None and self._initial[0] == key:
            return self._initial[1].copy()
        with _AST_LOCK:
            state = np.array(np.load(path), dtype=np.float64)
        self._initial = (key, state.copy())
        return state

    def shutdown(self) -> None:
        """Close the record files kept open (the runs themselves are plain calls)."""
        self._files.close()

    def state_bytes(self, ref: StateRef) -> bytes | None:
        """One state of a record file (``tams check`` compares them byte for byte)."""
        if not ref.path.endswith(_SUFFIX):
            return None
        return self._load(ref).tobytes()

    def _layout(self, request: SegmentRequest, n_ckpt: int) -> tuple[str, int, int, int]:
        """(record file, first element, elements of observables, elements of states) of the
        segment's record: it starts right after its start state when that is the last row of
        this trajectory's own file, else (a trajectory's first segment) at 0."""
        path = _record_file(request)
        d = self.state_size()
        start = request.start
        begin = start.index + d if (start is not None and start.index >= 0
                                    and start.path == path) else 0
        return path, begin, request.n_steps * len(self.config.observables), n_ckpt * d

    def _checkpoints(self, path: str, begin: int, n_obs: int, steps: np.ndarray) -> Checkpoints:
        n = steps.size
        first = begin + n_obs
        d = self.state_size()
        index = (np.arange(first, first + d * n, d, dtype=np.int64) if d
                 else np.full(n, first, dtype=np.int64))
        return Checkpoints(steps, np.zeros(n, dtype=np.int64), index, (path,))

    def collect(self, request: SegmentRequest) -> SegmentResult | None:
        # asked before every first attempt: the file's length says whether it is done, so
        # the promised checkpoints are counted, not listed, until it is
        path, begin, n_obs, n_states = self._layout(request, _n_promised(request))
        try:
            if self._files.size(path) < (begin + n_obs + n_states) * 8:
                return None  # not written yet, or cut short by a crash: run it
            obs = self._files.read(path, begin, n_obs).reshape(request.n_steps, -1)
        except OSError:
            return None
        steps = np.arange(request.step0 + 1, request.step0 + request.n_steps + 1, dtype=np.int64)
        steps_ck = request.promised_checkpoints()
        return SegmentResult(steps, obs, self._checkpoints(path, begin, n_obs, steps_ck),
                             provenance=_provenance(), reused=True)

    def run_segment(self, request: SegmentRequest) -> SegmentResult:
        wall0 = time.perf_counter()
        step, observe = self._functions()
        n, dt, s0 = request.n_steps, request.dt, request.step0
        if n < 1:
            raise ModelRunError(f"segment {request.workdir}: asked for {n} steps; a segment runs "
                                "at least one", request.workdir, transient=False)
        try:
            state = (self._load(request.start) if request.start is not None
                     else self._load(self.initial_state(request.workdir)))
        except Exception as exc:
            raise ModelRunError(f"segment {request.workdir}: cannot read the start state "
                                f"{request.start}: {exc}", request.workdir, transient=False) from None
        if request.noise is not None:
            noise = np.asarray(request.noise)  # an array, or anything with __array__
        else:
            noise = np.random.default_rng(request.seed).standard_normal((n, self.config.noise_dim))
        ckpt_steps = request.promised_checkpoints()
        model0 = time.perf_counter()
        try:
            if self.config.segment is not None:
                states, obs = _run_segment_function(step, state, noise, s0, n, dt, ckpt_steps,
                                                    self.config.segment)
            else:
                states, obs = _advance(step, observe, state, noise, s0, n, dt, ckpt_steps)
        except ModelRunError as exc:
            raise ModelRunError(f"segment {request.workdir}: {exc}", request.workdir,
                                transient=False) from None
        except Exception as exc:
            raise ModelRunError(f"segment {request.workdir}: the step function raised "
                                f"{type(exc).__name__}: {exc}", request.workdir,
                                transient=False) from None
        model_time = time.perf_counter() - model0
        path, begin, n_obs, n_states = self._layout(request, ckpt_steps.size)
        if states.size != n_states:
            raise ModelRunError(
                f"segment {request.workdir}: the step function returned states of "
                f"{states.size // max(1, ckpt_steps.size)} numbers; the initial state has "
                f"{n_states // max(1, ckpt_steps.size)} (shape {self.state_shape()}): a state "
                "keeps its size", request.workdir, transient=False)
        if obs.size != n_obs:  # the driver's validation would refuse it: keep it off the file
            raise ModelRunError(
                f"segment {request.workdir}: the model reported observables of shape "
                f"{obs.shape}; expected ({n}, {len(self.config.observables)}) as listed in "
                "model.observables", request.workdir, transient=False)
        self._files.write(path, begin, obs, states)
        if ckpt_steps.size and self._size <= _KEEP_NUMBERS:
            last = np.array(states.reshape(ckpt_steps.size, -1)[-1], dtype=np.float64)
            with self._last_lock:
                self._last[(path, begin + n_obs + n_states - self._size)] = last
                if len(self._last) > _KEEP_STATES:
                    self._last.popitem(last=False)
        steps = np.arange(s0 + 1, s0 + n + 1, dtype=np.int64)
        return SegmentResult(steps, obs, self._checkpoints(path, begin, n_obs, ckpt_steps),
                             wall_time=time.perf_counter() - wall0, model_time=model_time,
                             provenance=_provenance())


def _n_promised(request: SegmentRequest) -> int:
    """``request.promised_checkpoints().size``, in integer arithmetic."""
    last = request.step0 + request.n_steps
    every = max(1, int(request.checkpoint_every))
    first = (request.step0 // every + 1) * every
    n = (last - first) // every + 1 if first <= last else 0
    return n if n and first + (n - 1) * every == last else n + 1


def _record_file(request: SegmentRequest) -> str:
    """A segment's record file: its trajectory's (``<trajectory>.f64``), or its own beside its
    directory's path when the request names no trajectory; the step function needs no
    working directory, so none is made."""
    return (request.trajectory or request.workdir) + _SUFFIX


# --- the step loop ------------------------------------------------------------------------
# What the user's functions see is the same on every path: step i gets the state step i-1
# returned (step 1 the loaded start state, step 2 the first returned state converted to a
# float64 array), the time (step0 + i) * dt, dt, the row noise[i] and the parameters as
# keywords; observe gets each returned state.  What differs is only how the results are
# stored.  The general path assigns each state and observation into a preallocated float64
# row (numpy's conversion and broadcasting).  The sequence path, taken when the first state
# returned is a tuple or list of numbers, appends each state's numbers to an array('d')
# (a C double per number, converted with float(): the same IEEE value numpy stores), about
# 4x cheaper than a row assignment, and copies the values at once, so a step that mutates
# and returns the same list is stored correctly.  Any step whose result does not fit (other
# length, not a flat sequence of numbers) switches the rest of the segment to the general
# path, which then behaves exactly as it always did.

class _Fallback(Exception):
    pass


def _run_segment_function(fn, state, noise, s0: int, n: int, dt: float, ckpt_steps: np.ndarray,
                          name: str) -> tuple[np.ndarray, np.ndarray]:
    """The `segment` fast path: one call for the whole segment, results checked for shape."""
    out = fn(state, s0 * dt, dt, noise)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ModelRunError(f"the segment function {name} returned {type(out).__name__}; it must "
                            "return (states, observables)")
    states = np.asarray(out[0], dtype=np.float64)
    obs = np.asarray(out[1], dtype=np.float64)
    if obs.ndim == 1:
        obs = obs.reshape(-1, 1)
    if states.shape[:1] != (n,) or obs.shape[:1] != (n,) or obs.ndim != 2:
        raise ModelRunError(f"the segment function {name} returned states of shape "
                            f"{states.shape} and observables of shape {obs.shape}; both need one "
                            f"row per step ({n})")
    if out[0] is out[1] and ckpt_steps.size == n:  # states are the observables: one array
        return obs, obs
    return np.ascontiguousarray(states[ckpt_steps - s0 - 1]), obs


def _bind(step, params: dict):
    """``step`` with the parameters bound as keyword arguments: ``call(state, t, dt, noise)``
    is ``step(state, t, dt, noise, **params)``.  Spelled out as literal keywords in a small
    generated function, because unpacking ``**params`` builds a dict at every call (a third
    of the 2-D double well's step).  Names that cannot be spelled so keep ``**params``."""
    if not params:
        return step
    names = list(params)
    if not all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k)
               for k in names):
        return lambda state, t, dt, noise: step(state, t, dt, noise, **params)
    ns = {"__step": step, **{f"__p{j}": params[k] for j, k in enumerate(names)}}
    kws = ", ".join(f"{k}=__p{j}" for j, k in enumerate(names))
    exec(f"def call(state, t, dt, noise, /):\n    return __step(state, t, dt, noise, {kws})\n", ns)
    return ns["call"]


def _advance(step, observe, state, noise, s0: int, n: int, dt: float,
             ckpt_steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the n steps; return (states at ``ckpt_steps``, observables of every step).
    ``step`` is the user's step function with the parameters bound (:func:`_bind`)."""
    identity = observe is _identity
    raw = step(state, (s0 + 0) * dt, dt, noise[0])
    o_raw = raw if identity else observe(raw)
    state = np.asarray(raw, dtype=np.float64)
    o = np.atleast_1d(np.asarray(o_raw, dtype=np.float64))
    every_step = ckpt_steps.size == n
    seq = type(raw) in (tuple, list) and state.ndim == 1
    if not identity:
        seq = seq and type(o_raw) in (tuple, list) and o.ndim == 1
    if seq:
        return _advance_seq(step, observe, state, o, noise, s0, n, dt, ckpt_steps,
                            identity, every_step)
    states = np.empty((ckpt_steps.size,) + state.shape)
    obs = None if (identity and every_step and state.ndim == 1) else np.empty((n, o.size))
    return _advance_general(step, observe, state, o, 0, noise, s0, n, dt, ckpt_steps,
                            states, obs, 0)


def _advance_general(step, observe, state, o, i: int, noise, s0, n, dt, ckpt_steps,
                     states: np.ndarray, obs: np.ndarray | None, k: int):
    """The general loop from step i, whose state and observation are already computed.
    ``obs is None``: identity observe with every step checkpointed and 1-D states, so the
    observables are the states (one row assignment per step instead of two)."""
    every_step = ckpt_steps.size == n
    identity = observe is _identity
    while True:
        if obs is not None:
            obs[i] = o
        if every_step:
            states[i] = state
        elif s0 + i + 1 == ckpt_steps[k]:
            states[k] = state
            k += 1
        i += 1
        if i == n:
            return states, (states if obs is None else obs)
        state = step(state, (s0 + i) * dt, dt, noise[i])
        o = state if identity else observe(state)


def _advance_seq(step, observe, state, o, noise, s0, n, dt, ckpt_steps, identity,
                 every_step):
    """The sequence loop (see above); ``state`` and ``o`` are step 1's, already converted."""
    d, m = state.size, o.size
    obuf = array("d", o.tobytes())
    oext = obuf.extend
    if identity:  # observables = states; the checkpoint rows are picked at the end
        sbuf, ck = obuf, None
        i = 1
        try:
            for i in range(1, n):
                state = step(state, (s0 + i) * dt, dt, noise[i])
                try:
                    if len(state) != d:
                        raise _Fallback
                    oext(state)
                except Exception:
                    raise _Fallback from None
        except _Fallback:
            return _seq_to_general(step, observe, state, state, i, noise, s0, n, dt,
                                   ckpt_steps, obuf, sbuf, d, m)
        obs = np.frombuffer(obuf, dtype=np.float64).reshape(n, m)
        if every_step:
            return obs, obs
        return obs[ckpt_steps - (s0 + 1)], obs
    # an observe function of its own: states kept at the checkpoint steps only
    sbuf = array("d", state.tobytes()) if ckpt_steps[0] == s0 + 1 else array("d")
    sext = sbuf.extend
    ck = None if every_step else frozenset((ckpt_steps - (s0 + 1)).tolist())
    i = 1
    try:
        for i in range(1, n):
            state = step(state, (s0 + i) * dt, dt, noise[i])
            o = observe(state)
            try:
                if len(o) != m or len(state) != d:
                    raise _Fallback
                oext(o)
                if ck is None or i in ck:
                    sext(state)
            except Exception:
                raise _Fallback from None
    except _Fallback:
        return _seq_to_general(step, observe, state, o, i, noise, s0, n, dt, ckpt_steps,
                               obuf, sbuf, d, m)
    states = np.frombuffer(sbuf, dtype=np.float64).reshape(ckpt_steps.size, d)
    return states, np.frombuffer(obuf, dtype=np.float64).reshape(n, m)


def _seq_to_general(step, observe, state, o, i, noise, s0, n, dt, ckpt_steps, obuf,
                    sbuf, d, m):
    """Step i's result does not fit the sequence path: move steps 0..i-1 into the general
    path's arrays and let it store step i (as it always did) and run the rest."""
    identity = observe is _identity
    every_step = ckpt_steps.size == n
    del obuf[i * m:]  # a conversion that failed halfway may have appended a part
    done = np.frombuffer(obuf, dtype=np.float64).reshape(i, m)
    states = np.empty((ckpt_steps.size, d))
    k = int(np.searchsorted(ckpt_steps, s0 + i, side="right"))  # checkpoints among 0..i-1
    if identity:
        obs = None if every_step else np.empty((n, m))
        if every_step:
            states[:i] = done
        else:
            obs[:i] = done
            states[:k] = done[ckpt_steps[:k] - (s0 + 1)]
    else:
        obs = np.empty((n, m))
        obs[:i] = done
        del sbuf[k * d:]
        states[:k] = np.frombuffer(sbuf, dtype=np.float64).reshape(k, d)
    return _advance_general(step, observe, state, o, i, noise, s0, n, dt, ckpt_steps,
                            states, obs, k)


# --- files --------------------------------------------------------------------------------
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A .npy header is parsed with ast.literal_eval, and CPython 3.11's ast is not thread-safe:
# 1024 thread workers loading the initial state at once failed with "AST constructor
# recursion depth mismatch" (docs/performance.md).  Record files have no header; the
# initial state and .npy files of old run directories take this lock.
_AST_LOCK = threading.Lock()


class _OpenFiles:
    """The record files of one model, kept open between segments (least recently used first
    out, at most ``cap`` idle ones), shared by the worker threads.

    Why: a segment reads its start state, writes its record and, on a first attempt, asks
    the file's length.  Opened and closed each time that was seven system calls per
    segment, and each one lets go of the GIL: with thread workers and the driver competing
    for it, taking it back after a system call cost ~30 µs of CPU here, so that writing a
    record cost 216 µs in a thread worker against 65 µs alone.  Open once, it is one
    ``pread``, one ``pwritev`` and one ``fstat``.

    A file is only ever closed when no thread is using it (each use holds it).  A record file
    the driver deletes belongs to a forgotten trajectory, which no segment reads or writes
    again; its disk space comes back when it leaves the cache or the model shuts down."""

    def __init__(self, cap: int = 64):
        self.cap = cap
        self._lock = threading.Lock()
        self._open: collections.OrderedDict[str, list[int]] = collections.OrderedDict()  # [fd, users]

    def _take(self, path: str, create: bool) -> int:
        with self._lock:
            entry = self._open.get(path)
            if entry is not None:
                entry[1] += 1
                self._open.move_to_end(path)
                return entry[0]
        flags = os.O_RDWR | _O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            if not create:
                raise
            # the replica's first trajectory: make its directory
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o666)
        spare: list[int] = []
        with self._lock:
            entry = self._open.get(path)
            if entry is not None:  # another thread opened it meanwhile: use that one
                entry[1] += 1
                spare.append(fd)
                fd = entry[0]
            else:
                self._open[path] = [fd, 1]
                idle = len(self._open) - self.cap
                if idle > 0:
                    for p in [p for p, e in self._open.items() if e[1] == 0][:idle]:
                        spare.append(self._open.pop(p)[0])
        for f in spare:
            os.close(f)
        return fd

    def _give(self, path: str) -> None:
        with self._lock:
            entry = self._open.get(path)
            if entry is not None:
                entry[1] -= 1

    def read(self, path: str, begin: int, count: int) -> np.ndarray:
        """``count`` float64 numbers from element ``begin`` (a fresh array)."""
        fd = self._take(path, create=False)
        try:
            data = os.pread(fd, count * 8, begin * 8)
        finally:
            self._give(path)
        if len(data) != count * 8:
            raise OSError(f"{path}: {len(data)} bytes at element {begin}, expected {count * 8}")
        return np.frombuffer(data, dtype="<f8").astype(np.float64)

    def size(self, path: str) -> int:
        """The file's length in bytes (``OSError`` when it does not exist)."""
        with self._lock:
            entry = self._open.get(path)
            if entry is None:
                return os.stat(path).st_size  # not ours yet: do not create it
            entry[1] += 1
        try:
            return os.fstat(entry[0]).st_size
        finally:
            self._give(path)

    def write(self, path: str, begin: int, *arrays: np.ndarray) -> None:
        """Write the arrays (float64, C order) one after the other at element ``begin`` of
        the file, with one ``pwritev``; create the file (and the replica's directory) if
        needed, never truncate it (a re-run rewrites the same bytes; later records stay)."""
        parts = [memoryview(np.ascontiguousarray(a, dtype="<f8").data).cast("B") for a in arrays]
        total = sum(p.nbytes for p in parts)
        fd = self._take(path, create=True)
        try:
            pos = begin * 8
            done = os.pwritev(fd, parts, pos)
            if done < total:  # a short write (very large records): write the rest
                rest = memoryview(b"".join(bytes(p) for p in parts))[done:]
                pos += done
                while rest:
                    k = os.pwrite(fd, rest, pos)
                    rest, pos = rest[k:], pos + k
        finally:
            self._give(path)

    def close(self) -> None:
        with self._lock:
            fds = [e[0] for e in self._open.values()]
            self._open.clear()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


_LAYOUTS: dict[bytes, tuple | None] = {}  # .npy header -> (data offset, row shape) or None
_HEAD = 4096  # bytes read at once: header and, for small states, the row too


def _read_row(path: str, index: int) -> np.ndarray | None:
    """Row ``index`` of a float64 C-order .npy file (the layout before record files), read with one
    or two ``pread``; ``None`` when the file is anything else (the caller uses np.load)."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        head = os.pread(fd, _HEAD, 0)
        if head[:8] != b"\x93NUMPY\x01\x00" or len(head) < 10:
            return None
        offset = 10 + int.from_bytes(head[8:10], "little")
        key = head[:offset]
        if key in _LAYOUTS:
            layout = _LAYOUTS[key]
        else:
            layout = _LAYOUTS[key] = _layout(key, offset)
        if layout is None:
            return None
        rows, row_shape, row_bytes = layout
        if not 0 <= index < rows:
            return None
        pos = offset + index * row_bytes
        data = head[pos:pos + row_bytes]
        if len(data) != row_bytes:
            data = os.pread(fd, row_bytes, pos)
            if len(data) != row_bytes:
                return None
    finally:
        os.close(fd)
    return np.frombuffer(data, dtype=np.float64).reshape(row_shape).copy()


def _layout(header: bytes, offset: int):
    try:
        fh = io.BytesIO(header)
        npformat.read_magic(fh)
        with _AST_LOCK:
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
    except Exception:
        return None
    if fortran or dtype != np.dtype(np.float64) or len(shape) < 1 or fh.tell() != offset:
        return None
    row_shape = tuple(shape[1:])
    return shape[0], row_shape, int(np.prod(row_shape, dtype=np.int64)) * 8
