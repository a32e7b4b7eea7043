"""What runs inside a Parsl worker: build the adapter (cached per process) and run a segment.

The model is sent as a small picklable spec (adapter name, its config as a dict, the
campaign directory) rather than as an object, so a worker in another process or on another
node rebuilds it once and reuses it for every segment.
"""
from __future__ import annotations

import json
import time

from orchestrator.model import ModelRunError, SegmentRequest, SegmentResult

_MODELS: dict[str, object] = {}


def build_model(spec: tuple[str, dict, str]):
    adapter, config, base_dir = spec
    key = json.dumps([adapter, config, base_dir], sort_keys=True, default=str)
    model = _MODELS.get(key)
    if model is None:
        from orchestrator.registry import adapter_class
        cls = adapter_class(adapter)
        model = cls.from_config(cls.Config.model_validate(config), base_dir)
        _MODELS[key] = model
    return model


def run_segment(spec: tuple[str, dict, str], request: SegmentRequest,
                collect: bool = True) -> SegmentResult:
    """Run (or, when its directory holds a finished result, collect) one segment."""
    model = build_model(spec)
    if collect:
        t0 = time.perf_counter()
        done = model.collect(request)
        if done is not None:
            return done
    try:
        return model.run_segment(request)
    except ModelRunError:
        raise
    except Exception as exc:  # an adapter bug must still name the segment
        raise ModelRunError(f"segment {request.workdir}: {type(exc).__name__}: {exc}",
                            request.workdir) from None


def shutdown_models() -> None:
    """Stop every model run this process started (Ctrl-C, SIGTERM, failure)."""
    for model in list(_MODELS.values()):
        try:
            model.shutdown()
        except Exception:  # pragma: no cover - best effort on the way out
            pass
