#!/usr/bin/env python3
"""Brute-force Monte Carlo reference for the AMOC box model (Cessi 1994).

Estimates p = P(y reaches y_off at some step 1..n_steps | y_0 = y_on) for the discrete
Euler-Maruyama chain the model steps,

    y_{s+1} = y_s + dt*(pbar - y_s*(1 + mu2*(1 - y_s)**2)) + sigma*sqrt(dt)*xi_s,

i.e. the TAMS event "score (y - y_on)/(y_off - y_on) >= 1" with dt = 0.01, T = 50
(n_steps = 5000).  Vectorised over paths; absorbed paths are dropped from the active set.

Not a test: a one-off reference whose printed table lives in README.md.

    python3 mc_reference.py                      # the default table
    python3 mc_reference.py --sigma 0.1 --paths 1000000
"""
import argparse
import time

import numpy as np


def roots(mu2, pbar):
    """Real roots of y*(1 + mu2*(1-y)^2) = pbar, ascending."""
    r = np.roots([mu2, -2.0 * mu2, 1.0 + mu2, -pbar])
    return np.sort(r[np.abs(r.imag) < 1e-12].real)


def estimate(sigma, n_paths, *, mu2=6.2, pbar=1.1, dt=0.01, T=50.0, seed=1, chunk=500_000):
    rs = roots(mu2, pbar)
    y_on, y_off = rs[0], rs[-1]
    n_steps = int(round(T / dt))
    rng = np.random.default_rng(seed)
    s = sigma * np.sqrt(dt)
    hits = 0
    done = 0
    while done < n_paths:
        m = min(chunk, n_paths - done)
        y = np.full(m, y_on)
        for _ in range(n_steps):
            one_minus = 1.0 - y
            y = y + dt * (pbar - y * (1.0 + mu2 * one_minus * one_minus)) + s * rng.standard_normal(y.size)
            hit = y >= y_off
            if hit.any():
                hits += int(hit.sum())
                y = y[~hit]
                if y.size == 0:
                    break
        done += m
    p = hits / n_paths
    se = np.sqrt(p * (1.0 - p) / n_paths)
    return p, se, hits, y_on, y_off


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, nargs="*", default=None)
    ap.add_argument("--paths", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    table = [(a.sigma[i], a.paths) for i in range(len(a.sigma))] if a.sigma else \
        [(0.10, 2_000_000), (0.11, 500_000), (0.12, 500_000), (0.13, 200_000),
         (0.15, 200_000), (0.20, 100_000)]
    rs = roots(6.2, 1.1)
    print(f"mu2=6.2 pbar=1.1 dt=0.01 T=50 (5000 steps): y_on={rs[0]:.10f} y_mid={rs[1]:.10f} y_off={rs[2]:.10f}")
    print(f"{'sigma':>6} {'paths':>9} {'hits':>7} {'p':>11} {'std.err':>10} {'seconds':>8}")
    for sigma, n in table:
        n = n or 1_000_000
        t = time.time()
        p, se, hits, *_ = estimate(sigma, n, seed=a.seed)
        print(f"{sigma:6.3f} {n:9d} {hits:7d} {p:11.4e} {se:10.2e} {time.time() - t:8.1f}", flush=True)


if __name__ == "__main__":
    main()
