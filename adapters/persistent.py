"""Persistent containers (`persistent: true` of the docker and apptainer launchers).

Instead of a container per segment, each worker (each thread of the process that runs
segments) keeps one long-lived container -- a Docker container or an Apptainer instance -- and
runs every segment inside it through ``tams-runner`` (adapters/tams_runner.c): a static
program the launcher builds once per machine (``cc -static``, cached under
``~/.cache/tams``) and binds into the container read-only, so the image needs nothing, not
even a shell.  The launcher talks to it over a Unix socket in a control directory bound at
``/.tams``; a segment costs one request and one reply on that socket instead of a container
start.  What holds, as with a container per segment (docs/containers.md):

- each segment runs in its fresh segment directory, as its own process group, with
  ``stdout.txt``/``stderr.txt`` there and the model's environment;
- the same paths are visible at their host paths: the container binds the campaign's run
  directory (which holds every segment directory and every state the model reads) read-write
  -- the one difference: a segment could write next to its own directory -- plus the
  configured binds, plus the directory of any input outside the run directory (the initial
  state), added by replacing the container the first time such an input appears;
- a timeout closes the connection: the runner kills the segment's process group, and the
  container is removed (the next segment gets a new one); a container that died is replaced;
- every container of a launcher is removed by :meth:`PersistentSlots.kill_all` (the driver's
  end, Ctrl-C, SIGTERM) and when its process exits; a Docker container also ends by itself when
  its owner dies (the runner's connection closes); what a SIGKILLed driver leaves (Apptainer
  instances) carries the campaign's label and its owner's pid, and the next ``tams run`` (its
  ``check``) removes those whose owner is dead.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import weakref
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.model import ModelRunError

from .launchers import Bind, Launcher, state_binds, timed_out

RUNNER_SOURCE = Path(__file__).with_name("tams_runner.c")
CTL = "/.tams"  # the control directory inside the container
_SEGMENT = re.compile(r"r\d{4}/t\d{7}/s\d{8}$")
_build_lock = threading.Lock()


# --- the runner binary ------------------------------------------------------------------
def runner_binary() -> str:
    """The static ``tams-runner``, built once per machine and source version."""
    src = RUNNER_SOURCE.read_bytes()
    tag = hashlib.sha256(src).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tams"
    out = cache / f"tams-runner-{tag}"
    if out.exists():
        return str(out)
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ModelRunError("persistent containers need a C compiler to build tams-runner once "
                            "(apt-get install gcc libc6-dev), or set persistent: false",
                            transient=False)
    with _build_lock:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per machine
            if not out.exists():
                tmp = cache / f".tams-runner-{tag}.{os.getpid()}"
                res = subprocess.run([cc, "-static", "-O2", "-o", str(tmp), str(RUNNER_SOURCE)],
                                     capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    err = " ".join(res.stderr.split())[:300]
                    raise ModelRunError(f"persistent containers need tams-runner, and `{cc} "
                                        f"-static` could not build it ({err}); install a static "
                                        "C library (apt-get install libc6-dev) or set "
                                        "persistent: false", transient=False)
                tmp.chmod(0o755)
                os.replace(tmp, out)
    return str(out)


# --- who owns a container ------------------------------------------------------------------
def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def owner_tag() -> str:
    """``host.pid.starttime`` of this process: unique even when pids are reused."""
    return f"{socket.gethostname()}.{os.getpid()}.{_start_time(os.getpid())}"


def owner_dead(tag: str) -> bool:
    """True when ``tag`` names a process of this host that no longer runs."""
    host, _, rest = tag.rpartition(".")
    host, _, pid = host.rpartition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's (a Slurm node's): its own run cleans it
    return _start_time(int(pid)) != rest


def campaign_label(config: Any, base_dir: str) -> str:
    """A label value shared by every container of one campaign's model (its YAML directory and
    its launcher section): what the next `tams run` of that campaign cleans up."""
    text = json.dumps([os.path.abspath(base_dir), config.model_dump()], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- binds ----------------------------------------------------------------------------------
def run_root(workdir: str) -> str:
    """The directory a persistent container binds for this segment: the campaign's run
    directory when the path has its layout (``RUN/rNNNN/tNNNNNNN/sNNNNNNNN``), else the
    segment directory's parent."""
    seg = os.path.abspath(workdir)
    if _SEGMENT.search(seg):
        return str(Path(seg).parents[2])
    return os.path.dirname(seg)


