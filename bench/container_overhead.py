"""Orchestration cost per segment of each launcher, beyond the model's own run.

Runs single segments of the Fortran 2-D double well through the executable adapter (the same
code path as a campaign: prepare the request, launch, validate the trace and checkpoints),
sequentially, interleaved round-robin over five modes so that the machine's load hits all
alike:

    local              a subprocess in its own process group
    docker             a fresh container per segment (create, start, wait, logs, remove)
    docker persistent  one long-lived container, each segment through tams-runner
    apptainer exec     `apptainer exec` per segment on the SIF
    apptainer instance one long-lived instance, each segment through tams-runner

"The model's own run" is the same binary on the same request started directly
(``subprocess.run``), without the adapter: the cost per segment of a mode is its median wall
time minus that.  The model's cost per step comes from --long steps run directly; a mode
costs under 5 % of a segment's wall time above  L = (19 * cost - model fixed) / per step.

    python bench/container_overhead.py [--repeat 20] [--short 10] [--long 200000]

Needs a Docker engine, Apptainer and the images (bash tests/services/docker.sh; make -C
containers images).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "containers/doublewell2d/bin/doublewell2d"
SIF = REPO / "containers/doublewell2d/bin/doublewell2d.sif"
MODES = ("local", "docker", "docker persistent", "apptainer exec", "apptainer instance")


def model(mode: str):
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    m = {"adapter": "executable", "dt": 0.01, "noise": "file",
         "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 1000,
         "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}
    persistent = mode.endswith(("persistent", "instance"))
    if mode.startswith("docker"):
        m |= {"launcher": "docker", "executable": "/usr/local/bin/doublewell2d",
              "docker": {"image": "tams/doublewell2d:1", "labels": {"tams.bench": "overhead"},
                         "persistent": persistent}}
    elif mode.startswith("apptainer"):
        m |= {"launcher": "apptainer", "executable": "doublewell2d",
              "apptainer": {"image": str(SIF), "persistent": persistent}}
    else:
        m |= {"launcher": "local", "executable": str(BIN)}
    mod = ExecutableModel(ExecutableModelConfig.model_validate(m), str(REPO))
    problems = mod.check()
    if problems:
        raise SystemExit(f"{mode}: {problems[0]}")
    return mod


def request(tmp: str, tag: str, i: int, n_steps: int):
    from orchestrator.model import SegmentRequest
    noise = np.random.default_rng(i).standard_normal((n_steps, 2))
    # the campaign layout (RUN/rNNNN/tNNNNNNN/sNNNNNNNN): a persistent container binds RUN once
    wd = f"{tmp}/{tag.replace(' ', '-')}/r0000/t{i:07d}/s{n_steps:08d}"
    return SegmentRequest(workdir=wd, start=None, step0=0, n_steps=n_steps, dt=0.01,
                          checkpoint_every=1000, noise=noise, parameters={}, timeout=600)


def timed_segment(mod, req) -> float:
    t0 = time.perf_counter()
    mod.run_segment(req)
    return time.perf_counter() - t0


def timed_direct(mod, req) -> float:
    """The model's own run: the binary on the prepared request, no launcher, no validation."""
    argv = mod.prepare(req)
    argv[0] = str(BIN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=req.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--short", type=int, default=10)
    ap.add_argument("--long", type=int, default=200_000)
    a = ap.parse_args()
    mods = {m: model(m) for m in MODES}
    t: dict[str, list[float]] = {m: [] for m in ("direct", *MODES)}
    tmp = tempfile.mkdtemp(prefix="tams-bench-")
    try:
        for m, mod in mods.items():  # warm up: clients, image lookups, runner build, containers
            for i in range(2):  # the same run directory as the timed segments
                timed_segment(mod, request(tmp, m, 10_000 + i, a.short))
        for i in range(a.repeat):
            t["direct"].append(timed_direct(mods["local"], request(tmp, "direct", i, a.short)))
            for m, mod in mods.items():
                t[m].append(timed_segment(mod, request(tmp, m, i, a.short)))
        long_direct = statistics.median(
            timed_direct(mods["local"], request(tmp, "long", i, a.long)) for i in range(3))
    finally:
        for mod in mods.values():
            mod.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    direct = med(t["direct"])
    per_step = (long_direct - direct) / (a.long - a.short)
    load = os.getloadavg()[0]
    print(f"segments of {a.short} steps, median of {a.repeat}, sequential, modes interleaved; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"model's own run (the binary started directly): {direct * 1e3:.1f} ms; "
          f"{per_step * 1e6:.2f} µs per step ({a.long} steps: {long_direct:.2f} s)")
    print("| mode | wall per segment | cost beyond the model's own run | min .. max wall | "
          "under 5 % of a segment above |")
    print("|---|---|---|---|---|")
    for m in MODES:
        w = med(t[m])
        cost = w - direct
        steps = max(0.0, (19 * cost - direct) / per_step)
        print(f"| {m} | {w * 1e3:.1f} ms | **{cost * 1e3:.1f} ms** | {min(t[m]) * 1e3:.1f} .. "
              f"{max(t[m]) * 1e3:.1f} ms | {steps:,.0f} steps ({direct + steps * per_step:.2f} s) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
