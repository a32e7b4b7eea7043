"""The Python API: run a campaign from a notebook or a script, get a result object back.

    import orchestrator as tams
    result = tams.run("configs/doublewell2d.yaml")          # a YAML path
    result = tams.run({"seed": 1, "model": {...}, ...})      # a dict
    result = tams.run(campaign, model_step=my_step)          # callables instead of paths
    result.mean, result.stderr, result.ci, result.estimates, result.cost
    result.database()                                        # the read API on what was written
    result.diagnostics()                                     # level crossing, composites, ...

It is the same driver, store and executors as ``tams run``: the same seed gives the same
database, bit for bit.  Python functions (a python-adapter model's ``step``/``observe``, the
score function) may be given as callables: a function importable by name is recorded by its
import path (``module:function``, so workers in other processes find it); any other callable
(a lambda, a closure) is registered in this process (:func:`orchestrator.imports.register`)
and then needs the ``threads`` runner or the in-process executor.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import Campaign, LoadedCampaign, load, load_data
from orchestrator.core.stats import Summary, binomial_summary, summarize
from orchestrator.imports import path_of_callable

__all__ = ["load_campaign", "run", "RunResult", "ReplicaResult"]

# keys of a campaign that may hold a callable instead of an import path
_CALLABLE_KEYS = (("model", "step"), ("model", "observe"), ("model", "segment"),
                  ("score", "function"))


def _replace_callables(data: dict) -> dict:
    data = copy.deepcopy(data)  # functions are copied by reference
    for a, b in _CALLABLE_KEYS:
        sec = data.get(a)
        if isinstance(sec, dict) and callable(sec.get(b)):
            sec[b] = path_of_callable(sec[b])
    return data


def load_campaign(source: str | os.PathLike | dict | Campaign | LoadedCampaign, *,
                  base_dir: str | os.PathLike | None = None, name: str | None = None,
                  **overrides: Any) -> LoadedCampaign:
    """A validated campaign from a YAML path, a dict, or a :class:`~orchestrator.config.Campaign`.

    ``base_dir`` is where relative input paths of a dict campaign are resolved (default: the
    current directory); ``overrides`` are dotted keys with ``__``, e.g.
    ``tams__trajectories=20`` or ``model__step=my_step``.  Raises
    :class:`~orchestrator.errors.ConfigError` with one sentence on any problem.
    """
    if isinstance(source, LoadedCampaign) and not overrides:
        return source
    if isinstance(source, (str, os.PathLike)) and not overrides:
        return load(source)
    if isinstance(source, (str, os.PathLike)):
        import yaml
        path = Path(source)
        loaded = load(path)  # validates, and gives one sentence for a bad file
        data = yaml.safe_load(loaded.text)
        label, base = path, str(path.resolve().parent)
    elif isinstance(source, LoadedCampaign):
        import yaml
        data = yaml.safe_load(source.text)
        label, base = source.path, source.base_dir
    elif isinstance(source, Campaign):
        data = source.model_dump(mode="python", exclude_none=False)
        label, base = Path("<campaign>"), None
    elif isinstance(source, dict):
        data = source
        label, base = Path("<campaign>"), None
    else:
        raise TypeError(f"a campaign is a YAML path, a dict or a Campaign, not {type(source).__name__}")
    data = _replace_callables(data)
    for key, value in overrides.items():
        d = data
        parts = key.split("__")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = path_of_callable(value) if callable(value) else value
    if name is not None:
        data["name"] = name
    data.setdefault("name", Path(label).stem if not str(label).startswith("<") else "campaign")
    base = str(Path(base_dir).resolve()) if base_dir is not None else (base or os.getcwd())
    return load_data(data, label, base_dir=base)


@dataclass(frozen=True)
class ReplicaResult:
    index: int
    outcome: str  # converged, max_iterations, extinct, running
    estimate: float
    log_estimate: float
    iterations: int
    model_steps: int
    segments: int


@dataclass(frozen=True)
class RunResult:
    """What a run established: per-replica estimates and their summary across replicas."""

    name: str
    replicas: tuple[ReplicaResult, ...]
    summary: Summary
    wall_time: float  # seconds this call took
    model_seconds: float  # sum of the segments' wall times
    db_path: Path | None
    store: Any = None  # the MemoryStore, when the run used one

    @property
    def estimates(self) -> np.ndarray:
        return np.array([r.estimate for r in self.replicas])

    @property
    def mean(self) -> float:
        return self.summary.mean

    @property
    def stderr(self) -> float:
        return self.summary.stderr

    @property
    def ci(self) -> tuple[float, float]:
        """The 95 % interval of :func:`orchestrator.core.stats.summarize` (docs/algorithm.md);
        for ``algorithm: montecarlo`` Wilson's binomial interval of all the replicas'
        trajectories pooled (:func:`orchestrator.core.stats.binomial_summary`)."""
        return (self.summary.ci_low, self.summary.ci_high)

    @property
    def cost(self) -> dict[str, float]:
        return {"model_steps": sum(r.model_steps for r in self.replicas),
                "segments": sum(r.segments for r in self.replicas),
                "iterations": sum(r.iterations for r in self.replicas),
                "model_seconds": self.model_seconds, "wall_seconds": self.wall_time}

    def database(self):
        """The read API (:class:`orchestrator.store.reader.Database`) on what the run wrote."""
        from orchestrator.store import Database
        return Database(self.store if self.store is not None else self.db_path)

    def diagnostics(self, levels=None, max_lag: int | None = None):
        """TAMS and montecarlo: the level-crossing curve, mean first-passage time and
        composite of the trajectories that reached B
        (:func:`orchestrator.core.diagnostics.diagnostics`); gklt: the probability and return
        time of the time average of A over thresholds (``levels``;
        :func:`orchestrator.core.gklt.return_times`)."""
        db = self.database()
        if db.meta.algorithm == "gklt":
            from orchestrator.core.gklt import return_times
            return return_times(db, levels)
        from orchestrator.core.diagnostics import diagnostics
        return diagnostics(db, levels, max_lag)

    def __repr__(self) -> str:
        s = self.summary
        lo, hi = self.ci
        return (f"RunResult({self.name!r}: p = {s.mean:.4g} ± {s.stderr:.2g}, 95 % CI "
                f"[{lo:.4g}, {hi:.4g}], {s.n} replicas)")


class TextProgress:
    """One line, rewritten in place (``\\r``): works in a terminal and in Jupyter's output
    area alike, without a widget library."""

    def __init__(self, stream=None, every: float = 0.5):
        self.stream = stream or sys.stderr
        self.every = every
        self.last = -math.inf
        self.lines = 0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if now - self.last < self.every and p.done < len(p.replicas):
            return
        self.last = now
        active = [r for r in p.replicas if not r.done]
        level = min((r.level for r in active if math.isfinite(r.level)), default=math.nan)
        self.stream.write(f"\rTAMS {p.elapsed:6.1f} s: replicas {p.done}/{len(p.replicas)} done, "
                          f"lowest level {level:.4g}, segments {p.running} running, "
                          f"{p.queued} queued   ")
        self.stream.flush()
        self.lines += 1

    def close(self) -> None:
        if self.lines:
            self.stream.write("\n")
            self.stream.flush()


def run(campaign: str | os.PathLike | dict | Campaign | LoadedCampaign, *,
        db: str | os.PathLike | None = None, in_memory: bool = False,
        progress: bool | Callable = True, executor: Any = None,
        run_dir: str | os.PathLike | None = None, **overrides: Any) -> RunResult:
    """Run (or resume) a campaign to the end and return its result.

    ``db``: the HDF5 database (default ``database.path``, else ``<name>.h5``); with
    ``in_memory=True`` nothing but the model's states is written (a
    :class:`~orchestrator.store.memory.MemoryStore`; the result's ``database()`` reads it).
    ``progress``: True for a line rewritten in place, False for none, or a callable taking
    :class:`orchestrator.runtime.driver.Progress`.  ``executor``: e.g.
    :class:`orchestrator.runtime.inline.InlineExecutor` to run every segment in this thread;
    default: the campaign's ``runner`` (Parsl).  ``overrides`` as in :func:`load_campaign`.
    """
    from orchestrator.runtime.driver import Driver
    loaded = load_campaign(campaign, **overrides)
    store = None
    if in_memory:
        from orchestrator.core.meta import CampaignMeta
        from orchestrator.store import MemoryStore
        d = Driver(loaded, db_path=None if db is None else str(db), run_dir=run_dir)
        store = MemoryStore(CampaignMeta.from_loaded(loaded, str(d.run_dir)), loaded.text)
    view: Any = TextProgress() if progress is True else (progress or None)
    driver = Driver(loaded, db_path=None if db is None else str(db), on_progress=view,
                    store=store, executor=executor, run_dir=run_dir)
    t0 = time.monotonic()
    try:
        reps = driver.run()
    finally:
        if isinstance(view, TextProgress):
            view.close()
    results = tuple(ReplicaResult(r.r, r.outcome.name.lower(),
                                  r.summary().estimate, r.summary().log_estimate, r.iteration,
                                  r.model_steps, r.segments) for r in reps)
    finished = [r for r in reps if r.done]
    if loaded.campaign.algorithm == "montecarlo":  # pooled binomial, Wilson interval
        n = loaded.campaign.tams.trajectories
        summary = binomial_summary(sum(r.n_reached() for r in finished), n * len(finished), n)
    else:
        summary = summarize([x.estimate for x in results if x.outcome != "running"])
    return RunResult(loaded.name, results, summary,
                     time.monotonic() - t0, sum(r.wall_time for r in reps),
                     None if store is not None else driver.db_path, store)
