"""Statistics across replicas: mean, standard error and a 95 % confidence interval for p.

The replicas' estimates are independent, unbiased, non-negative, at most 1 and strongly
right-skewed (a TAMS estimate is close to log-normal: in the idealised algorithm the number of
iterations is Poisson, so log p-hat is nearly normal).  A Student-t interval around their mean
is symmetric, so with few replicas it reaches below 0 (a probability!) and, because a low
sample mean comes with a low sample spread, it misses the true p more often than 5 %.  The
interval here is built on the log scale, where the estimates are nearly normal, by the method
of variance estimates recovery (MOVER; Zou & Donner 2008, Stat. Med. 27, 1693-1702; for
log-normal means Zou, Huo & Taleban 2009, Environmetrics 20, 172-180): log of the mean =
mu + sigma^2/2 (+ log of the non-zero fraction when some estimates are 0), each term with its
own exact interval (Student-t for mu, chi-square for sigma^2, Wilson for the fraction), the
limits combined as ``sum - sqrt(sum (term - low)^2)``, ``sum + sqrt(sum (high - term)^2)``.

* estimates all positive — MOVER for mu + sigma^2/2 from y = log(estimates);
* some estimates 0 (extinct replicas) — the delta-lognormal mean (Aitchison 1955),
  log(n1/n) + mu + sigma^2/2 from the n1 positive ones;
* one positive estimate — no spread of logs exists; the delta method on log(mean):
  ``mean * exp(+- t_{n-1} se / mean)``;
* every estimate 0 — the mean is 0 and no spread is known; since each estimate is at most 1,
  p <= P(a replica's estimate is non-zero), whose Clopper-Pearson upper limit for 0 of n is
  ``1 - 0.025^(1/n)``: the interval [0, that];
* one replica — no interval (NaN).

Every interval is finally clipped to [0, 1], the parameter space, and widened if need be to
hold the mean (float rounding when all estimates are equal); neither lowers coverage.
docs/algorithm.md gives the reasons and the measured coverage; ``tests/test_cli_fixes.py``
checks it.
"""
from __future__ import annotations

import functools
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


def _chi2_cdf(x: float, df: int) -> float:
    """P(chi^2_df <= x): the regularised lower incomplete gamma P(df/2, x/2) by its series
    (all terms positive, so no cancellation; ample for the quantiles needed here)."""
    a, z = df / 2.0, x / 2.0
    if z <= 0.0:
        return 0.0
    term = total = 1.0 / a
    k = 1
    while term > total * 1e-17:
        term *= z / (a + k)
        total += term
        k += 1
    return min(1.0, math.exp(a * math.log(z) - z - math.lgamma(a)) * total)


@functools.cache
def chi2_quantile(q: float, df: int) -> float:
    """The q-quantile of chi^2 with df degrees of freedom (bisection on the exact cdf)."""
    lo, hi = 0.0, max(16.0, 4.0 * df)
    while _chi2_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _chi2_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion k / n."""
    f = k / n
    centre = f + z * z / (2 * n)
    half = z * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def ci95(estimates) -> tuple[float, float]:
    """The 95 % confidence interval for the mean p of independent estimates in [0, 1] (see
    the module docstring for the method and why); (NaN, NaN) for fewer than two."""
    x = np.asarray(estimates, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    pos = x[x > 0]
    n1 = pos.size
    if n1 == 0:
        return 0.0, 1.0 - 0.025 ** (1.0 / n)
    if n1 == 1:
        rel_se = float(x.std(ddof=1)) / math.sqrt(n) / mean
        lo, hi = math.log(mean) - t975(n - 1) * rel_se, math.log(mean) + t975(n - 1) * rel_se
    else:
        y = np.log(pos)
        df = n1 - 1
        s2 = float(y.var(ddof=1))
        # (point, low, high) of each term of log(mean) = log(n1/n) + mu + sigma^2/2
        h_mu = t975(df) * math.sqrt(s2 / n1)
        terms = [(float(y.mean()), float(y.mean()) - h_mu, float(y.mean()) + h_mu),
                 (s2 / 2, df * s2 / (2 * chi2_quantile(0.975, df)),
                  df * s2 / (2 * chi2_quantile(0.025, df)))]
        if n1 < n:
            w_lo, w_hi = _wilson(n1, n)
            terms.append((math.log(n1 / n), math.log(w_lo), math.log(w_hi)))
        centre = sum(t[0] for t in terms)
        lo = centre - math.sqrt(sum((t[0] - t[1]) ** 2 for t in terms))
        hi = centre + math.sqrt(sum((t[2] - t[0]) ** 2 for t in terms))
    lo, hi = math.exp(min(lo, 0.0)), math.exp(min(hi, 0.0))  # p <= 1: no overflow
    return max(0.0, min(lo, mean)), min(1.0, max(hi, mean))


def summarize(estimates) -> Summary:
    """Mean (the unbiased estimate of p), standard deviation of one replica, standard error
    and :func:`ci95` of the finite estimates."""
    x = np.asarray(estimates, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    lo, hi = ci95(x)
    return Summary(n, mean, std, std / math.sqrt(n), lo, hi)


def binomial_summary(k: int, n: int, per_replica: int) -> Summary:
    """Direct Monte Carlo (``algorithm: montecarlo``): ``k`` of ``n`` independent trajectories
    reached B, pooled over every replica.  The mean is k/n; ``stderr`` the binomial
    sqrt(p(1-p)/n); ``std`` that of one replica's estimate (``per_replica`` trajectories);
    the interval is Wilson's score interval.

    Why Wilson and not Clopper-Pearson: Clopper-Pearson guarantees at least 95 % coverage for
    every p, and pays for it by being wide -- its actual coverage is typically 97-99 % for
    the small p a rare-event study has, so it overstates the error of every Monte Carlo
    validation run.  Wilson's coverage oscillates around 95 % (its mean coverage over p is
    close to nominal; Brown, Cai & DasGupta 2001, Stat. Sci. 16, 101-133, recommend it for
    this reason), it is never degenerate (k = 0 gives [0, z^2/(n+z^2)], not a zero-width
    interval as the Wald interval does), and the rest of this module already uses it for a
    proportion."""
    if n <= 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    p = k / n
    lo, hi = _wilson(k, n)
    lo, hi = max(0.0, min(lo, p)), min(1.0, max(hi, p))
    std = math.sqrt(p * (1 - p) / per_replica) if per_replica > 0 else math.nan
    return Summary(n // max(per_replica, 1), p, std, math.sqrt(p * (1 - p) / n), lo, hi)
