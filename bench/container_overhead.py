"""Container start overhead per segment: `launcher: docker` against `launcher: local`.

Runs single segments of the Fortran 2-D double well through the executable adapter (the same
code path as a campaign: prepare, launch, validate), sequentially, with both launchers:

- short segments (--short steps) give the fixed cost per segment of each launcher; their
  difference is the container overhead (create + start + wait + logs + remove);
- long segments (--long steps, local launcher) give the model's cost per step;
- the segment length above which the overhead costs under 5 % of a segment's wall time
  (under docker) is  L = (overhead / 0.05 - overhead - local fixed cost) / cost per step.

    python bench/container_overhead.py [--repeat 20] [--short 10] [--long 200000]

Needs a Docker engine and the image tams/doublewell2d:1 (bash tests/services/docker.sh;
make -C containers images).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def model(launcher: str):
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    m = {"adapter": "executable", "launcher": launcher, "dt": 0.01, "noise": "file",
         "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 1000,
         "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}
    if launcher == "docker":
        m |= {"executable": "/usr/local/bin/doublewell2d",
              "docker": {"image": "tams/doublewell2d:1", "labels": {"tams.bench": "overhead"}}}
    else:
        m |= {"executable": str(REPO / "containers/doublewell2d/bin/doublewell2d")}
    mod = ExecutableModel(ExecutableModelConfig.model_validate(m), str(REPO))
    problems = mod.check()
    if problems:
        raise SystemExit(problems[0])
    return mod


def time_segments(mod, n_steps: int, repeat: int, tmp: str) -> list[float]:
    from orchestrator.model import SegmentRequest
    noise = np.random.default_rng(0).standard_normal((n_steps, 2))
    out = []
    for i in range(repeat):
        req = SegmentRequest(workdir=f"{tmp}/{id(mod)}-{n_steps}-{i}", start=None, step0=0,
                             n_steps=n_steps, dt=0.01, checkpoint_every=1000, noise=noise,
                             parameters={}, timeout=600)
        t0 = time.perf_counter()
        mod.run_segment(req)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--short", type=int, default=10)
    ap.add_argument("--long", type=int, default=200_000)
    a = ap.parse_args()
    local, docker = model("local"), model("docker")
    with tempfile.TemporaryDirectory(prefix="tams-bench-") as tmp:
        time_segments(docker, a.short, 2, tmp)  # warm up: client, image lookup
        time_segments(local, a.short, 2, tmp)
        loc = time_segments(local, a.short, a.repeat, tmp)
        dck = time_segments(docker, a.short, a.repeat, tmp)
        long_loc = time_segments(local, a.long, 3, tmp)
        long_dck = time_segments(docker, a.long, 3, tmp)
    med = statistics.median
    fixed_local, fixed_docker = med(loc), med(dck)
    overhead = fixed_docker - fixed_local
    per_step = (med(long_loc) - fixed_local) / (a.long - a.short)
    threshold = (overhead / 0.05 - overhead - fixed_local) / per_step
    print(f"segments of {a.short} steps, median of {a.repeat}, sequential:")
    print(f"  local launcher : {fixed_local * 1e3:8.1f} ms per segment "
          f"(min {min(loc) * 1e3:.1f}, max {max(loc) * 1e3:.1f})")
    print(f"  docker launcher: {fixed_docker * 1e3:8.1f} ms per segment "
          f"(min {min(dck) * 1e3:.1f}, max {max(dck) * 1e3:.1f})")
    print(f"  container overhead: {overhead * 1e3:.1f} ms per segment")
    print(f"segments of {a.long} steps (median of 3): local {med(long_loc):.3f} s, docker "
          f"{med(long_dck):.3f} s -> model cost {per_step * 1e6:.3f} µs per step")
    print(f"overhead < 5 % of a docker segment's wall time above {threshold:,.0f} steps "
          f"({threshold * per_step + fixed_local + overhead:.2f} s of wall time per segment)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
