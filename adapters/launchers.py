"""Launchers: how the ``executable`` adapter starts one segment's command.

Every launcher implements :class:`Launcher`, one small protocol::

    run(argv, workdir, env, timeout, reads=()) -> (exit_code, Provenance)
    kill_all()   # stop every run *this launcher instance* started that is still running
    close()      # kill_all() and release what the launcher holds (engine clients)

``argv`` is the formatted command template, ``workdir`` the fresh segment directory (the
model's cwd, where it writes everything, and where the launcher leaves ``stdout.txt`` and
``stderr.txt``), ``env`` the model's environment, ``timeout`` seconds or None, ``reads``
host paths the model reads besides the segment directory (the input state ``state_in``).
A timeout kills the run and raises :class:`ModelRunError`; a non-zero exit is returned, not
raised (the adapter reports it with the tail of ``stderr.txt``).

Launchers are plug-ins: the adapter finds one by its ``model.launcher`` name in the
``tams.launchers`` entry-point group (orchestrator/registry.py), and validates the launcher's
own section ``model.<name>`` with the launcher's :attr:`Launcher.Config`.  ``local`` is here;
``docker`` is in :mod:`adapters.docker_launcher`, ``apptainer`` in
:mod:`adapters.apptainer_launcher`.  Only adapters start processes or containers.

Each launcher *instance* keeps its own table of what is running, and each model owns its
launcher: stopping one model (``ForwardModel.shutdown``) never touches another model's runs
in the same process.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.model import ModelRunError, Provenance

_prctl: Callable[..., int] | None
try:  # loaded here, in the parent: nothing may be loaded between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan if the worker dies


_setpriv_cache: list = []


def _setpriv() -> str | None:
    """util-linux ``setpriv`` if it can set the parent-death signal, else None.

    ``setpriv --pdeathsig KILL -- model ...`` sets PR_SET_PDEATHSIG and execs the model (same
    pid), exactly what ``preexec_fn=_die_with_parent`` does -- but a ``preexec_fn`` forces
    Python to fork() the whole driver (its page tables: ~4 ms and more with h5py/Parsl loaded)
    instead of vfork/posix_spawn (~0.7 ms).  Found once per process."""
    if not _setpriv_cache:
        path = shutil.which("setpriv")
        ok = False
        if path and _prctl is not None:
            try:
                ok = "--pdeathsig" in subprocess.run([path, "--help"], capture_output=True,
                                                     text=True, timeout=10, check=False).stdout
            except (OSError, subprocess.SubprocessError):
                ok = False
        _setpriv_cache.append(path if ok else None)
    return _setpriv_cache[0]


def _startable(argv0: str) -> str | None:
    """Why ``argv0`` cannot be started (one stat), or None."""
    exe = argv0 if os.sep in argv0 else shutil.which(argv0)
    if exe is None or not os.path.exists(exe):
        return "does not exist"
    if os.path.isdir(exe) or not os.access(exe, os.X_OK):
        return "is not executable"
    return None


def tail(workdir: str, n: int = 5, name: str = "stderr.txt") -> str:
    """The last ``n`` lines of a log in the segment directory, joined with `` | ``."""
    try:
        lines = Path(workdir, name).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def timed_out(workdir: str, timeout: float | None, what: str) -> ModelRunError:
    t = tail(workdir)
    return ModelRunError(f"segment {workdir}: timed out after {timeout} s; {what} was killed "
                         "(raise runner.segment_timeout if the model is just slow)"
                         + (f"; stderr ends: {t}" if t else ""), workdir,
                         exit_code=None, stderr_tail=t)


# --- binds, shared by the container launchers ------------------------------------------------
@dataclass(frozen=True)
class Bind:
    """A host path made visible inside the container (parsed from `SRC[:DST][:ro|rw]`)."""

    src: str
    dst: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str, base_dir: str) -> Bind:
        parts = text.split(":")
        mode = "ro"
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            mode = parts.pop()
        if len(parts) == 1:
            parts.append(parts[0])
        src, dst = parts
        src = str(Path(base_dir, src).resolve())
        dst = dst if os.path.isabs(dst) else src
        return cls(src=src, dst=dst, read_only=mode == "ro")


def validate_binds(v: list[str]) -> list[str]:
    for b in v:
        parts = b.split(":")
        if parts and parts[-1] in ("ro", "rw") and len(parts) > 1:
            parts = parts[:-1]
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ValueError(f"bind {b!r} must be SRC, SRC:DST, SRC:ro or SRC:DST:ro|rw")
        if len(parts) == 2 and not os.path.isabs(parts[1]):
            raise ValueError(f"bind {b!r}: the container path {parts[1]!r} must be absolute")
    return v


def state_binds(workdir: str, reads: Sequence[str]) -> list[Bind]:
    """Read-only binds that make each input (``state_in``) visible at its host path: its
    directory, or the file itself when that directory holds the segment directory."""
    seg = os.path.abspath(workdir)
    out: list[Bind] = []
    for p in reads:
        if not p:
            continue
        p = os.path.abspath(p)
        d = os.path.dirname(p)
        if seg == d or seg.startswith(d.rstrip(os.sep) + os.sep):
            d = p  # an ancestor of the segment directory: bind just the file
        if d.startswith(seg + os.sep) or any(b.src == d for b in out):
            continue
        out.append(Bind(src=d, dst=d, read_only=True))
    return out


BIND_DESCRIPTION = ("Extra host paths visible in the container, e.g. forcing files: `SRC` "
                    "(same path inside, read-only), `SRC:DST`, or either with `:ro`/`:rw`; "
                    "SRC relative to the YAML. The segment directory (read-write) and the "
                    "input state's directory (read-only) are always bound at their host paths.")


# --- the protocol ------------------------------------------------------------------------
class Launcher(ABC):
    """What the executable adapter needs from a launcher (one instance per model).

    Class attributes: ``name`` (recorded in each segment's provenance), ``Config`` (the
    pydantic model of the launcher's section ``model.<name>``, or None when it has none) and
    ``in_container`` (True when the command runs in an image: ``model.executable`` is then
    resolved inside it and the host's environment stays outside)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type | None] = None
    in_container: ClassVar[bool] = False

    @classmethod
    def from_config(cls, section: Any, base_dir: str) -> Launcher:
        """Build the launcher from its validated section (None without one); ``base_dir`` is
        the campaign's directory (relative paths in the section are taken from it)."""
        return cls() if section is None else cls(section, base_dir)  # type: ignore[call-arg]

    @abstractmethod
    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
            reads: Sequence[str] = ()) -> tuple[int, Provenance]:
        """Run one segment's command to its end; return its exit code and provenance."""

    @abstractmethod
    def kill_all(self) -> None:
        """Stop every run this instance started that is still running (driver shutdown)."""

    def close(self) -> None:
        """Stop what is running and release what the launcher holds; it may be used again."""
        self.kill_all()

    def check(self) -> list[str]:
        """Problems found before anything runs (image missing, engine down): one sentence
        each, starting with the key to fix (``key model.<name>.image: ...``)."""
        return []

    def describe(self) -> str:
        """Where the model ran, for failure messages (``in Docker image X``); may be empty."""
        return ""


# --- local --------------------------------------------------------------------------------
class LocalLauncher(Launcher):
    """Run the command as a subprocess in a new session (its own process group)."""

    name = "local"

    def __init__(self) -> None:
        # this instance's runs only: another model's launcher has its own table
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
            reads: Sequence[str] = ()) -> tuple[int, Provenance]:
        code, pid = self._popen(argv, workdir, env, timeout, "the process group")
        return code, Provenance(host=socket.gethostname(), pid=pid,
                                slurm_job_id=os.environ.get("SLURM_JOB_ID", ""), launcher=self.name)

    def _popen(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
               what: str) -> tuple[int, int]:
        with open(os.path.join(workdir, "stdout.txt"), "wb") as out, \
                open(os.path.join(workdir, "stderr.txt"), "wb") as err:
            why = _startable(argv[0])
            if why == "does not exist":
                raise ModelRunError(f"segment {workdir}: the executable {argv[0]} does not exist; "
                                    f"{self._missing_fix()}", workdir, transient=False)
            if why:
                raise ModelRunError(f"segment {workdir}: {argv[0]} is not executable; "
                                    "chmod +x it or fix model.executable", workdir,
                                    transient=False)
            wrapper = _setpriv()
            try:
                if wrapper:  # no orphan if the worker dies, without a fork() of the driver
                    proc = subprocess.Popen([wrapper, "--pdeathsig", "KILL", "--", *argv],
                                            cwd=workdir, env=env, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                else:
                    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            # only without setpriv; it calls prctl alone
                                            preexec_fn=_die_with_parent)  # noqa: PLW1509
            except FileNotFoundError:
                raise ModelRunError(f"segment {workdir}: the executable {argv[0]} does not exist; "
                                    f"{self._missing_fix()}", workdir, transient=False) from None
            except PermissionError:
                raise ModelRunError(f"segment {workdir}: {argv[0]} is not executable; "
                                    "chmod +x it or fix model.executable", workdir,
                                    transient=False) from None
            except OSError as exc:  # e.g. ENOEXEC: not a program, or a script without #!
                raise ModelRunError(f"segment {workdir}: {argv[0]} cannot be started: {exc}",
                                    workdir, transient=False) from None
            with self._lock:
                self._running[proc.pid] = proc
            # Popen.wait(timeout) polls with sleeps growing to 50 ms (up to +50 % on a short
            # run); block in waitpid instead and let a timer kill the group on timeout.
            state = {"finished": False, "timed_out": False}
            guard = threading.Lock()

            def on_timeout():
                with guard:
                    if not state["finished"]:
                        state["timed_out"] = True
                        try:
                            os.killpg(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass

            timer = threading.Timer(timeout, on_timeout) if timeout else None
            try:
                if timer is not None:
                    timer.daemon = True
                    timer.start()
                code = proc.wait()
                with guard:
                    state["finished"] = True
            except BaseException:  # e.g. KeyboardInterrupt while waiting: leave nothing running
                self._kill(proc)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                with self._lock:
                    self._running.pop(proc.pid, None)
        if state["timed_out"] and code == -signal.SIGKILL:
            raise timed_out(workdir, timeout, what)
        return code, proc.pid

    def _missing_fix(self) -> str:
        return "build it or fix model.executable"

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def running(self) -> list[int]:
        """Process ids (= process-group ids) of this instance's runs still going."""
        with self._lock:
            return list(self._running)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._running.values())
        for p in procs:
            self._kill(p)
