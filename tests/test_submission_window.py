"""The driver's submission window: the executor never holds more than `window()` tasks that
the driver has not ingested yet, and the window changes no result (the order of submission
is free, DESIGN §5)."""
from __future__ import annotations

from concurrent.futures import Future

import orchestrator as tams
from conftest import assert_same, digest
from orchestrator.runtime.inline import InlineExecutor

CAMPAIGN = {"seed": 9, "replicas": 3,
            "model": {"adapter": "python", "step": "adapters.examples.doublewell1d:step",
                      "initial_state": [-1.0], "dt": 0.01, "observables": ["x"],
                      "parameters": {"eps": 0.04}},
            "score": {"function": "adapters.examples.doublewell1d:score", "target": 0.95},
            "tams": {"trajectories": 20, "kill_per_iteration": 2, "horizon": 5.0,
                     "segment_steps": 200, "max_iterations": 15}}


class _Counted(Future):
    """A future whose result the driver takes exactly once, when it ingests the segment."""

    def __init__(self, owner: Counting):
        super().__init__()
        self.owner = owner
        self.taken = False

    def result(self, timeout=None):
        if not self.taken:
            self.taken = True
            self.owner.outstanding -= 1
        return super().result(timeout)


class Counting(InlineExecutor):
    """The in-process executor, counting the tasks handed over and not yet ingested."""

    def __init__(self, window: int | None):
        super().__init__()
        self._window = window
        self.outstanding = self.most = self.submitted = 0

    def window(self) -> int | None:
        return self._window

    def submit(self, spec, request, collect=True):
        inner = super().submit(spec, request, collect)
        fut = _Counted(self)
        self.outstanding += 1
        self.submitted += 1
        self.most = max(self.most, self.outstanding)
        exc = inner.exception()
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(inner.result())
        return fut


def _run(tmp_path, name, executor):
    res = tams.run(CAMPAIGN, in_memory=True, progress=False, executor=executor,
                   run_dir=tmp_path / name)
    return digest(res.store)


def test_the_window_bounds_the_tasks_given_to_the_executor_and_moves_no_bit(tmp_path):
    unbounded, one, three = Counting(None), Counting(1), Counting(3)
    ref = _run(tmp_path, "none", unbounded)
    # without a window the initial ensembles (3 x 20) are handed over at once
    assert unbounded.most >= 60
    for name, ex, w in (("one", one, 1), ("three", three, 3)):
        assert_same(ref, _run(tmp_path, name, ex))
        assert ex.most == w, (name, ex.most)
        assert ex.submitted == unbounded.submitted


def test_the_parsl_executor_window_is_four_per_worker_and_none_for_slurm():
    from orchestrator.config import RunnerSection
    from orchestrator.runtime.executor import Executor

    ex = Executor(RunnerSection(kind="threads", workers=5), run_dir=None)  # type: ignore[arg-type]
    assert ex.window() == 20
    assert Executor(RunnerSection(kind="threads", workers=1), None).window() == 8  # type: ignore[arg-type]
    ex._elastic = True  # what __enter__ sets for a batch system's blocks
    assert ex.window() is None
