"""The in-process executor: every segment runs at once, in the caller's thread, without Parsl.

For the statistical tests and notebooks, where thousands of small replicas make Parsl's
per-task cost the largest part of the run.  It runs exactly the worker code
(:func:`orchestrator.runtime.worker.run_segment`) that a Parsl worker runs, and hands back a
finished :class:`concurrent.futures.Future`, so the driver loop cannot tell the difference.
"""
from __future__ import annotations

import itertools
from concurrent.futures import Future

from orchestrator.model import SegmentRequest
from orchestrator.runtime.worker import run_segment, shutdown_models

_SERIAL = itertools.count(1)


class InlineExecutor:
    def __init__(self) -> None:
        # its own model pool: closing this executor stops its models, no one else's.  Named
        # by a counter, not id(self): a later executor at the same address would otherwise
        # find the closed pool of an earlier one
        self.pool = f"inline-{next(_SERIAL)}"

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        shutdown_models(self.pool)

    def submit(self, spec, request: SegmentRequest, collect: bool = True) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(run_segment(spec, request, collect, self.pool))
        except Exception as exc:  # noqa: BLE001 - the driver's retry policy judges it
            fut.set_exception(exc)
        return fut

    def capacity(self) -> int:
        return 1

    def window(self) -> int | None:
        """Tasks the driver hands over before it ingests results: each runs at once here,
        so a small window keeps few finished results waiting."""
        return 4

    @staticmethod
    def is_lost(exc: BaseException) -> bool:
        return False

    @staticmethod
    def is_fatal(exc: BaseException) -> bool:
        return False
