"""What runs inside a Parsl worker: build the adapter (cached per pool) and run a segment.

The model is sent as a small picklable spec (adapter name, its config as a dict, the
campaign directory) rather than as an object, so a worker in another process or on another
node rebuilds it once and reuses it for every segment.

Models live in *pools*, one per executor (its ``pool`` name travels with every segment): a
pool owns the models it built, each model owns its launcher, each launcher its running
processes.  So closing one executor stops its own model runs and leaves those of another
executor in the same process (two campaigns run from one Python program) alone, and
:func:`shutdown_models` without a name still stops every model this process built.
"""
from __future__ import annotations

import contextlib
import json
import threading

from orchestrator.model import (
    ForwardModel,
    ModelRunError,
    SegmentRequest,
    SegmentResult,
)

DEFAULT_POOL = "default"


class ModelPool:
    """The models built in this process for one executor, one per distinct spec."""

    def __init__(self) -> None:
        self._models: dict[str, ForwardModel] = {}
        self._lock = threading.Lock()
        self.closed = False
        # the last spec seen and its model: a driver in this process passes the same spec
        # object every time, so the JSON key is not recomputed per segment
        self._last: tuple[tuple, ForwardModel] | None = None

    def get(self, spec: tuple[str, dict, str]) -> ForwardModel:
        last = self._last
        if last is not None and last[0] is spec:  # the same spec object again (in-process)
            return last[1]
        adapter, config, base_dir = spec
        key = json.dumps([adapter, config, base_dir], sort_keys=True, default=str)
        with self._lock:  # built once: a duplicate's runs would escape shutdown()
            if self.closed:  # a segment Parsl still had queued when its executor closed
                raise ModelRunError("segment not started: its executor was shut down")
            model = self._models.get(key)
            if model is None:
                from orchestrator.registry import adapter_class
                cls = adapter_class(adapter)
                model = cls.from_config(cls.Config.model_validate(config), base_dir)
                self._models[key] = model
            self._last = (spec, model)
            return model

    def shutdown(self, close: bool = False) -> None:
        """Stop every run of every model of this pool (Ctrl-C, SIGTERM, failure, the end);
        with ``close``, also start no new one (its executor is gone)."""
        with self._lock:
            models = list(self._models.values())
            if close:
                self.closed = True
                self._models.clear()
                self._last = None
        for model in models:
            with contextlib.suppress(Exception):  # best effort on the way out: stop the others
                model.shutdown()


_POOLS: dict[str, ModelPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(name: str) -> ModelPool:
    with _POOLS_LOCK:
        return _POOLS.setdefault(name, ModelPool())


def build_model(spec: tuple[str, dict, str], pool: str = DEFAULT_POOL) -> ForwardModel:
    return _pool(pool).get(spec)


def run_segment(spec: tuple[str, dict, str], request: SegmentRequest,
                collect: bool = True, pool: str = DEFAULT_POOL) -> SegmentResult:
    """Run (or, when its directory holds a finished result, collect) one segment."""
    model = build_model(spec, pool)
    if collect:
        done = model.collect(request)
        if done is not None:
            return done
    try:
        return model.run_segment(request)
    except ModelRunError:
        raise
    except Exception as exc:  # noqa: BLE001 - an adapter bug must still name the segment
        raise ModelRunError(f"segment {request.workdir}: {type(exc).__name__}: {exc}",
                            request.workdir) from None
    finally:
        # the drawn noise is not needed any more; in-process (threads) the driver and Parsl
        # still hold this request, and would keep the array with it
        release = getattr(request.noise, "release", None)
        if release is not None:
            release()


def shutdown_models(pool: str | None = None) -> None:
    """Stop the model runs of every pool (None), or of one pool, which is then closed: its
    executor is going away, and a segment still queued for it must not start a model."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values()) if pool is None else [_POOLS.setdefault(pool, ModelPool())]
    for p in pools:
        p.shutdown(close=pool is not None)
