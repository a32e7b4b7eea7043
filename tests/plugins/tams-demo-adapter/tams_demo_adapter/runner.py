"""``runner: {kind: serial}`` — one segment at a time, whatever ``runner.workers`` says.

A runner kind is one class: the pydantic model of its section (common keys inherited from
:class:`orchestrator.config.RunnerSection`) that builds its part of the Parsl Config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from orchestrator.config import RunnerSection
from orchestrator.runtime.executor import ParslPart


class SerialRunner(RunnerSection):
    """`kind: serial` — a Parsl ThreadPoolExecutor with one thread."""

    kind: Literal["serial"] = Field("serial", description="`serial`.")
    label: str = Field("serial", description="A name shown in logs (an own key of this kind).")

    def parsl_executor(self, run_dir: Path) -> ParslPart:
        from parsl.executors import ThreadPoolExecutor
        return ParslPart(ThreadPoolExecutor(label="tams", max_threads=1))
