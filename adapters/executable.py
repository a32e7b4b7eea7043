"""The ``executable`` adapter: any program speaking the file protocol v1 (docs/protocol.md).

Per segment: make a fresh directory, write ``request.nml``, ``request.json`` and (``file``
mode) the noise file, start the model through a *launcher*, then validate everything it
left behind before the orchestrator sees a single number.  Launchers differ only in how the
command is started: ``local`` runs it as a subprocess in its own process group (a timeout
kills the whole group); ``docker`` and ``apptainer`` run it in a container (adapters/
docker_launcher.py, adapters/apptainer_launcher.py, docs/containers.md).  A failed
segment's directory is kept (renamed ``*.failed-N``) for inspection; a finished one gets a
``done.json`` marker so a resumed driver ingests it instead of re-running it.

The launcher is found by its name (``model.launcher``) in the ``tams.launchers`` entry
points, never by an if/elif here, and its section (``model.docker``...) is validated by the
launcher's own ``Config``: the model section is a discriminated union by ``launcher``
(:meth:`ExecutableModelConfig.model_validate`), so a plug-in launcher and its keys work
exactly like the built-in ones (docs/plugins.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from functools import cache
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
from pydantic import Field, create_model, field_validator, model_validator

from orchestrator.config import ModelSection, tagged_union
from orchestrator.model import (
    Checkpoints,
    ForwardModel,
    ModelRunError,
    Provenance,
    SegmentRequest,
    SegmentResult,
    StateRef,
)
from orchestrator.registry import LAUNCHERS, launcher_class

from .launchers import Launcher
from .launchers import tail as _tail

PROTOCOL_VERSION = 1
_DONE = "done.json"
_PLACEHOLDERS = ("executable", "request", "request_json", "workdir", "state_in", "step0",
                 "n_steps", "seed")


class ExecutableModelConfig(ModelSection):
    """`adapter: executable` — a legacy program run once per segment through the file
    protocol (docs/protocol.md)."""

    adapter: Literal["executable"] = Field(description="`executable`.")
    executable: str = Field(description="The model program: a path (relative to the YAML) or a "
                            "name found on PATH; with a container launcher, a path or name "
                            "inside the image (not resolved on the host).")
    command: list[str] = Field(
        default_factory=lambda: ["{executable}", "{request}"],
        json_schema_extra={"doc_default": "`['{executable}', '{request}']`"},
        description="Command-line template, one list item per argument. Placeholders: "
        "{executable}, {request} (path of request.nml), {request_json}, {workdir}, {state_in}, "
        "{step0}, {n_steps}, {seed}.")
    launcher: str = Field(
        "local", description="How the command is started: `local` (a subprocess in its own "
        "process group), `docker` (a container per segment, section `model.docker`), "
        "`apptainer` (`apptainer exec`, section `model.apptainer`), or a launcher a plug-in "
        "registers (docs/plugins.md). A launcher with a section needs it; another "
        "launcher's section is refused.")
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
    trace_format: Literal["text", "binary"] | None = Field(
        None, description="`text` (null, the default): the trace is text, one line per step. "
        "`binary`: raw little-endian float64 rows (step, time, observables...), validated as "
        "strictly, with no formatting or parsing: for cheap models (the request then holds "
        "`trace_format = 'binary'`; docs/protocol.md §5). The same seed gives the same "
        "database either way.")
    checkpoint_file: str | None = Field(
        None, description="null (the default): one file per checkpoint, named by "
        "`checkpoint_prefix`, `checkpoint_digits` and `checkpoint_suffix`. A file name (e.g. "
        "`checkpoints.bin`): the model writes every checkpoint of a segment into this one file, "
        "records of equal size in step order, and a restart gets `state_in` with "
        "`state_offset` (in bytes). Far fewer files for cheap models and cluster file systems "
        "(docs/protocol.md §5).")

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

    @model_validator(mode="after")
    def _no_section_needed(self):
        # only when built directly, ExecutableModelConfig(**keys): model_validate picks the
        # launcher's variant, which has its section
        if type(self) is ExecutableModelConfig:
            try:
                needs = launcher_class(self.launcher).Config is not None
            except KeyError as exc:
                raise ValueError(str(exc)) from None
            if needs:
                raise ValueError(f"launcher {self.launcher} needs its `{self.launcher}:` "
                                 "section; build this config with "
                                 "ExecutableModelConfig.model_validate(keys)")
        return self

    # --- the discriminated union by `launcher` --------------------------------------------
    @classmethod
    def variants(cls) -> dict[str, type[ExecutableModelConfig]]:
        """One subclass per registered launcher: `launcher` fixed to its name, plus the
        launcher's section `model.<name>` when its ``Config`` has one."""
        return {name: _variant(name) for name in LAUNCHERS.names()}

    @classmethod
    def section_type(cls) -> Any:
        """The union that validates a model section (by `launcher`, default `local`)."""
        return _union()

    @classmethod
    def model_validate(cls, obj: Any, *args, **kwargs):
        """Validate a model section through the union, so the result is the variant of its
        launcher (with the launcher's section); a variant validates itself."""
        if cls is ExecutableModelConfig:
            from pydantic import TypeAdapter
            return _adapter(TypeAdapter).validate_python(obj, *args, **kwargs)
        return super().model_validate(obj, *args, **kwargs)

    def __reduce__(self):
        # variants are made at run time (not importable by name): pickle by value
        return (_from_dump, (self.model_dump(),))

    @field_validator("checkpoint_file")
    @classmethod
    def _ckpt_file(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v in (".", "..")):
            raise ValueError("must be a plain file name (in the segment directory), e.g. "
                             "checkpoints.bin, or null for a file per checkpoint")
        return v

    @field_validator("checkpoint_digits")
    @classmethod
    def _digits(cls, v: int) -> int:
        if not 1 <= v <= 30:
            raise ValueError("must be an integer in 1..30")
        return v


