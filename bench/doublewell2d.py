"""Time the 2-D double-well campaign end to end (issue #2's benchmark).

N = 50, k = 2, 2 workers (threads), 10 replicas, python adapter, through the real driver,
Parsl and the HDF5 database.  Prints the mean estimate against the reference, wall seconds
per replica, microseconds per model step, and the share of wall time spent outside the
model's step function (the step function's own cost is timed separately in a tight loop).

    python bench/doublewell2d.py [--replicas 10] [--kind threads|processes]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
REFERENCE = 7.56e-3  # ± 0.06e-3, 1000 steps (docs/references.md)


def step_cost_us(n: int = 200_000) -> float:
    from adapters.examples.doublewell2d import step
    noise = np.random.default_rng(0).standard_normal((n, 2))
    state = (-1.0, 0.0)
    t0 = time.perf_counter()
    for i in range(n):
        state = step(state, i * 0.01, 0.01, noise[i], eps=0.1)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--kind", default="threads")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    from orchestrator import config
    from orchestrator.runtime.driver import Driver
    from orchestrator.store import Database
    from orchestrator.core.stats import summarize

    data = yaml.safe_load((REPO / "configs/doublewell2d.yaml").read_text())
    data["replicas"] = args.replicas
    data["seed"] = args.seed
    data["runner"] = {"kind": args.kind, "workers": 2}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench.yaml")
        path.write_text(yaml.safe_dump(data))
        loaded = config.load(path)
        t0 = time.perf_counter()
        Driver(loaded, db_path=str(Path(tmp, "bench.h5"))).run()
        wall = time.perf_counter() - t0
        with Database(Path(tmp, "bench.h5")) as db:
            reps = db.replicas()
            steps = sum(v.model_steps for v in reps)
            s = summarize([v.estimate for v in reps])
            db_bytes = Path(tmp, "bench.h5").stat().st_size
    step_us = step_cost_us()
    per_step = wall / steps * 1e6
    print(f"2-D double well, N=50, k=2, 2 workers ({args.kind}), {args.replicas} replicas, seed {args.seed}")
    print(f"  mean estimate        {s.mean:.4g} ± {s.stderr:.2g}  (reference {REFERENCE:.3g}; "
          f"{(s.mean - REFERENCE) / s.stderr:+.1f} standard errors)")
    print(f"  wall per replica     {wall / args.replicas:.2f} s   (total {wall:.1f} s)")
    print(f"  model steps          {steps}  ({steps / args.replicas:.0f} per replica)")
    print(f"  wall per model step  {per_step:.1f} µs   (target <= 25; pyTAMS 1.0.0 ≈ 172)")
    print(f"  step function alone  {step_us:.2f} µs per step")
    print(f"  share outside step   {1 - step_us / per_step:.0%} of wall time")
    print(f"  database             {db_bytes / steps:.0f} bytes per model step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
