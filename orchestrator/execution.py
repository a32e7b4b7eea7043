"""Running segments on Parsl: the only module that touches Parsl.

``Executor`` is a context manager around a Parsl DataFlowKernel built from the campaign's
``runner`` section.  Leaving it, by any path (normal end, exception, Ctrl-C, SIGTERM turned
into an exception by the CLI), cleans Parsl up: blocks are cancelled, the interchange stops.
Parsl's own walltime does not kill a process, so timeouts are the adapters' job.
"""
from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import Future
from pathlib import Path

from .config import RunnerSection
from .model import SegmentRequest
from .worker import run_segment, shutdown_models

log = logging.getLogger(__name__)


def parsl_config(runner: RunnerSection, run_dir: Path):
    """Compose a Parsl Config from the runner section (Parsl's own style: small objects)."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider

    if runner.kind == "threads":
        executor = ThreadPoolExecutor(label="tams", max_threads=runner.workers)
    elif runner.kind == "processes":
        # Parsl finds its helper scripts on PATH; name them through this interpreter so a
        # driver started from a virtual environment that is not on PATH still works.
        from parsl.executors.high_throughput import executor as htex
        launch = htex.DEFAULT_LAUNCH_CMD.replace(
            "process_worker_pool.py", f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool", 1)
        executor = HighThroughputExecutor(
            launch_cmd=launch,
            interchange_launch_cmd=[sys.executable, "-m", "parsl.executors.high_throughput.interchange"],
            label="tams", address=runner.address, loopback_address="127.0.0.1",
            max_workers_per_node=runner.workers, cores_per_worker=1,
            worker_logdir_root=str(run_dir / "parsl"), heartbeat_period=5,
            heartbeat_threshold=30, encrypted=False, poll_period=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                   worker_init=""))
    else:  # pragma: no cover - validated by the config
        raise ValueError(runner.kind)
    return Config(executors=[executor], run_dir=str(run_dir / "parsl"), strategy="none",
                  initialize_logging=False, usage_tracking=0)


class Executor:
    """Submit segments as Parsl apps; always clean up."""

    def __init__(self, runner: RunnerSection, run_dir: Path):
        self.runner = runner
        self.run_dir = run_dir
        self.dfk = None
        self._app = None

    def __enter__(self) -> "Executor":
        import parsl
        from parsl import python_app

        (self.run_dir / "parsl").mkdir(parents=True, exist_ok=True)
        for name in ("parsl", "parsl.dataflow", "parsl.executors"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.dfk = parsl.load(parsl_config(self.runner, self.run_dir))
        self._app = python_app(run_segment, executors=["tams"], data_flow_kernel=self.dfk,
                               cache=False)
        return self

    def submit(self, spec, request: SegmentRequest, collect: bool = True) -> Future:
        return self._app(spec, request, collect)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.dfk is None:
            return
        import parsl
        dfk, self.dfk = self.dfk, None
        shutdown_models()  # models started by thread workers of this process
        try:
            dfk.cleanup()
        finally:
            try:
                parsl.clear()
            except Exception:  # pragma: no cover
                pass