@cache
def _variant(name: str) -> type[ExecutableModelConfig]:
    cls = launcher_class(name)
    fields: dict[str, Any] = {"launcher": (Literal[name], Field(
        "local" if name == "local" else ..., description=f"`{name}`."))}
    if cls.Config is not None:
        doc = " ".join((cls.Config.__doc__ or "").split()).split(". ")[0].rstrip(".") + "."
        fields[name] = (cls.Config, Field(description=f"With `launcher: {name}` (and only "
                                          f"then): the section `model.{name}`. {doc}".strip()))
    return create_model(f"ExecutableModelConfig_{name.replace('-', '_')}",
                        __base__=ExecutableModelConfig, __module__=__name__, **fields)


@cache
def _union() -> Any:
    return tagged_union("launcher", ExecutableModelConfig.variants(), default="local",
                        what="launcher")


@cache
def _adapter(type_adapter):
    return type_adapter(_union())


def _makefile_folder(start: Path, levels: int = 3) -> Path | None:
    """The nearest folder holding a Makefile, from the executable's own folder up at most
    ``levels`` parents (``bin/`` inside the model's folder is the usual layout); None if none:
    an unrelated Makefile further up would be the wrong hint."""
    d = start
    for _ in range(levels + 1):
        if any((d / name).is_file() for name in ("Makefile", "makefile", "GNUmakefile")):
            return d
        if d.parent == d:
            break
        d = d.parent
    return None


def _shown(folder: Path) -> str:
    """A folder as the user would type it: relative to the current directory when that is
    short (at most two `..`), else absolute."""
    try:
        rel = os.path.relpath(folder)
    except (OSError, ValueError):
        return str(folder)
    return rel if not rel.startswith(os.path.join(os.pardir, os.pardir, os.pardir)) else str(folder)


def _from_dump(data: dict) -> ExecutableModelConfig:
    return ExecutableModelConfig.model_validate(data)


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


