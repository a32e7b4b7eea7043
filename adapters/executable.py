"""The ``executable`` adapter: any program speaking the file protocol v1 (docs/protocol.md).

Per segment: make a fresh directory, write ``request.nml``, ``request.json`` and (``file``
mode) the noise file, start the model through a *launcher*, then validate everything it
left behind before the orchestrator sees a single number.  Launchers differ only in how the
command is started: ``local`` runs it as a subprocess in its own process group (a timeout
kills the whole group).  A failed segment's directory is kept (renamed ``*.failed-N``) for
inspection; a finished one gets a ``done.json`` marker so a resumed driver ingests it
instead of re-running it.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from orchestrator.config import ModelSection
from orchestrator.model import (Checkpoints, ForwardModel, ModelRunError, Provenance,
                                SegmentRequest, SegmentResult, StateRef)

PROTOCOL_VERSION = 1
_DONE = "done.json"
_PLACEHOLDERS = ("executable", "request", "request_json", "workdir", "state_in", "step0",
                 "n_steps", "seed")


class ExecutableModelConfig(ModelSection):
    """`adapter: executable` — a legacy program run once per segment through the file
    protocol (docs/protocol.md)."""

    adapter: Literal["executable"] = Field(description="`executable`.")
    executable: str = Field(description="The model program: a path (relative to the YAML) or a "
                            "name found on PATH.")
    command: list[str] = Field(
        default_factory=lambda: ["{executable}", "{request}"],
        description="Command-line template, one list item per argument. Placeholders: "
        "{executable}, {request} (path of request.nml), {request_json}, {workdir}, {state_in}, "
        "{step0}, {n_steps}, {seed}.",
        json_schema_extra={"doc_default": '`["{executable}", "{request}"]`'})
    launcher: Literal["local"] = Field("local", description="How the command is started: `local` "
                                       "(a subprocess in its own process group).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables "
                                "for the model.")
    initial_state: str | None = Field(
        None, description="Checkpoint file holding the state at step 0 (relative to the YAML); "
        "null: the model makes its own initial state when `state_in` is empty.")
    checkpoint_every: int = Field(100, description="The model writes a checkpoint every this many "
                                  "steps (counted from step 0) and at each segment's last step.")
    checkpoint_prefix: str = Field("ckpt_", description="Checkpoint file name prefix.")
    checkpoint_digits: int = Field(8, description="Digits of the zero-padded step in checkpoint names.")
    checkpoint_suffix: str = Field(".bin", description="Checkpoint file name suffix.")
    trace_file: str = Field("trace.txt", description="Name of the trace file the model writes.")
    noise_file: str = Field("noise.bin", description="Name of the noise file (file mode).")

    @field_validator("command")
    @classmethod
    def _cmd(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must list the program and its arguments, e.g. ['{executable}', '{request}']")
        for arg in v:
            try:
                arg.format(**{k: "" for k in _PLACEHOLDERS})
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"argument {arg!r} has an unknown placeholder {exc}; use "
                                 f"{', '.join('{' + p + '}' for p in _PLACEHOLDERS)}") from None
        return v

    @field_validator("checkpoint_digits")
    @classmethod
    def _digits(cls, v: int) -> int:
        if not 1 <= v <= 30:
            raise ValueError("must be an integer in 1..30")
        return v


# --- request files ------------------------------------------------------------------------
def _nml_value(v) -> str:
    if isinstance(v, bool):
        return ".true." if v else ".false."
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, (list, tuple)):
        return ", ".join(_nml_value(x) for x in v)
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to a namelist")


def namelist(groups: dict[str, dict]) -> str:
    out = []
    for name, values in groups.items():
        out.append(f"&{name}")
        out += [f"  {k} = {_nml_value(v)}," for k, v in values.items()]
        out.append("/")
    return "\n".join(out) + "\n"


# --- the launcher -------------------------------------------------------------------------
try:  # loaded here, in the parent: nothing may be loaded between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan if the worker dies


class LocalLauncher:
    """Run the command as a subprocess in a new session (its own process group)."""

    name = "local"
    _running: dict[int, subprocess.Popen] = {}
    _lock = threading.Lock()

    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None) -> tuple[int, Provenance]:
        with open(os.path.join(workdir, "stdout.txt"), "wb") as out, \
                open(os.path.join(workdir, "stderr.txt"), "wb") as err:
            try:
                proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_die_with_parent)
            except FileNotFoundError:
                raise ModelRunError(f"segment {workdir}: the executable {argv[0]} does not exist; "
                                    "build it or fix model.executable", workdir,
                                    transient=False) from None
            except PermissionError:
                raise ModelRunError(f"segment {workdir}: {argv[0]} is not executable; "
                                    f"chmod +x it or fix model.executable", workdir,
                                    transient=False) from None
            with self._lock:
                self._running[proc.pid] = proc
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                raise ModelRunError(f"segment {workdir}: timed out after {timeout} s; the process "
                                    "group was killed (raise runner.segment_timeout if the model "
                                    "is just slow)", workdir, exit_code=None,
                                    stderr_tail=_tail(workdir)) from None
            finally:
                with self._lock:
                    self._running.pop(proc.pid, None)
        return code, Provenance(host=socket.gethostname(), pid=proc.pid,
                                slurm_job_id=os.environ.get("SLURM_JOB_ID", ""), launcher="local")

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    @classmethod
    def kill_all(cls) -> None:
        with cls._lock:
            procs = list(cls._running.values())
        for p in procs:
            cls._kill(p)


def _tail(workdir: str, n: int = 5) -> str:
    try:
        lines = Path(workdir, "stderr.txt").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


# --- the adapter --------------------------------------------------------------------------
class ExecutableModel(ForwardModel):
    Config = ExecutableModelConfig

    def __init__(self, config: ExecutableModelConfig, base_dir: str):
        self.config = config
        self.base_dir = base_dir
        self.noise_mode = config.noise
        self.launcher = LocalLauncher()
        exe = config.executable
        if os.sep in exe:
            self.executable = str(Path(base_dir, exe).resolve())
        else:
            self.executable = shutil.which(exe) or exe
        self.env = {**os.environ, **config.env}

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(config, base_dir)

    def check(self) -> list[str]:
        exe = self.executable
        if not os.path.exists(exe):
            return [f"key model.executable: {exe} does not exist; build the model (e.g. `make -C "
                    f"{Path(exe).parent.parent}`) or fix the path"]
        if os.path.isdir(exe) or not os.access(exe, os.X_OK):
            return [f"key model.executable: {exe} is not an executable file; `chmod +x` it or "
                    "fix the path"]
        if self.config.initial_state:
            p = Path(self.base_dir, self.config.initial_state)
            if not p.is_file():
                return [f"key model.initial_state: {p} does not exist; give an existing "
                        "checkpoint file or null"]
        return []

    @staticmethod
    def shutdown() -> None:
        LocalLauncher.kill_all()

    def initial_state(self, workdir: str) -> StateRef | None:
        if self.config.initial_state is None:
            return None
        return StateRef(str(Path(self.base_dir, self.config.initial_state).resolve()))

    def _ckpt_name(self, step: int) -> str:
        c = self.config
        return f"{c.checkpoint_prefix}{step:0{c.checkpoint_digits}d}{c.checkpoint_suffix}"

    def _segment_values(self, req: SegmentRequest) -> dict:
        c = self.config
        return {"protocol_version": PROTOCOL_VERSION,
                "state_in": req.start.path if req.start is not None else "",
                "step0": req.step0, "n_steps": req.n_steps, "dt": req.dt, "t0": req.t0,
                "checkpoint_every": req.checkpoint_every, "checkpoint_prefix": c.checkpoint_prefix,
                "checkpoint_digits": c.checkpoint_digits, "checkpoint_suffix": c.checkpoint_suffix,
                "noise_mode": self.noise_mode,
                "noise_file": c.noise_file if self.noise_mode == "file" else "",
                "noise_dim": c.noise_dim, "seed": int(req.seed or 0), "trace_file": c.trace_file}

    def prepare(self, req: SegmentRequest) -> list[str]:
        """Make the fresh segment directory, write the request; return the argv."""
        wd = req.workdir
        if os.path.exists(wd):
            shutil.rmtree(wd)  # debris of an interrupted attempt: reproducible, so discard
        os.makedirs(wd)
        seg = self._segment_values(req)
        params = dict(req.parameters)
        Path(wd, "request.nml").write_text(namelist({"segment": seg, "parameters": params}))
        Path(wd, "request.json").write_text(json.dumps({"segment": seg, "parameters": params},
                                                       indent=1))
        if self.noise_mode == "file":
            noise = np.ascontiguousarray(req.noise, dtype="<f8")
            if noise.shape != (req.n_steps, self.config.noise_dim):
                raise ModelRunError(f"segment {wd}: noise of shape {noise.shape}", wd, transient=False)
            noise.tofile(os.path.join(wd, self.config.noise_file))
        fields = {"executable": self.executable, "request": os.path.join(wd, "request.nml"),
                  "request_json": os.path.join(wd, "request.json"), "workdir": wd,
                  "state_in": seg["state_in"], "step0": req.step0, "n_steps": req.n_steps,
                  "seed": seg["seed"]}
        return [arg.format(**fields) for arg in self.config.command]

    def _fail(self, req: SegmentRequest, what: str, code: int | None, transient: bool = True):
        tail = _tail(req.workdir)
        msg = f"segment {req.workdir}: {what}"
        if code is not None:
            msg += f" (exit code {code})"
        if tail:
            msg += f"; stderr ends: {tail}"
        raise ModelRunError(msg, req.workdir, code, tail, transient)

    def ingest(self, req: SegmentRequest, code: int | None = 0) -> SegmentResult:
        """Validate everything the model left in the segment directory."""
        wd = req.workdir
        n_obs = len(self.config.observables)
        trace_path = os.path.join(wd, self.config.trace_file)
        try:
            text = Path(trace_path).read_text()
        except FileNotFoundError:
            self._fail(req, f"the model wrote no trace file {self.config.trace_file}", code)
        except UnicodeDecodeError:
            self._fail(req, f"the trace file {self.config.trace_file} is not text", code)
        lines = text.splitlines()
        if len(lines) != req.n_steps:
            self._fail(req, f"the trace has {len(lines)} line(s), expected {req.n_steps} (steps "
                       f"{req.step0 + 1}..{req.step0 + req.n_steps})", code)
        try:
            values = np.array(text.split(), dtype=np.float64)
        except ValueError:
            bad = next((i for i, ln in enumerate(lines) if not _numbers(ln)), 0)
            self._fail(req, f"trace line {bad + 1} is not numbers: {lines[bad][:80]!r}", code)
        width = 2 + n_obs
        if values.size != req.n_steps * width:
            bad = next((i for i, ln in enumerate(lines) if len(ln.split()) != width), 0)
            self._fail(req, f"trace line {bad + 1} has {len(lines[bad].split())} column(s), "
                       f"expected {width} (step, time and {n_obs} observable(s))", code)
        table = values.reshape(req.n_steps, width)
        steps = table[:, 0]
        expect = np.arange(req.step0 + 1, req.step0 + req.n_steps + 1)
        if not np.array_equal(steps, expect):
            i = int(np.flatnonzero(steps != expect)[0])
            self._fail(req, f"trace line {i + 1} is step {steps[i]:g}, expected step {expect[i]} "
                       "(every step once, in order)", code)
        obs = table[:, 2:]
        if not np.isfinite(table).all():
            i = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
            self._fail(req, f"trace line {i + 1} (step {expect[i]}) holds a non-finite number", code)
        ck_steps = req.promised_checkpoints()
        files = []
        for s in ck_steps:
            p = os.path.join(wd, self._ckpt_name(int(s)))
            try:
                size = os.path.getsize(p)
            except OSError:
                self._fail(req, f"the promised checkpoint {os.path.basename(p)} (step {s}) is missing", code)
            if size == 0:
                self._fail(req, f"the checkpoint {os.path.basename(p)} (step {s}) is empty", code)
            files.append(p)
        ck = Checkpoints(ck_steps, np.arange(ck_steps.size, dtype=np.int64),
                         np.full(ck_steps.size, -1, dtype=np.int64), tuple(files))
        return SegmentResult(expect.astype(np.int64), np.ascontiguousarray(obs), ck)

    def collect(self, request: SegmentRequest) -> SegmentResult | None:
        marker = os.path.join(request.workdir, _DONE)
        if not os.path.exists(marker):
            return None
        try:
            res = self.ingest(request)
            info = json.loads(Path(marker).read_text())
        except (ModelRunError, ValueError, OSError):
            return None
        pv = Provenance(**info.get("provenance", {}))
        return SegmentResult(res.steps, res.observables, res.checkpoints,
                             wall_time=info.get("wall_time", 0.0),
                             model_time=info.get("wall_time", 0.0), provenance=pv, reused=True)

    def run_segment(self, request: SegmentRequest) -> SegmentResult:
        t0 = time.perf_counter()
        argv = self.prepare(request)
        t1 = time.perf_counter()
        try:
            code, pv = self.launcher.run(argv, request.workdir, self.env, request.timeout)
        except ModelRunError:
            self._keep_failed(request.workdir)
            raise
        t2 = time.perf_counter()
        try:
            if code != 0:
                self._fail(request, "the model failed", code)
            res = self.ingest(request, code)
        except ModelRunError as exc:
            kept = self._keep_failed(request.workdir)
            raise ModelRunError(str(exc).replace(request.workdir, kept, 1), kept, exc.exit_code,
                                exc.stderr_tail, exc.transient) from None
        if self.noise_mode == "file":
            try:
                os.remove(os.path.join(request.workdir, self.config.noise_file))  # reproducible
            except OSError:
                pass
        wall = time.perf_counter() - t0
        Path(request.workdir, _DONE).write_text(json.dumps(
            {"wall_time": wall, "model_time": t2 - t1,
             "provenance": {"host": pv.host, "pid": pv.pid, "slurm_job_id": pv.slurm_job_id,
                            "image_digest": pv.image_digest, "launcher": pv.launcher}}))
        return SegmentResult(res.steps, res.observables, res.checkpoints, wall_time=wall,
                             model_time=t2 - t1, provenance=pv)

    @staticmethod
    def _keep_failed(workdir: str) -> str:
        """Rename a failed segment directory so the retry starts fresh and the evidence stays."""
        for i in range(1, 1000):
            dest = f"{workdir}.failed-{i}"
            if not os.path.exists(dest):
                try:
                    os.rename(workdir, dest)
                    return dest
                except OSError:
                    return workdir
        return workdir


def _numbers(line: str) -> bool:
    try:
        [float(x) for x in line.split()]
        return True
    except ValueError:
        return False
