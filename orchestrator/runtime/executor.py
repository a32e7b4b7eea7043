"""Running segments on Parsl: the only module that touches Parsl.

``Executor`` is a context manager around a Parsl DataFlowKernel built from the campaign's
``runner`` section.  Leaving it, by any path (normal end, exception, Ctrl-C, SIGTERM turned
into an exception by the CLI), cleans Parsl up: blocks are cancelled, the interchange stops.
Parsl's own walltime does not kill a process, so timeouts are the adapters' job.

The runner *kinds* are plug-ins (entry-point group ``tams.runners``): each is one small
class, the pydantic model of its section (a :class:`~orchestrator.config.RunnerSection`
with ``kind: Literal[...]``) whose :meth:`parsl_executor` builds the Parsl executor from
it, Parsl's own composition (``HighThroughputExecutor(provider=SlurmProvider(...))``).
Adding a Parsl provider (PBS, LSF, Kubernetes) is one such class and one entry point; this
module never asks which kind it runs.  Nothing here knows TAMS either: an executor runs
segments for whatever algorithm submits them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, cast

from pydantic import Field

from orchestrator.config import RunnerSection, SlurmSection
from orchestrator.model import SegmentRequest
from orchestrator.runtime.worker import run_segment, shutdown_models

if TYPE_CHECKING:  # parsl itself is imported when an executor starts
    from parsl.dataflow.dflow import DataFlowKernel
    from parsl.executors import HighThroughputExecutor

log = logging.getLogger(__name__)


def resolve_address(addr: str) -> str:
    """An address as the YAML gives it (`hostname`, `interface:NAME` or literal) -> an IP."""
    if addr == "hostname":
        from parsl.addresses import address_by_hostname
        return address_by_hostname()
    if addr.startswith("interface:"):
        from parsl.addresses import address_by_interface
        return address_by_interface(addr[len("interface:"):])
    return addr


def default_worker_init() -> str:
    """Activate the driver's own virtual environment (if it runs in one) in every block."""
    activate = Path(sys.prefix, "bin", "activate")
    return f"source {activate}" if sys.prefix != sys.base_prefix and activate.exists() else ""


# The interchange, started so that it dies with the driver: Parsl starts it as a plain child
# process, and a driver killed by SIGKILL (OOM killer, `kill -9`, a node going down) would
# leave it running — and the workers connected to it, i.e. Slurm blocks, alive until their
# walltime.  With PR_SET_PDEATHSIG the kernel kills it when the driver dies; the workers then
# miss its heartbeats and exit, and their block ends.
_INTERCHANGE = """\
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):  # the driver died before prctl
    sys.exit(0)
del sys.argv[1:]
runpy.run_module("parsl.executors.high_throughput.interchange", run_name="__main__", alter_sys=True)
"""


def _htex(address: str, run_dir: Path, provider, workers: int, python: str, **kw):
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput import executor as htex
    # Parsl finds its helper scripts on PATH; name them through an interpreter instead, so a
    # driver started from a virtual environment that is not on PATH still works.
    # The pool runs under runtime/poolwatch.py: it ends when the interchange's port stays
    # closed for twice the heartbeat threshold (the driver is gone), also while it starts,
    # where Parsl's own pool can wait forever -- so a block never outlives its driver.
    limit = 2 * kw.get("heartbeat_threshold", 120)
    launch = htex.DEFAULT_LAUNCH_CMD.replace(
        "process_worker_pool.py", f"{python} -m orchestrator.runtime.poolwatch {limit} --", 1)
    return HighThroughputExecutor(
        launch_cmd=launch,
        interchange_launch_cmd=[sys.executable, "-c", _INTERCHANGE, str(os.getpid())],
        label="tams", address=resolve_address(address), loopback_address="127.0.0.1",
        max_workers_per_node=workers, worker_logdir_root=str(run_dir / "parsl"),
        encrypted=False, poll_period=1, provider=provider, **kw)