# --- the adapter --------------------------------------------------------------------------
class ExecutableModel(ForwardModel):
    Config = ExecutableModelConfig

    def __init__(self, config: ExecutableModelConfig, base_dir: str):
        self.config = config
        self.base_dir = base_dir
        self.noise_mode = config.noise
        exe = config.executable
        # this model's own launcher instance: it alone knows (and stops) this model's runs
        cls = launcher_class(config.launcher)
        self.launcher: Launcher = cls.from_config(getattr(config, config.launcher, None), base_dir)
        if cls.in_container:
            self.executable = exe  # resolved inside the image
            self.env = dict(config.env)  # the host's environment stays outside
        elif os.sep in exe:
            self.executable = str(Path(base_dir, exe).resolve())
            self.env = {**os.environ, **config.env}
        else:
            self.executable = shutil.which(exe) or exe
            self.env = {**os.environ, **config.env}

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(config, base_dir)

    def check(self) -> list[str]:
        problems = self.launcher.check()
        if problems or self.launcher.in_container:
            return problems or self._check_initial_state()
        exe = self.executable
        if os.sep not in self.config.executable and shutil.which(self.config.executable) is None:
            if Path(self.base_dir, exe).exists():
                return [(f"key model.executable: {exe} is not found on PATH, but {exe} exists "
                         f"beside the YAML: did you mean `executable: ./{exe}`? (a bare name is "
                         "looked up on PATH, as a shell does)")]
            return [(f"key model.executable: {exe} is not found on PATH; give its path "
                    "(relative to the YAML) or extend PATH")]
        if not os.path.exists(exe):
            folder = _makefile_folder(Path(exe).parent)
            build = (f"build the model (`make -C {_shown(folder)}`)" if folder is not None
                     else "build the model")
            return [f"key model.executable: {exe} does not exist; {build} or fix the path"]
        if os.path.isdir(exe) or not os.access(exe, os.X_OK):
            return [(f"key model.executable: {exe} is not an executable file; `chmod +x` it or "
                    "fix the path")]
        return self._check_initial_state()

    def _check_initial_state(self) -> list[str]:
        if self.config.initial_state:
            p = Path(self.base_dir, self.config.initial_state)
            if not p.is_file():
                return [(f"key model.initial_state: {p} does not exist; give an existing "
                        "checkpoint file or null")]
        return []

    def shutdown(self) -> None:
        """Stop this model's runs still going (its launcher's), and no other model's."""
        self.launcher.close()

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
                "noise_dim": c.noise_dim, "seed": int(req.seed or 0), "trace_file": c.trace_file,
                # keys of the optional parts of v1, present only when the campaign uses them
                # (a Fortran model must declare every key it is given)
                **({"trace_format": "binary"} if c.trace_format == "binary" else {}),
                **({"checkpoint_file": c.checkpoint_file,
                    "state_offset": max(req.start.index, 0) if req.start is not None else 0}
                   if c.checkpoint_file else {})}

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

    def _fail(self, req: SegmentRequest, what: str, code: int | None,
              transient: bool = True) -> NoReturn:
        tail = _tail(req.workdir)
        msg = f"segment {req.workdir}: {what}"
        if code is not None and code < 0:  # a process killed by a signal (a segfault...)
            msg += f" ({_signal_text(-code)}, exit code {code})"
        elif code is not None and code > 128 and self.launcher.in_container:
            # a container's main process killed by signal N exits with 128 + N
            msg += f" (exit code {code}: probably {_signal_text(code - 128)} in the container)"
        elif code is not None:
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
            raw = Path(trace_path).read_bytes()
        except FileNotFoundError:
            self._fail(req, f"the model wrote no trace file {self.config.trace_file}", code)
        width = 2 + n_obs
        expect = np.arange(req.step0 + 1, req.step0 + req.n_steps + 1)
        if self.config.trace_format == "binary":
            table = self._binary_trace(raw, req, width, expect, code)
        else:
            table = self._text_trace(raw, req, width, expect, code)
        obs = table[:, 2:]
        ck_steps = req.promised_checkpoints()
        if self.config.checkpoint_file:
            ck = self._checkpoint_file(req, ck_steps, code)
        else:
            ck = self._checkpoint_files(req, ck_steps, code)
        return SegmentResult(expect.astype(np.int64), np.ascontiguousarray(obs), ck)

    def _text_trace(self, raw: bytes, req: SegmentRequest, width: int, expect: np.ndarray,
                    code: int | None) -> np.ndarray:
        try:  # fast path: a well-formed trace parses in one call (bytes: no decoding)
            table = np.array(raw.split(), dtype=np.float64).reshape(req.n_steps, width)
        except ValueError:
            table = None
        if table is None or not np.array_equal(table[:, 0], expect):
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                self._fail(req, f"the trace file {self.config.trace_file} is not text", code)
            self._fail(req, self._diagnose_trace(text, req, width), code)
        if not np.isfinite(table).all():
            i = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
            line = raw.splitlines()[i].decode(errors="replace")
            self._fail(req, f"trace line {i + 1} (step {expect[i]}) holds a non-finite number: "
                       f"{line[:80]!r}", code)
        return table

    def _binary_trace(self, raw: bytes, req: SegmentRequest, width: int, expect: np.ndarray,
                      code: int | None) -> np.ndarray:
        """Rows of ``width`` little-endian float64 (step, time, observables): checked as
        strictly as a text trace -- the size, every step once and in order, finite values."""
        name = self.config.trace_file
        row = 8 * width
        if len(raw) != row * req.n_steps:
            rows = len(raw) / row
            what = (f"{len(raw)} bytes, {rows:g} rows" if len(raw) % row == 0
                    else f"{len(raw)} bytes, not a whole number of rows")
            self._fail(req, f"the binary trace {name} holds {what}; expected {req.n_steps} rows "
                       f"(steps {expect[0]}..{expect[-1]}) of {width} little-endian float64 "
                       f"(step, time and {width - 2} observable(s)), {row * req.n_steps} bytes",
                       code)
        table = np.frombuffer(raw, dtype="<f8").reshape(req.n_steps, width).astype(np.float64)
        steps = table[:, 0]
        if not np.array_equal(steps, expect):
            i = int(np.flatnonzero(steps != expect)[0])
            self._fail(req, f"binary trace row {i + 1} is step {steps[i]:g}; expected step "
                       f"{expect[i]} (every step {expect[0]}..{expect[-1]} once, in order)", code)
        if not np.isfinite(table).all():
            i = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
            self._fail(req, f"binary trace row {i + 1} (step {expect[i]}) holds a non-finite "
                       f"number: {table[i].tolist()}", code)
        return table

    def _checkpoint_files(self, req: SegmentRequest, ck_steps: np.ndarray,
                          code: int | None) -> Checkpoints:
        wd = req.workdir
        files = []
        for s in ck_steps.tolist():
            p = os.path.join(wd, self._ckpt_name(s))
            try:
                size = os.stat(p).st_size
            except OSError:
                self._fail(req, f"the promised checkpoint {os.path.basename(p)} (step {s}) is missing", code)
            if size == 0:
                self._fail(req, f"the checkpoint {os.path.basename(p)} (step {s}) is empty", code)
            files.append(p)
        return Checkpoints(ck_steps, np.arange(ck_steps.size, dtype=np.int64),
                           np.full(ck_steps.size, -1, dtype=np.int64), tuple(files))

    def _checkpoint_file(self, req: SegmentRequest, ck_steps: np.ndarray,
                         code: int | None) -> Checkpoints:
        """All the segment's checkpoints in one file: records of equal size in step order; a
        checkpoint's index is its record's offset in bytes (the file is never opened)."""
        name = self.config.checkpoint_file
        assert name
        p = os.path.join(req.workdir, name)
        try:
            size = os.stat(p).st_size
        except OSError:
            self._fail(req, f"the model wrote no checkpoint file {name} (promised: "
                       f"{ck_steps.size} checkpoint(s), steps {ck_steps[0]}..{ck_steps[-1]})", code)
        n = ck_steps.size
        if size == 0 or size % n:
            self._fail(req, f"the checkpoint file {name} holds {size} bytes, not {n} records of "
                       f"equal size (one per promised checkpoint, steps {ck_steps[0]}.."
                       f"{ck_steps[-1]})", code)
        return Checkpoints(ck_steps, np.zeros(n, dtype=np.int64),
                           np.arange(n, dtype=np.int64) * (size // n), (p,))

    def state_bytes(self, ref: StateRef) -> bytes | None:
        """One record of a checkpoint file (``tams check`` compares them byte for byte): its
        size is the file's over the number of checkpoints the segment's request promised."""
        name = self.config.checkpoint_file
        if not name or ref.index < 0 or os.path.basename(ref.path) != name:
            return None
        try:
            seg = json.loads(Path(os.path.dirname(ref.path), "request.json").read_text())["segment"]
            req = SegmentRequest(workdir="", start=None, step0=int(seg["step0"]),
                                 n_steps=int(seg["n_steps"]), dt=float(seg["dt"]),
                                 checkpoint_every=int(seg["checkpoint_every"]))
            rec = os.stat(ref.path).st_size // req.promised_checkpoints().size
            with open(ref.path, "rb") as f:
                f.seek(ref.index)
                return f.read(rec)
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            return None

    def _diagnose_trace(self, text: str, req: SegmentRequest, width: int) -> str:
        """Say precisely what is wrong with a trace that failed the fast parse (slow path)."""
        name = self.config.trace_file
        first, last = req.step0 + 1, req.step0 + req.n_steps
        lines = text.splitlines()
        if not lines:
            return f"the trace file {name} is empty (expected steps {first}..{last})"
        prev = req.step0
        for i, ln in enumerate(lines):
            words = ln.split()
            if not _numbers(ln) or not words:
                return f"trace line {i + 1} is not numbers: {ln[:80]!r}"
            if len(words) != width:
                if i == len(lines) - 1 and len(words) < width:
                    return (f"the trace is truncated: its last line (line {i + 1}) has "
                            f"{len(words)} of {width} column(s) (step, time and {width - 2} "
                            f"observable(s)): {ln[:80]!r}")
                return (f"trace line {i + 1} has {len(words)} column(s), expected {width} "
                        f"(step, time and {width - 2} observable(s))")
            step = float(words[0])
            if step != prev + 1:
                if step == prev:
                    return f"step {prev} appears twice in the trace (lines {i} and {i + 1})"
                if step < prev:
                    return (f"trace line {i + 1} is step {step:g} after step {prev}: steps "
                            "must be in order, each once")
                if step > last:
                    return f"trace line {i + 1} is step {step:g}, beyond the last step {last}"
                return (f"step {prev + 1} is missing from the trace (line {i + 1} is step "
                        f"{step:g}; every step {first}..{last} once, in order)")
            prev = int(step)
        if prev < last:
            return (f"the trace is truncated: it ends at step {prev} (line {len(lines)}), "
                    f"expected steps {first}..{last}")
        return f"the trace has {len(lines)} line(s), expected {req.n_steps} (steps {first}..{last})"

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
            reads = [request.start.path] if request.start is not None else []
            code, pv = self.launcher.run(argv, request.workdir, self.env, request.timeout, reads)
            t2 = time.perf_counter()
            if code != 0:
                where = self.launcher.describe()
                self._fail(request, "the model failed" + (f" {where}" if where else ""), code)
            res = self.ingest(request, code)
        except ModelRunError as exc:  # keep the evidence; the message names where it went
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


def _signal_text(number: int) -> str:
    """`killed by signal SIGSEGV (Segmentation fault)`: the name a user looks up."""
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"killed by signal {number}"
    what = signal.strsignal(sig)
    return f"killed by signal {sig.name}" + (f" ({what})" if what else "")


def _numbers(line: str) -> bool:
    try:
        [float(x) for x in line.split()]
        return True
    except ValueError:
        return False
