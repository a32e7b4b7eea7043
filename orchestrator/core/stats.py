"""Statistics across replicas: mean, standard error, Student-t 95 % confidence interval."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1..30; beyond, a Cornish-Fisher
# expansion around the normal quantile is accurate to 1e-4.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # of one replica
    stderr: float
    ci_low: float
    ci_high: float

    @property
    def rel_std(self) -> float:
        return self.std / self.mean if self.mean > 0 else math.nan


def summarize(estimates) -> Summary:
    x = np.asarray(estimates, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    se = std / math.sqrt(n)
    h = t975(n - 1) * se
    return Summary(n, mean, std, se, mean - h, mean + h)
