"""Time the 2-D double-well campaign end to end (issue #2's benchmark).

N = 50, k = 2, 2 workers (threads), 10 replicas, python adapter, through the real driver,
Parsl and the HDF5 database.  Prints the mean estimate against the reference, wall seconds
per replica, microseconds per model step (wall and process CPU), and the split of the CPU
per step: the user's step function (timed apart in a tight loop, called as the adapter calls
it), the python adapter around it (thread CPU inside ``PythonModel.run_segment``, threads
runner only), and the rest (driver, Parsl, database).  With ``--repeat`` the campaign runs
that many times and the medians are printed.  CPU time is the figure to compare on a busy
machine: other jobs stretch the wall time, far less the CPU time.

    python bench/doublewell2d.py [--replicas 10] [--kind threads|processes] [--repeat 3]
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
REFERENCE = 7.56e-3  # ± 0.06e-3, 1000 steps (docs/references.md)


def step_cost_us(n: int = 200_000) -> float:
    """CPU µs of one call of the user's step function, called as the adapter calls it."""
    from adapters.examples.doublewell2d import step
    noise = np.random.default_rng(0).standard_normal((n, 2))
    state = (-1.0, 0.0)
    t0 = time.thread_time()
    for i in range(n):
        state = step(state, i * 0.01, 0.01, noise[i], eps=0.1)
    return (time.thread_time() - t0) / n * 1e6


class AdapterClock:
    """Thread CPU seconds spent inside PythonModel.run_segment (threads runner: the workers
    are threads of this process)."""

    def __init__(self):
        from adapters.python import PythonModel
        self.cpu = 0.0
        self.lock = threading.Lock()
        inner = PythonModel.run_segment

        @functools.wraps(inner)
        def timed(model, request):
            c0 = time.thread_time()
            try:
                return inner(model, request)
            finally:
                c = time.thread_time() - c0
                with self.lock:
                    self.cpu += c
        PythonModel.run_segment = timed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--kind", default="threads")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--repeat", type=int, default=1, help="runs of the campaign (medians)")
    args = ap.parse_args()
    from orchestrator import config
    try:  # the layout after the core rebuild, else the one before
        from orchestrator.runtime.driver import Driver
    except ImportError:
        from orchestrator.run.driver import Driver
    from orchestrator.core.stats import summarize
    from orchestrator.store import Database

    clock = AdapterClock() if args.kind == "threads" else None
    data = yaml.safe_load((REPO / "configs/doublewell2d.yaml").read_text())
    data["replicas"] = args.replicas
    data["seed"] = args.seed
    data["runner"] = {"kind": args.kind, "workers": 2}
    walls, cpus, adapters, steps_ = [], [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "bench.yaml")
            path.write_text(yaml.safe_dump(data))
            loaded = config.load(path)
            if clock:
                clock.cpu = 0.0
            c0, t0 = time.process_time(), time.perf_counter()
            Driver(loaded, db_path=str(Path(tmp, "bench.h5"))).run()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            with Database(Path(tmp, "bench.h5")) as db:
                reps = db.replicas()
                steps = sum(v.model_steps for v in reps)
                s = summarize([v.estimate for v in reps])
                db_bytes = Path(tmp, "bench.h5").stat().st_size
        walls.append(wall / steps * 1e6)
        cpus.append(cpu / steps * 1e6)
        adapters.append(clock.cpu / steps * 1e6 if clock else math.nan)
        steps_.append(steps)
    step_us = statistics.median(step_cost_us() for _ in range(3))
    per_step, cpu_step = statistics.median(walls), statistics.median(cpus)
    adapter = statistics.median(adapters) - step_us
    print(f"2-D double well, N=50, k=2, 2 workers ({args.kind}), {args.replicas} replicas, seed "
          f"{args.seed}, {args.repeat} run(s)")
    print(f"  mean estimate        {s.mean:.4g} ± {s.stderr:.2g}  (reference {REFERENCE:.3g}; "
          f"{(s.mean - REFERENCE) / s.stderr:+.1f} standard errors)")
    print(f"  model steps          {steps}  ({steps / args.replicas:.0f} per replica)")
    print(f"  wall per model step  {per_step:.1f} µs   (target <= 8)   runs: "
          + " ".join(f"{x:.1f}" for x in walls))
    print(f"  CPU per model step   {cpu_step:.1f} µs   (process time)   runs: "
          + " ".join(f"{x:.1f}" for x in cpus))
    print(f"    step function      {step_us:.2f} µs   (tight loop)")
    if clock:
        print(f"    python adapter     {adapter:.2f} µs   (run_segment minus the step function)")
        print(f"    driver+Parsl+HDF5  {cpu_step - adapter - step_us:.2f} µs   (the rest)")
    print(f"  share outside step   {1 - step_us / per_step:.0%} of wall time")
    print(f"  database             {db_bytes / steps:.0f} bytes per model step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