def _under(path: str, binds: Sequence[Bind]) -> bool:
    return any(path == b.src or path.startswith(b.src.rstrip(os.sep) + os.sep)
               for b in binds if b.src == b.dst)


def binds_for(workdir: str, reads: Sequence[str], have: Sequence[Bind] = ()) -> list[Bind]:
    """The binds a container needs for this segment beyond ``have`` (at host paths)."""
    seg = os.path.abspath(workdir)
    need: list[Bind] = []
    if not _under(seg, have):
        root = run_root(seg)
        need.append(Bind(root, root, read_only=False))
    for b in state_binds(seg, reads):
        if not _under(b.src, [*have, *need]):
            need.append(b)
    return need


# --- the connection to a runner ------------------------------------------------------------
class RunnerGone(Exception):
    """The runner closed its connection: its container died."""


class RunnerClient:
    """One connection to a ``tams-runner``; one segment at a time."""

    def __init__(self, path: str, alive, deadline_s: float = 60.0):
        import time
        t_end = time.monotonic() + deadline_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > t_end or not alive():
                    raise RunnerGone(f"tams-runner did not listen on {path}") from None
                time.sleep(0.01)
        self.sock = sock
        self.closed = False

    def idle_but_dead(self) -> bool:
        """True when the runner went away while idle (EOF is waiting on the socket)."""
        import select
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def run(self, argv: Sequence[str], cwd: str, env: dict, timeout: float | None) -> str:
        items = [cwd, str(len(env)), *(f"{k}={v}" for k, v in env.items()), *argv]
        if any("\0" in x for x in items):
            raise ValueError("an argument or environment value holds a NUL byte")
        payload = b"".join(x.encode() + b"\0" for x in items)
        self.sock.settimeout(None)
        try:
            self.sock.sendall(str(len(payload)).encode() + b"\n" + payload)
        except OSError:
            raise RunnerGone("the connection to tams-runner is closed") from None
        self.sock.settimeout(timeout)
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                raise
            except OSError:
                data = b""
            if not data:
                raise RunnerGone("tams-runner closed the connection")
            buf += data
        return buf.decode().strip()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            with contextlib.suppress(OSError):
                self.sock.close()


# --- slots: one container per worker thread -------------------------------------------------
@dataclass
class Slot:
    """One worker's long-lived container."""

    handle: str  # container id / instance name
    ctl: str  # the control directory on the host
    binds: list[Bind]
    client: RunnerClient | None = None
    extra: dict = field(default_factory=dict)


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # a worker process that ends normally leaves no container
    for la in list(_LIVE):
        with contextlib.suppress(Exception):
            la.kill_slots()