@dataclass(frozen=True)
class ParslPart:
    """What a runner kind contributes to the Parsl Config: its executor (labelled ``tams``)
    and the scaling strategy that keeps its blocks (Parsl's ``strategy`` names).

    ``direct``: the executor is driven without a DataFlowKernel (started, given tasks and
    shut down by :class:`Executor` itself).  For an executor in this process with no blocks
    to scale, the DFK adds nothing the driver uses -- the driver has its own retry policy,
    no app depends on another's future, there is no memoization, checkpointing or
    monitoring -- but its per-task bookkeeping (task record, state transitions, the app
    wrapper, done-callbacks) cost ~300 µs of CPU per segment in the driver's process: 2-3 µs
    per model step of the README example, a quarter of the run (docs/performance.md).
    Globus Compute drives Parsl executors the same way."""

    executor: Any
    strategy: str = "none"
    strategy_period: float = 5.0
    direct: bool = False


class ThreadsRunner(RunnerSection):
    """`kind: threads` — a Parsl ThreadPoolExecutor in the driver process: model runs are
    subprocesses, so threads suffice.  No keys besides the common ones."""

    kind: Literal["threads"] = Field("threads", description="`threads`.")

    def parsl_executor(self, run_dir: Path) -> ParslPart:
        from parsl.executors import ThreadPoolExecutor
        return ParslPart(ThreadPoolExecutor(label="tams", max_threads=self.workers), direct=True)


class ProcessesRunner(RunnerSection):
    """`kind: processes` — a Parsl HighThroughputExecutor with one block of `workers` worker
    processes on this machine (LocalProvider), bound to `address` (loopback by default)."""

    kind: Literal["processes"] = Field("processes", description="`processes`.")

    def parsl_executor(self, run_dir: Path) -> ParslPart:
        from parsl.providers import LocalProvider
        provider = LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, worker_init="")
        # Parsl caps a pool's workers at cores / cores_per_worker: with more workers than cores
        # (segments that wait: external programs, I/O, simulated compute) share the cores, so
        # that the pool has exactly `workers` workers, as `runner.workers` promises
        cores = float(os.cpu_count() or 1)
        return ParslPart(_htex(self.address, run_dir, provider, self.workers, sys.executable,
                               cores_per_worker=min(1.0, cores / self.workers),
                               heartbeat_period=5, heartbeat_threshold=30))


class SlurmRunner(RunnerSection):
    """`kind: slurm` — a Parsl HighThroughputExecutor whose worker pools run in Slurm batch
    jobs (SlurmProvider), set by the section `runner.slurm`."""

    kind: Literal["slurm"] = Field("slurm", description="`slurm`.")
    slurm: SlurmSection = Field(default_factory=SlurmSection,
                                description="Slurm blocks (section `runner.slurm`).")

    def parsl_executor(self, run_dir: Path) -> ParslPart:
        from parsl.launchers import SimpleLauncher, SrunLauncher
        sl = self.slurm
        worker_init = default_worker_init() if sl.worker_init is None else sl.worker_init
        provider = _slurm_provider_class()(
            poll_interval=sl.poll_interval,
            partition=sl.partition, account=sl.account, qos=sl.qos, walltime=sl.walltime,
            nodes_per_block=sl.nodes_per_block, init_blocks=sl.init_blocks,
            min_blocks=sl.min_blocks, max_blocks=sl.max_blocks,
            scheduler_options=sl.scheduler_options, worker_init=worker_init,
            exclusive=sl.exclusive,
            launcher=SrunLauncher() if sl.launcher == "srun" else SimpleLauncher())
        # With the default worker_init the workers run the driver's interpreter (same project,
        # same packages; the shared filesystem makes the path valid on compute nodes); a custom
        # worker_init provides its own `python3`.
        python = sys.executable if sl.worker_init is None else "python3"
        executor = _htex(sl.address or self.address, run_dir, provider,
                         sl.workers_per_node or self.workers, python,
                         cores_per_worker=sl.cores_per_worker,
                         # a lost block's segments fail (ManagerLost) within ~10 s and are re-run
                         heartbeat_period=2, heartbeat_threshold=10,
                         block_error_handler=BlockErrors())
        # the scaling strategy replaces a block that ended (min_blocks) and adds blocks while
        # segments wait (max_blocks); "none" would never start a replacement
        return ParslPart(executor, strategy="htex_auto_scale", strategy_period=1.0)


