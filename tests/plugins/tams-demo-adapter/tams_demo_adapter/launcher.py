"""``launcher: nice`` — the executable adapter's command, run under ``nice -n LEVEL``.

A launcher with a section of its own (``model.nice``), built on the local launcher's process
handling (its own process group, timeouts, per-instance table of runs).
"""
from __future__ import annotations

import shutil
from collections.abc import Sequence

from pydantic import Field, field_validator

from adapters.launchers import LocalLauncher
from orchestrator.config import Strict


class NiceConfig(Strict):
    """Keys of `model.nice` (with `launcher: nice`): how nice the model runs."""

    level: int = Field(10, description="The `nice -n` increment, 0..19.")

    @field_validator("level")
    @classmethod
    def _level(cls, v: int) -> int:
        if not 0 <= v <= 19:
            raise ValueError("must be an integer in 0..19")
        return v


class NiceLauncher(LocalLauncher):
    name = "nice"
    Config = NiceConfig

    def __init__(self, config: NiceConfig, base_dir: str):
        super().__init__()
        self.config = config

    def run(self, argv: list[str], workdir: str, env: dict, timeout: float | None,
            reads: Sequence[str] = ()):
        nice = shutil.which("nice") or "nice"
        return super().run([nice, "-n", str(self.config.level), *argv], workdir, env, timeout,
                           reads)

    def check(self) -> list[str]:
        if shutil.which("nice") is None:
            return ["key model.launcher: the `nice` program is not on PATH; install coreutils"]
        return []
