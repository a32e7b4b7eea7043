"""The ``apptainer`` launcher: run each segment with ``apptainer exec`` on a SIF image.

The command it runs, exactly (docs/containers.md; tests/test_containers.py checks it)::

    APPTAINER exec --containall --cleanenv --no-home \\
        --bind SEG:SEG \\
        --bind STATE_DIR:STATE_DIR:ro \\          # when the segment has an input state
        [--bind SRC:DST[:ro|rw] ...]  \\          # model.apptainer.binds
        --pwd SEG [ARGS ...] IMAGE CMD ...        # ARGS: model.apptainer.args, e.g. --nv

``SEG`` is the segment directory, ``STATE_DIR`` the directory of ``state_in`` (or the file
itself when that directory holds SEG), ``CMD ...`` the formatted `model.command` whose
executable is resolved inside the image.  `model.env` reaches the model through
``APPTAINERENV_<NAME>`` variables (``--cleanenv`` drops everything else).  The process runs
in its own session; a timeout kills its whole process group.  Provenance records the SHA-256
of the image file.  A missing, foreign or truncated SIF is refused by :meth:`check` (before
anything runs) in one sentence; an image Apptainer cannot start at run time (its ``FATAL:``
line) fails the segment without retries.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from orchestrator.config import Strict
from orchestrator.model import ModelRunError, Provenance

from .docker_launcher import PERSISTENT_DESCRIPTION
from .launchers import (
    BIND_DESCRIPTION,
    Bind,
    LocalLauncher,
    _setpriv,
    state_binds,
    tail,
    validate_binds,
)
from .persistent import CTL, PersistentSlots, campaign_label


def _term_with_parent() -> None:  # in the child between fork and exec (no setpriv)
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


INSTANCE_PREFIX = "tams-"  # instance names: tams-<campaign label>-<owner pid>-<its start time>-<n>

REBUILD = ("rebuild it (`make -C containers images`, or `apptainer build IMAGE.sif "
           "docker-archive:IMAGE.tar` from `docker save`)")


def sif_problem(path: str) -> str | None:
    """Why ``path`` is not a complete SIF file (its global header and data size), or None.
    A directory (an unpacked sandbox) is accepted as it is."""
    if os.path.isdir(path):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(128)
        size = os.path.getsize(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if len(head) < 128 or head[32:42] != b"SIF_MAGIC\0":
        return "is not a SIF image (no SIF header)"
    data_off, data_len = struct.unpack_from("<2q", head, 112)
    if size < data_off + data_len:
        return (f"is truncated ({size} bytes, its header promises {data_off + data_len}): "
                "a copy or build was cut short")
    return None


class ApptainerConfig(Strict):
    """Keys of `model.apptainer` (with `launcher: apptainer`): the image and the `apptainer exec`
    options.  `model.executable` is then a path or name inside the image."""

    image: str = Field(description="The SIF image file (relative to the YAML), e.g. built with "
                       "`apptainer build model.sif containers/MODEL/apptainer.def`.")
    binds: list[str] = Field(default_factory=list, description=BIND_DESCRIPTION)
    args: list[str] = Field(default_factory=list, description="Extra `apptainer exec` options "
                            "placed before the image, e.g. [--nv] for GPUs.")
    executable: str = Field("apptainer", description="The apptainer program on the host: a name "
                            "found on PATH (`apptainer`, `singularity`) or a path.")
    persistent: bool = Field(False, description=PERSISTENT_DESCRIPTION.format(what="instance")
                             .replace("a instance", "an instance") + " An instance is started "
                             "with the same options (`apptainer instance start --containall "
                             "--cleanenv --no-home ...`).")

    @field_validator("binds")
    @classmethod
    def _binds(cls, v: list[str]) -> list[str]:
        return validate_binds(v)


class ApptainerLauncher(LocalLauncher, PersistentSlots):
    """`apptainer exec` in its own process group: the local launcher's process handling
    (per-instance table, timeouts, parent-death signal) around a different argv; or
    (``persistent: true``) one Apptainer instance per worker (adapters/persistent.py)."""

    name = "apptainer"
    Config = ApptainerConfig
    in_container = True
    # a cache of image digests, not a table of runs: sharing it across instances is safe
    _digests: ClassVar[dict[tuple, str]] = {}
    _dlock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: ApptainerConfig, base_dir: str):
        super().__init__()
        self.config = config
        self.image = str(Path(base_dir, config.image).resolve())
        self.binds = [Bind.parse(b, base_dir) for b in config.binds]
        prog = config.executable
        self.program = str(Path(base_dir, prog).resolve()) if os.sep in prog else prog
        self._init_slots(campaign_label(config, base_dir))
        self._serial = itertools.count()
        self._watchdogs: dict[str, subprocess.Popen] = {}
        self._watch_lock = threading.Lock()

    def argv(self, argv: list[str], workdir: str, reads: Sequence[str] = ()) -> list[str]:
        seg = os.path.abspath(workdir)
        prog = self.program if os.sep in self.program else (shutil.which(self.program) or self.program)
        out = [prog, "exec", "--containall", "--cleanenv", "--no-home", "--bind", f"{seg}:{seg}"]
        for b in state_binds(seg, reads) + self.binds:
            out += ["--bind", f"{b.src}:{b.dst}" + (":ro" if b.read_only else ":rw")]
        return out + ["--pwd", seg, *self.config.args, self.image, *argv]

    @staticmethod
    def environment(model_env: dict) -> dict:
        """The apptainer process's environment: the host's, plus APPTAINERENV_ for the model."""
        return {**os.environ, **{f"APPTAINERENV_{k}": v for k, v in model_env.items()}}

    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
            reads: Sequence[str] = ()) -> tuple[int, Provenance]:
        if self.config.persistent:
            return (self.run_persistent(argv, workdir, env, timeout, reads),
                    Provenance(host=socket.gethostname(), pid=0,
                               slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                               image_digest=self.digest(), launcher=self.name))
        code, pid = self._popen(self.argv(argv, workdir, reads), workdir, self.environment(env),
                                timeout, "its apptainer process group")
        if code == 255:
            self._refused(workdir)
        return code, Provenance(host=socket.gethostname(), pid=pid,
                                slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                                image_digest=self.digest(), launcher=self.name)

    def digest(self) -> str:
        """``sha256:`` of the image file, computed once per (path, size, mtime)."""
        try:
            st = os.stat(self.image)
        except OSError:
            return ""
        key = (self.image, st.st_size, st.st_mtime_ns)
        with self._dlock:
            if key not in self._digests:
                h = hashlib.sha256()
                if os.path.isdir(self.image):
                    h.update(self.image.encode())  # a sandbox directory: no content hash
                else:
                    with open(self.image, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                self._digests[key] = "sha256:" + h.hexdigest()
            return self._digests[key]

    def _refused(self, workdir: str) -> None:
        """Apptainer itself failed (exit 255 with a ``FATAL:`` line): the image or the
        installation is at fault, not the model, so retrying cannot help."""
        fatal = [ln for ln in tail(workdir, 20).split(" | ") if ln.startswith("FATAL:")]
        if fatal:
            msg = " ".join(fatal[-1][len("FATAL:"):].split())[:300]
            raise ModelRunError(f"segment {workdir}: apptainer could not run the image "
                                f"{self.image}: {msg}; {REBUILD}", workdir, exit_code=255,
                                stderr_tail=fatal[-1], transient=False)

    def check(self) -> list[str]:
        prog = self.program
        if not (os.access(prog, os.X_OK) if os.sep in prog else shutil.which(prog)):
            return [(f"key model.apptainer.executable: the program {prog!r} is not found; install "
                    "Apptainer (or put its directory on PATH)")]
        if not os.path.exists(self.image):
            return [f"key model.apptainer.image: {self.image} does not exist; {REBUILD}"]
        why = sif_problem(self.image)
        if why:
            return [f"key model.apptainer.image: {self.image} {why}; {REBUILD}"]
        if self.config.persistent:
            self.clean_leftovers()  # what a killed driver of this campaign left
        return []

    def describe(self) -> str:
        return f"in Apptainer image {self.image}"

    def kill_all(self) -> None:
        super().kill_all()  # the `apptainer exec` process groups
        self.kill_slots()  # the instances

    # --- persistent instances (adapters/persistent.py) ------------------------------------
    what = "instance"

    def _prog(self) -> str:
        return self.program if os.sep in self.program else (shutil.which(self.program) or self.program)

    def instance_argv(self, binds: list[Bind], ctl: str, name: str) -> list[str]:
        out = [self._prog(), "instance", "start", "--containall", "--cleanenv", "--no-home",
               "--bind", f"{ctl}:{CTL}",
               "--bind", f"{ctl}/tams-runner:/.singularity.d/startscript:ro"]
        for b in binds:
            out += ["--bind", f"{b.src}:{b.dst}" + (":ro" if b.read_only else ":rw")]
        return out + [*self.config.args, self.image, name, f"{CTL}/sock"]

    def _start(self, binds: list[Bind], ctl: str, runner: str) -> str:
        _, pid, start = self._owner.rsplit(".", 2)
        name = f"{INSTANCE_PREFIX}{self._label}-{pid}-{start}-{next(self._serial)}"
        try:
            res = subprocess.run(self.instance_argv(binds, ctl, name), capture_output=True,
                                 text=True, timeout=120, env=self.environment({}),
                                 stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._stop(name)
            raise ModelRunError(f"apptainer instance start failed ({exc})") from None
        if res.returncode != 0:
            fatal = [ln for ln in (res.stderr + res.stdout).splitlines() if "FATAL" in ln]
            why = " ".join((fatal[-1] if fatal else res.stderr.strip()[-300:]).split())
            self._stop(name)
            raise ModelRunError(f"apptainer could not start an instance of {self.image}: {why}; "
                                f"{REBUILD}", transient=False)
        self._watch(name)
        return name

    # An instance outlives its start script (the runner), so a process that dies without
    # stopping its instances (SIGKILL, a Parsl worker terminated) would leave them: each gets
    # a watchdog, a shell that the kernel signals when this process dies (PR_SET_PDEATHSIG)
    # and that then stops the instance.  The next `tams run` remains the backstop.
    # (A second SIGTERM can follow the first -- seen when several worker threads die at
    # once -- and would kill `instance stop` half-way: the trap ignores it.)
    _WATCHDOG = ('trap \'trap "" TERM; kill $! 2>/dev/null; "$0" instance stop --force "$1" '
                 '>/dev/null 2>&1; exit 0\' TERM; while :; do sleep 86400 & wait $!; done')

    def _watch(self, name: str) -> None:
        sh = shutil.which("sh")
        if sh is None:
            return
        wrapper = _setpriv()
        argv = [sh, "-c", self._WATCHDOG, self._prog(), name]
        try:
            if wrapper:
                proc = subprocess.Popen([wrapper, "--pdeathsig", "TERM", "--", *argv],
                                        start_new_session=True, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=_term_with_parent)  # noqa: PLW1509
        except OSError:
            return
        with self._watch_lock:
            self._watchdogs[name] = proc

    def _instances(self) -> dict[str, int]:
        """This user's instances on this host (name -> pid)."""
        try:
            res = subprocess.run([self._prog(), "instance", "list", "--json"],
                                 capture_output=True, text=True, timeout=60, check=False)
            return {i["instance"]: int(i.get("pid", 0))
                    for i in json.loads(res.stdout or "{}").get("instances", [])}
        except (OSError, ValueError, subprocess.TimeoutExpired, KeyError, TypeError):
            return {}

    def _alive(self, handle: str) -> bool:
        return handle in self._instances()

    def _stop(self, handle: str) -> None:
        with self._watch_lock:
            dog = self._watchdogs.pop(handle, None)
        if dog is not None:  # not needed any more: this process stops the instance itself
            with contextlib.suppress(OSError):
                os.killpg(dog.pid, signal.SIGKILL)
            dog.wait()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([self._prog(), "instance", "stop", "--force", handle],
                           capture_output=True, timeout=60, check=False)

    def leftovers(self) -> list[str]:
        from .persistent import _start_time
        prefix = f"{INSTANCE_PREFIX}{self._label}-"
        out = []
        for name in self._instances():
            if name.startswith(prefix):
                parts = name[len(prefix):].split("-")
                if len(parts) == 3 and parts[0].isdigit() and _start_time(int(parts[0])) != parts[1]:
                    out.append(name)
        return out

    def _missing_fix(self) -> str:
        return "install Apptainer or fix model.apptainer.executable"