def parsl_config(part: ParslPart, run_dir: Path, job_name: str | None = None):
    """Compose a Parsl Config from a runner kind's part (its executor and strategy).  With
    `job_name`, the blocks its provider submits are named `JOB_NAME.block-N.<time>`."""
    from parsl.config import Config
    provider = getattr(part.executor, "provider", None)
    if job_name and provider is not None:
        _name_blocks(provider, job_name)
    return Config(executors=[part.executor], run_dir=str(run_dir / "parsl"),
                  strategy=part.strategy, strategy_period=part.strategy_period,
                  max_idletime=3600.0, initialize_logging=False, usage_tracking=0)


def _name_blocks(provider, job_name: str) -> None:
    """Parsl names a block `parsl.<label>.block-N`; name it after the campaign instead
    (`<job_name>.block-N`), so that the next driver of the campaign finds the blocks a killed
    driver left (runtime/slurm.py).  Any provider: the name is `submit`'s argument."""
    submit = provider.submit

    def named_submit(command, tasks_per_node, job_name_=None, *a, **kw):
        block = str(job_name_ or "").rpartition(".block-")[2]
        return submit(command, tasks_per_node, f"{job_name}.block-{block or 0}", *a, **kw)

    provider.submit = named_submit


def _slurm_provider_class():
    from parsl.providers import SlurmProvider

    class Provider(SlurmProvider):
        """Parsl's SlurmProvider polls `squeue` every 60 s, so an ended block would be noticed
        (and replaced) up to a minute late; poll every ``poll_interval`` seconds instead."""

        def __init__(self, *args, poll_interval: float = 60.0, **kw):
            super().__init__(*args, **kw)
            self._poll_interval = poll_interval

        @property
        def status_polling_interval(self):
            return self._poll_interval

    return Provider


class BlockErrors:
    """When to give up on Slurm blocks.

    Parsl's default handler gives up (every segment fails with BadStateException) as soon as
    every block has ended without a connected worker pool — which is also what a block that
    was cancelled or reached its walltime looks like (HTEX marks it MISSING).  Give up only
    when the last ``threshold`` blocks all ended without ever connecting a worker pool: the
    blocks cannot start (wrong partition, account, worker_init), not merely ended."""

    def __init__(self, threshold: int = 3):
        self.threshold = threshold
        self.connected: set[str] = set()

    def __call__(self, executor, status) -> None:
        from parsl.jobs.error_handlers import _get_error
        from parsl.jobs.states import JobState
        try:
            self.connected.update(str(b) for b in executor.connected_blocks())
        except Exception:  # noqa: BLE001 - pragma: no cover - the interchange is going away
            return
        recent = sorted(status, key=lambda b: int(b) if str(b).isdigit() else -1)[-self.threshold:]
        if len(recent) == self.threshold and all(
                status[b].state in (JobState.FAILED, JobState.MISSING)
                and str(b) not in self.connected for b in recent):
            executor.set_bad_state_and_fail_all(_get_error({b: status[b] for b in recent}))


def executor_failed(exc: BaseException) -> bool:
    """True when Parsl gave up on the executor (blocks cannot start): no retry can help."""
    from parsl.executors.errors import BadStateException
    return isinstance(exc, BadStateException)


def lost_worker(exc: BaseException) -> bool:
    """True when a segment failed because its worker went away (a Slurm block cancelled or
    out of walltime, a node lost), not because of the model: re-run it without counting."""
    try:
        from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost
    except ImportError:  # pragma: no cover - other Parsl versions
        return type(exc).__name__ in ("ManagerLost", "WorkerLost")
    return isinstance(exc, (ManagerLost, WorkerLost))


