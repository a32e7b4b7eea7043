"""The campaign's score function, applied in the driver to a segment's observables.

``score(t, observables, **parameters)`` is vectorised: ``t`` has shape (n,), ``observables``
shape (n, n_observables); it returns n scores.  Running it in the orchestrator means a model
never needs to know about TAMS.
"""
from __future__ import annotations

import numpy as np

from orchestrator.imports import resolve


class ScoreError(RuntimeError):
    pass


class Scorer:
    def __init__(self, function: str, parameters: dict, base_dir: str):
        self.path = function
        self.fn = resolve(function, base_dir)
        self.parameters = dict(parameters)

    def __call__(self, times: np.ndarray, observables: np.ndarray) -> np.ndarray:
        try:
            out = self.fn(times, observables, **self.parameters)
        except Exception as exc:
            raise ScoreError(f"score function {self.path} raised {type(exc).__name__}: {exc}") from None
        out = np.asarray(out, dtype=np.float64)
        if out.shape != times.shape:
            raise ScoreError(f"score function {self.path} returned shape {out.shape}; expected "
                             f"{times.shape} (one score per step: vectorise it over the rows of "
                             "observables)")
        if not np.isfinite(out).all():
            raise ScoreError(f"score function {self.path} returned a non-finite score")
        return out
