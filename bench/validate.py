"""Statistical validation of the TAMS estimator on every reference problem (REFERENCES.md).

    python bench/validate.py [--replicas 1000] [--quick]

For each problem and k in {1, 4} (N = 32), runs R independent TAMS replicas with the vectorised
lockstep harness ``tests/tams_harness.py``, whose every decision (level, killed slots,
survivors, branch step, weight, estimate) comes from ``orchestrator/algorithm.py`` -- the module
the CLI runs.  The 2-D double well uses the harness's vector-state form.

Columns: replicas; mean estimate; its standard error; bias in standard errors, counting the
reference's own 0.2 % accuracy as in tests/test_unbiased.py (for the 2-D well, the reference's
Monte Carlo error 0.06e-3); relative std of one run (std / p) against the ideal AMS value
sqrt(-log p / N); mean number of iterations per replica; wall seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import tams_harness as h  # noqa: E402
from orchestrator.core.algorithm import Outcome  # noqa: E402

N = 32
KS = (1, 4)
# name, model factory, reference p, absolute error of the reference
PROBLEMS = [
    ("1-D double well eps=0.04", lambda: h.double_well(0.04), 2.1618e-3, 0.002 * 2.1618e-3),
    ("1-D double well eps=0.03", lambda: h.double_well(0.03), 2.5144e-4, 0.002 * 2.5144e-4),
    ("Ornstein-Uhlenbeck", h.ornstein_uhlenbeck, 5.4596e-4, 0.002 * 5.4596e-4),
    ("2-D double well eps=0.1", h.double_well_2d, 7.56e-3, 0.06e-3),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=1000, help="replicas per case (1000)")
    ap.add_argument("--quick", action="store_true", help="50 replicas per case (smoke test)")
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args(argv)
    R = 50 if a.quick else a.replicas
    note = "" if R >= 1000 else f" (reduced from the default 1000{' by --quick' if a.quick else ''})"
    print(f"TAMS statistical validation: N = {N}, k in {KS}, {R} replicas per case{note}; "
          f"harness tests/tams_harness.py, decisions from orchestrator/algorithm.py")
    hdr = (f"| {'problem':<24} | k | replicas |      mean |       SE | p ref      | bias/SE |"
           f" rel std | ideal | iterations | wall s |")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    t_all = time.perf_counter()
    worst = 0.0
    notes: list[str] = []
    for i, (name, make, p, p_err) in enumerate(PROBLEMS):
        model = make()
        for k in KS:
            t0 = time.perf_counter()
            res = h.run_tams(model, R, N, k, seed=a.seed + 10 * i + k)
            wall = time.perf_counter() - t0
            odd = {Outcome(o).name.lower(): int(c) for o, c in
                   zip(*np.unique(res.outcomes, return_counts=True)) if o != Outcome.CONVERGED}
            if odd:  # e.g. extinct replicas: their estimate 0 is part of the estimator
                notes.append(f"{name} k={k}: " + ", ".join(f"{c} {o}" for o, c in odd.items()))
            mean, se = res.mean, res.se
            bias = (mean - p) / math.sqrt(se ** 2 + p_err ** 2)
            worst = max(worst, abs(bias))
            rel = float(res.estimates.std(ddof=1)) / p
            ideal = math.sqrt(-math.log(p) / N)
            print(f"| {name:<24} | {k} | {R:8d} | {mean:.3e} | {se:.2e} | {p:.4e} | {bias:+7.2f} |"
                  f" {rel:7.3f} | {ideal:5.3f} | {res.iterations.mean():10.1f} | {wall:6.1f} |",
                  flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s; largest |bias|/SE {worst:.2f} "
          f"({'all within 3' if worst <= 3 else 'SOME BEYOND 3'}); the ideal rel std "
          f"sqrt(-log p / N) is the k = 1 AMS optimum")
    print("replicas not converged (counted with their estimate): "
          + ("; ".join(notes) if notes else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