class PersistentSlots(Launcher):
    """The per-thread containers of one launcher instance (its own table: another model's
    launcher has its own).  Subclasses start, check and stop one container."""

    what = "container"  # for messages

    def _init_slots(self, label: str) -> None:
        self._slots: dict[int, Slot] = {}
        self._slots_lock = threading.Lock()
        self._closing = False
        self._label = label
        self._owner = owner_tag()
        self._cleaned = False
        _LIVE.add(self)

    @abstractmethod
    def _start(self, binds: list[Bind], ctl: str, runner: str) -> str:
        """Start a container with these binds (plus ``ctl`` at ``/.tams`` holding the runner
        as ``/.tams/tams-runner``, listening on ``/.tams/sock``); return its handle."""

    @abstractmethod
    def _alive(self, handle: str) -> bool:
        """Is this container still running?"""

    @abstractmethod
    def _stop(self, handle: str) -> None:
        """Remove the container (forcefully; it may be gone already)."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """Handles of this campaign's containers whose owner process is dead (this host)."""

    def clean_leftovers(self) -> int:
        """Remove what a killed driver of this campaign left; return how many."""
        gone = self.leftovers()
        for h in gone:
            with contextlib.suppress(Exception):
                self._stop(h)
        self._cleaned = True
        return len(gone)

    def _new_slot(self, binds: list[Bind]) -> Slot:
        if not self._cleaned:
            self.clean_leftovers()
        runner = runner_binary()
        ctl = tempfile.mkdtemp(prefix="tams-ctl-")  # short: a socket path has 108 bytes
        os.chmod(ctl, 0o755)
        shutil.copy(runner, os.path.join(ctl, "tams-runner"))
        handle = self._start(binds, ctl, runner)
        slot = Slot(handle, ctl, binds)
        try:
            slot.client = RunnerClient(os.path.join(ctl, "sock"), lambda: self._alive(handle))
        except RunnerGone as exc:
            self._drop(slot)
            raise ModelRunError(f"the persistent {self.what} {handle} did not start its runner "
                                f"({exc}){self._start_log(handle)}", transient=True) from None
        return slot

    def _start_log(self, handle: str) -> str:
        return ""

    def _drop(self, slot: Slot) -> None:
        if slot.client is not None:
            slot.client.close()
        with contextlib.suppress(Exception):
            self._stop(slot.handle)
        shutil.rmtree(slot.ctl, ignore_errors=True)

    def _slot_for(self, workdir: str, reads: Sequence[str]) -> Slot:
        key = threading.get_ident()
        with self._slots_lock:
            if self._closing:
                raise ModelRunError(f"segment {workdir}: not started, its {self.what}s are "
                                    "being removed (driver shutdown)", workdir)
            slot = self._slots.pop(key, None)
        if slot is not None:
            need = binds_for(workdir, reads, slot.binds)
            if need or slot.client is None or slot.client.idle_but_dead():
                self._drop(slot)  # it cannot see this segment's paths, or it died: replace it
                slot = self._new_slot([*slot.binds, *need] if need else slot.binds)
        else:
            fixed = self.fixed_binds()
            slot = self._new_slot([*fixed, *binds_for(workdir, reads, fixed)])
        with self._slots_lock:
            self._slots[key] = slot
            if self._closing:  # kill_all ran meanwhile
                self._slots.pop(key, None)
                self._drop(slot)
                raise ModelRunError(f"segment {workdir}: its {self.what} was stopped (driver "
                                    "shutdown)", workdir)
        return slot

    def fixed_binds(self) -> list[Bind]:
        """The configured binds (what every container has besides the run directory)."""
        return list(getattr(self, "binds", []))

    def run_persistent(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
                       reads: Sequence[str]) -> int:
        slot = self._slot_for(workdir, reads)
        client = slot.client
        assert client is not None
        try:
            answer = client.run(argv, os.path.abspath(workdir), env, timeout)
        except TimeoutError:
            self._forget(slot)
            raise timed_out(workdir, timeout, f"its process group in the persistent "
                            f"{self.what} (removed)") from None
        except RunnerGone:
            self._forget(slot)
            if slot.extra.get("stopped"):
                raise ModelRunError(f"segment {workdir}: its {self.what} was stopped (driver "
                                    "shutdown)", workdir) from None
            raise ModelRunError(f"segment {workdir}: its persistent {self.what} {slot.handle} "
                                "died during the segment (it is replaced for the next one)",
                                workdir) from None
        kind, _, rest = answer.partition(" ")
        if kind == "E":
            return int(rest)
        what, _, errno_text = rest.partition(" ")
        reason = os.strerror(int(errno_text)) if errno_text.isdigit() else errno_text
        if what == "exec":
            raise ModelRunError(f"segment {workdir}: {argv[0]} cannot be started in the "
                                f"{self.what} ({reason}); fix model.executable (a path or name inside "
                                "the image)", workdir,
                                transient=False)
        raise ModelRunError(f"segment {workdir}: the runner could not {what} in the segment "
                            f"directory ({reason})", workdir)

    def _forget(self, slot: Slot) -> None:
        with self._slots_lock:
            for k, v in list(self._slots.items()):
                if v is slot:
                    del self._slots[k]
        self._drop(slot)

    def running_slots(self) -> list[str]:
        """Handles of this instance's persistent containers."""
        with self._slots_lock:
            return [s.handle for s in self._slots.values()]

    def kill_slots(self) -> None:
        """Remove every persistent container of this instance (what runs in them is killed)."""
        with self._slots_lock:
            self._closing = True
            slots = list(self._slots.values())
            self._slots.clear()
        for s in slots:
            s.extra["stopped"] = True
            self._drop(s)
        with self._slots_lock:
            self._closing = False  # the launcher may be used again