class Executor:
    """Submit segments as Parsl apps; always clean up.

    The models its segments build in this process (thread workers) belong to this executor's
    own pool: closing it stops those, not the models of another executor in the process."""

    def __init__(self, runner: RunnerSection, run_dir: Path, job_name: str | None = None):
        self.runner = runner
        self.run_dir = run_dir
        self.job_name = job_name  # the campaign's Slurm job name: its blocks carry it
        self.dfk: DataFlowKernel | None = None
        self._app: Callable[..., Future] | None = None  # the Parsl app, once entered
        self._direct: Any = None  # a Parsl executor driven without a DFK (ParslPart.direct)
        self._capacity = 0
        self._capacity_at = -1e9
        self._elastic = False  # blocks come and go (a batch system): count connected workers
        self.pool = f"executor-{uuid.uuid4().hex}"

    def __enter__(self) -> Self:
        import parsl
        from parsl import python_app

        (self.run_dir / "parsl").mkdir(parents=True, exist_ok=True)
        for name in ("parsl", "parsl.dataflow", "parsl.executors"):
            logging.getLogger(name).setLevel(logging.WARNING)
        part = self.runner.parsl_executor(self.run_dir)
        if part.direct:
            ex = part.executor
            ex.run_dir = str(self.run_dir / "parsl")
            ex.start()
            self._direct = ex
            return self
        config = parsl_config(part, self.run_dir, self.job_name)
        self._elastic = config.strategy not in (None, "none")  # e.g. Slurm blocks
        self.dfk = parsl.load(config)
        self._app = python_app(run_segment, executors=["tams"], data_flow_kernel=self.dfk,
                               cache=False)
        return self

    def submit(self, spec, request: SegmentRequest, collect: bool = True) -> Future:
        if self._direct is not None:
            return self._direct.submit(run_segment, {}, spec, request, collect, self.pool)
        assert self._app is not None, "submit() outside `with Executor(...)`"
        return self._app(spec, request, collect, self.pool)

    def capacity(self) -> int:
        """Segments that can run at once now: the configured workers for threads and local
        processes; for a kind whose blocks come and go (Slurm: its Parsl part has a scaling
        strategy), the workers of the blocks connected now (asked at most every 2 s: each
        question is a round trip to the interchange)."""
        if not self._elastic or self.dfk is None:
            return self.runner.workers
        import time
        now = time.monotonic()
        if now - self._capacity_at > 2.0:
            self._capacity_at = now
            # the interchange may be starting or going away: keep the last count then
            with contextlib.suppress(Exception):
                # elastic parts are HighThroughputExecutors (the ones with managers)
                ex = cast("HighThroughputExecutor", self.dfk.executors["tams"])
                self._capacity = sum(int(m.get("worker_count", 0))
                                     for m in ex.connected_managers() if m.get("active", True))
        return self._capacity

    def window(self) -> int | None:
        """Most tasks given to Parsl at once (see the driver): four per worker, at least 8,
        so that every worker has its next segment queued; ``None`` (no limit) for kinds whose
        blocks come and go, whose scaling follows the outstanding tasks."""
        if self._elastic:
            return None
        return max(8, 4 * self.runner.workers)

    @staticmethod
    def is_lost(exc: BaseException) -> bool:
        return lost_worker(exc)

    @staticmethod
    def is_fatal(exc: BaseException) -> bool:
        return executor_failed(exc)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._direct is not None:
            ex, self._direct = self._direct, None
            shutdown_models(self.pool)  # stop the model runs; the threads then finish
            ex.shutdown(block=True)
            return
        if self.dfk is None:
            return
        import parsl
        dfk, self.dfk = self.dfk, None
        shutdown_models(self.pool)  # models built by this executor's thread workers
        try:
            dfk.cleanup()
        finally:
            with contextlib.suppress(Exception):  # best effort: the DFK is gone already
                parsl.clear()
