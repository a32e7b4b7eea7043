"""What to do with a segment whose run failed: the retry policy, as a pure decision.

Kept apart from the loop so the rule is one readable function: a segment lost with its worker
(a Slurm block cancelled, a node lost) is not the model's fault and is re-run without counting,
up to ``lost_limit`` times; an executor that gave up (blocks cannot start) stops the run; a
transient model failure is retried ``retries`` times; anything else stops the run, with the
database consistent and resumable.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Action(enum.Enum):
    RERUN_LOST = "rerun-lost"  # again, not counted as an attempt
    RETRY = "retry"  # again, as attempt + 1
    STOP_EXECUTOR = "stop-executor"  # the workers cannot run anything
    STOP_MODEL = "stop-model"  # the model keeps failing


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    is_lost: Callable[[BaseException], bool]
    is_fatal: Callable[[BaseException], bool]
    lost_limit: int = 10

    def decide(self, exc: BaseException, attempt: int, lost: int, transient: bool) -> Action:
        if self.is_lost(exc) and lost < self.lost_limit:
            return Action.RERUN_LOST
        if self.is_fatal(exc):
            return Action.STOP_EXECUTOR
        if transient and attempt <= self.retries:
            return Action.RETRY
        return Action.STOP_MODEL
