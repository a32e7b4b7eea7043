"""The ``docker`` launcher: run each segment in a fresh container through the Docker SDK.

The container runs the image named by ``model.docker.image`` with the segment directory
bind-mounted read-write at its host path (the model's cwd), the input state's directory
read-only at its host path, the configured extra binds, as the calling user's uid:gid (so
every file it writes belongs to the user), without network unless configured, with the
configured cpu/memory limits.  Its stdout/stderr are saved as ``stdout.txt``/``stderr.txt``
in the segment directory.  Containers are always removed: after the run, on timeout (killed
first), on error and on driver shutdown (:meth:`DockerLauncher.kill_all`, which removes the
containers of that launcher instance only).  Each segment's
provenance records the image id (``sha256:...``).  See docs/containers.md.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator

from orchestrator.config import Strict
from orchestrator.model import ModelRunError, Provenance

from .launchers import (
    BIND_DESCRIPTION,
    Bind,
    state_binds,
    timed_out,
    validate_binds,
)
from .persistent import CTL, PersistentSlots, campaign_label, owner_dead

PERSISTENT_DESCRIPTION = (
    "true: each worker keeps one long-lived {what} and runs every segment inside it (tens of "
    "milliseconds per segment instead of a {what} start; docs/containers.md): the same "
    "segment directory, binds and timeouts, the campaign's run directory bound read-write, "
    "a dead {what} replaced, all removed when the driver ends. Needs a C compiler with a static "
    "libc on the host (to build tams-runner once). false: a fresh {what} per segment.")

START_DAEMON = "start it with `bash tests/services/docker.sh` (as root) or `setsid dockerd &`"
BUILD_IMAGES = "build it with `make -C containers images` (or `docker build -t IMAGE DIR`)"
LABEL = "tams.segment"  # every container we start carries it (value: the segment directory)
PERSISTENT_LABEL = "tams.persistent"  # persistent containers: the campaign's label
OWNER_LABEL = "tams.owner"  # persistent containers: host.pid.starttime of the process holding it


class DockerConfig(Strict):
    """Keys of `model.docker` (with `launcher: docker`): the image and how its containers run.
    `model.executable` is then a path or name inside the image."""

    image: str = Field(description="Image name (`tams/doublewell2d:1`) or id (`sha256:...`) on the "
                       "local engine; it is never pulled (build it locally).")
    binds: list[str] = Field(default_factory=list, description=BIND_DESCRIPTION)
    cpus: float | None = Field(None, description="CPU limit per container (e.g. 1.5); null: none.")
    memory: str | None = Field(None, description="Memory limit per container, e.g. `512m`, `2g`; "
                               "null: none.")
    network: str = Field("none", description="Docker network mode: `none` (no network, the "
                         "default), `bridge`, `host` or a network's name.")
    user: str | None = Field(None, description="`uid:gid` the model runs as; null: the calling "
                             "user's, so files in the segment directory belong to the user.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on every "
                                   "container (each also carries `tams.segment`).")
    persistent: bool = Field(False, description=PERSISTENT_DESCRIPTION.format(what="container"))

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v):
        if v is not None and not v > 0:
            raise ValueError("must be a number > 0 (CPUs per container) or null")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v):
        if v is not None and not re.fullmatch(r"[1-9][0-9]*[bkmg]?", v.lower()):
            raise ValueError("must be a size such as 512m or 2g, or null")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v):
        if v is not None and not re.fullmatch(r"[0-9]+(:[0-9]+)?", v):
            raise ValueError("must be numeric `uid:gid` (e.g. 1000:1000) or null")
        return v

    @field_validator("binds")
    @classmethod
    def _binds(cls, v: list[str]) -> list[str]:
        return validate_binds(v)


def _engine_errors() -> tuple[type[Exception], ...]:
    """What the SDK raises when a container or the engine went away (call it once the SDK is
    known to be there: a container exists)."""
    import requests
    return (_sdk().errors.DockerException, requests.exceptions.RequestException)


def _sdk():
    try:
        import docker
    except ImportError:
        raise ModelRunError("the `docker` Python package is missing; install it with "
                            "`pip install docker`", transient=False) from None
    return docker


class DockerLauncher(PersistentSlots):
    """A fresh container per segment, or (``persistent: true``) one long-lived container per
    worker (adapters/persistent.py), through the Docker SDK (section `model.docker`)."""

    name = "docker"
    Config = DockerConfig
    in_container = True

    def __init__(self, config: DockerConfig, base_dir: str):
        self.config = config
        self.binds = [Bind.parse(b, base_dir) for b in config.binds]
        self._local = threading.local()  # one client per thread (the SDK's are not shared)
        self._clients: list = []  # every client made, closed by close()
        self._image_id: str | None = None
        # this instance's containers only (id -> its client): another model's are its own
        self._running: dict[str, Any] = {}  # the values: docker.DockerClient
        self._lock = threading.Lock()
        self._init_slots(campaign_label(config, base_dir))

    # --- the engine ---------------------------------------------------------------------
    def client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            docker = _sdk()
            try:
                c = docker.from_env(timeout=120)
                c.ping()
            except docker.errors.DockerException as exc:
                raise ModelRunError(f"the Docker engine is unreachable ({_short(exc)}); "
                                    f"{START_DAEMON}", transient=False) from None
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def image_id(self) -> str:
        if self._image_id is None:
            docker = _sdk()
            try:
                self._image_id = self.client().images.get(self.config.image).id
            except docker.errors.ImageNotFound:
                raise ModelRunError(f"the Docker image {self.config.image} does not exist on this "
                                    f"engine; {BUILD_IMAGES}", transient=False) from None
        return self._image_id

    def check(self) -> list[str]:
        """Problems found before anything is written: SDK, engine, image; then what a killed
        driver of this campaign left (persistent containers) is removed."""
        try:
            self.image_id()
        except ModelRunError as exc:
            key = "model.docker.image" if "image" in str(exc).split(";")[0] else "model.launcher"
            return [f"key {key}: {exc}"]
        if self.config.persistent:
            self.clean_leftovers()
        return []

    def describe(self) -> str:
        return f"in Docker image {self.config.image}"

    def _missing_fix(self) -> str:
        return f"fix model.executable (a path inside the image {self.config.image})"

    # --- one segment --------------------------------------------------------------------
    def container_kwargs(self, argv: list[str], workdir: str, env: dict,
                         reads: Sequence[str] = ()) -> dict:
        c = self.config
        seg = os.path.abspath(workdir)
        volumes = {seg: {"bind": seg, "mode": "rw"}}
        for b in state_binds(seg, reads) + self.binds:
            volumes.setdefault(b.src, {"bind": b.dst, "mode": "ro" if b.read_only else "rw"})
        kw = {"command": list(argv), "working_dir": seg, "volumes": volumes,
                  "user": c.user or f"{os.getuid()}:{os.getgid()}", "environment": dict(env),
                  "labels": {**c.labels, LABEL: seg, "tams.driver": f"{socket.gethostname()}:{os.getpid()}"},
                  "network_mode": c.network, "detach": True}
        if c.cpus is not None:
            kw["nano_cpus"] = round(c.cpus * 1e9)
        if c.memory is not None:
            kw["mem_limit"] = c.memory
            kw["memswap_limit"] = c.memory  # no swap beyond the limit
        return kw

    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
            reads: Sequence[str] = ()) -> tuple[int, Provenance]:
        if self.config.persistent:
            return (self.run_persistent(argv, workdir, env, timeout, reads),
                    Provenance(host=socket.gethostname(), pid=0,
                               slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                               image_digest=self.image_id(), launcher=self.name))
        docker = _sdk()
        import requests
        client = self.client()
        image = self.image_id()
        try:
            ctr = client.containers.create(image, **self.container_kwargs(argv, workdir, env, reads))
        except docker.errors.ImageNotFound:
            self._image_id = None
            raise ModelRunError(f"segment {workdir}: the Docker image {self.config.image} does not "
                                f"exist on this engine; {BUILD_IMAGES}", workdir,
                                transient=False) from None
        except docker.errors.APIError as exc:
            raise ModelRunError(f"segment {workdir}: Docker could not create the container "
                                f"({_short(exc)})", workdir) from None
        with self._lock:
            self._running[ctr.id] = client
        try:
            try:
                ctr.start()
            except docker.errors.APIError as exc:
                if not self._stopped(ctr.id):  # not removed by kill_all before it started
                    raise ModelRunError(f"segment {workdir}: the container of "
                                        f"{self.config.image} did not start ({_short(exc)}); "
                                        f"{self._missing_fix()}", workdir,
                                        transient=False) from None
            code = None
            if not self._stopped(ctr.id):
                try:
                    code = int(ctr.wait(timeout=timeout)["StatusCode"])
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    if not self._stopped(ctr.id):  # else kill_all/close cut the wait short
                        self._save_logs(ctr, workdir)
                        raise timed_out(workdir, timeout,
                                        f"its container ({self.config.image})") from None
                except docker.errors.NotFound:
                    code = None
            if self._stopped(ctr.id):
                code = None  # removed by kill_all
            if code is None:
                raise ModelRunError(f"segment {workdir}: its container was stopped (driver "
                                    "shutdown)", workdir)
            self._save_logs(ctr, workdir)
            if code == 137:
                self._note_oom(ctr, workdir)
        finally:
            self._remove(ctr.id, client)
        return code, Provenance(host=socket.gethostname(), pid=0,
                                slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                                image_digest=image, launcher=self.name)

    @staticmethod
    def _save_logs(ctr, workdir: str) -> None:
        for name, out, err in (("stdout.txt", True, False), ("stderr.txt", False, True)):
            try:
                data = ctr.logs(stdout=out, stderr=err)
            except _engine_errors():  # the container is gone: keep whatever is there
                continue
            with open(os.path.join(workdir, name), "wb") as f:
                f.write(data)

    def _note_oom(self, ctr, workdir: str) -> None:
        try:
            ctr.reload()
            oom = ctr.attrs["State"].get("OOMKilled")
        except _engine_errors() + (KeyError, AttributeError):
            return
        if oom:
            with open(os.path.join(workdir, "stderr.txt"), "a") as f:
                f.write(f"[tams] the container was killed for exceeding its memory limit "
                        f"(model.docker.memory = {self.config.memory})\n")

    def _stopped(self, cid: str) -> bool:
        """True when kill_all removed this container (it left this instance's table)."""
        with self._lock:
            return cid not in self._running

    def _remove(self, cid: str, client) -> None:
        with self._lock:
            self._running.pop(cid, None)
        with contextlib.suppress(*_engine_errors()):  # already gone
            client.api.remove_container(cid, force=True)

    def running(self) -> list[str]:
        """Ids of this instance's containers still running."""
        with self._lock:
            return list(self._running)

    def kill_all(self) -> None:
        with self._lock:
            running = list(self._running.items())
            self._running.clear()
        for cid, client in running:
            with contextlib.suppress(*_engine_errors()):  # already gone
                client.api.remove_container(cid, force=True)
        self.kill_slots()

    # --- persistent containers (adapters/persistent.py) -----------------------------------
    what = "container"

    def _start(self, binds: list[Bind], ctl: str, runner: str) -> str:
        docker = _sdk()
        c = self.config
        volumes = {ctl: {"bind": CTL, "mode": "rw"}}
        for b in binds:
            volumes.setdefault(b.src, {"bind": b.dst, "mode": "ro" if b.read_only else "rw"})
        kw: dict[str, Any] = {
            "entrypoint": [f"{CTL}/tams-runner"], "command": [f"{CTL}/sock"], "working_dir": "/",
            "volumes": volumes, "user": c.user or f"{os.getuid()}:{os.getgid()}",
            "labels": {**c.labels, LABEL: binds[0].src if binds else "",
                       PERSISTENT_LABEL: self._label, OWNER_LABEL: self._owner},
            "network_mode": c.network, "detach": True, "auto_remove": True}
        if c.cpus is not None:
            kw["nano_cpus"] = round(c.cpus * 1e9)
        if c.memory is not None:
            kw["mem_limit"] = c.memory
            kw["memswap_limit"] = c.memory
        client = self.client()
        try:
            ctr = client.containers.create(self.image_id(), **kw)
        except docker.errors.ImageNotFound:
            self._image_id = None
            raise ModelRunError(f"the Docker image {c.image} does not exist on this engine; "
                                f"{BUILD_IMAGES}", transient=False) from None
        except docker.errors.APIError as exc:
            raise ModelRunError(f"Docker could not create a persistent container ({_short(exc)})"
                                ) from None
        try:
            ctr.start()
        except docker.errors.APIError as exc:
            self._stop(ctr.id)
            raise ModelRunError(f"the persistent container of {c.image} did not start "
                                f"({_short(exc)})", transient=False) from None
        return ctr.id

    def _alive(self, handle: str) -> bool:
        try:
            return bool(self.client().api.inspect_container(handle)["State"]["Running"])
        except _engine_errors():
            return False

    def _stop(self, handle: str) -> None:
        api = self.client().api
        with contextlib.suppress(*_engine_errors()):  # already gone (it runs with --rm)
            api.remove_container(handle, force=True)
        # with --rm the engine may still be removing it ("removal in progress"): wait for it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                api.inspect_container(handle)
            except _sdk().errors.NotFound:
                return
            except _engine_errors():
                return
            time.sleep(0.05)

    def leftovers(self) -> list[str]:
        try:
            found = self.client().api.containers(  # one call: no per-container inspect
                all=True, filters={"label": f"{PERSISTENT_LABEL}={self._label}"})
        except ModelRunError:
            return []
        except _engine_errors():
            return []
        return [c["Id"] for c in found if owner_dead((c.get("Labels") or {}).get(OWNER_LABEL, ""))]

    def close(self) -> None:
        """Remove this instance's containers and close its engine connections (a later run
        opens a new one)."""
        self.kill_all()
        with self._lock:
            clients, self._clients = self._clients, []
        self._local = threading.local()
        for c in clients:
            with contextlib.suppress(*_engine_errors(), OSError):  # on the way out
                c.close()


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:300]
