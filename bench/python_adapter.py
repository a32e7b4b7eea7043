"""The python adapter alone: ``PythonModel.run_segment`` on the 2-D double well, one thread.

No driver, no Parsl, no database: a chain of segments (each starts from the previous one's
last checkpoint, in a fresh directory, with precomputed noise, as the driver sends them) of
``--steps`` steps, with every other segment a "branch" from a middle checkpoint of the
segment before, as children are.  Prints, as medians over ``--repeat`` rounds, the CPU
(``time.thread_time``) and wall time per segment and per step of ``run_segment`` and of
``collect`` (called by the worker before each first attempt), next to the step function
alone in a tight loop, and the adapter's overhead per step (run_segment minus step function).

    python bench/python_adapter.py [--steps 213] [--segments 400] [--repeat 5]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def step_alone_us(n: int = 200_000) -> float:
    from adapters.examples.doublewell2d import step
    noise = np.random.default_rng(0).standard_normal((n, 2))
    state = (-1.0, 0.0)
    t0 = time.thread_time()
    for i in range(n):
        state = step(state, i * 0.01, 0.01, noise[i], eps=0.1)
    return (time.thread_time() - t0) / n * 1e6


def one_round(model, tmp: Path, steps: int, segments: int, rnd: int):
    from orchestrator.model import SegmentRequest
    rng = np.random.default_rng(rnd)
    noises = [rng.standard_normal((steps, 2)) for _ in range(segments)]
    start = model.initial_state(str(tmp / f"r{rnd}" / "initial"))
    step0 = 0
    cpu_run = cpu_collect = wall_run = 0.0
    for j in range(segments):
        req = SegmentRequest(workdir=str(tmp / f"r{rnd}" / f"t{j // 4:07d}" / f"s{step0:08d}"),
                             start=start, step0=step0, n_steps=steps, dt=0.01, checkpoint_every=1,
                             noise=noises[j], parameters={"eps": 0.1})
        c0 = time.thread_time()
        assert model.collect(req) is None
        c1, w1 = time.thread_time(), time.perf_counter()
        res = model.run_segment(req)
        cpu_collect += c1 - c0
        cpu_run += time.thread_time() - c1
        wall_run += time.perf_counter() - w1
        # the next segment: continue from the last checkpoint, or branch from a middle one
        i = res.checkpoints.steps.size - 1 if j % 2 == 0 else res.checkpoints.steps.size // 2
        start = res.checkpoints.ref(i)
        step0 = int(res.checkpoints.steps[i])
    n = segments * steps
    return cpu_run / n * 1e6, wall_run / n * 1e6, cpu_collect / segments * 1e6


def adapter_at(rev: str):
    """The python adapter module as it is at git revision ``rev``."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:adapters/python.py"],
                         check=True, capture_output=True, text=True).stdout
    name = f"_python_adapter_{rev.replace('/', '_').replace('~', '_')}"
    path = Path(tempfile.mkdtemp(), name + ".py")
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=213, help="steps per segment (213: the "
                    "campaign's mean)")
    ap.add_argument("--segments", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--against", metavar="REV", help="also time adapters/python.py of this git "
                    "revision, alternating rounds")
    args = ap.parse_args()
    import adapters.python as current
    versions = {"this tree": current}
    if args.against:
        versions[args.against] = adapter_at(args.against)
    cfg = {"adapter": "python", "step": "adapters.examples.doublewell2d:step",
           "initial_state": [-1.0, 0.0], "dt": 0.01, "noise_dim": 2, "observables": ["x", "y"],
           "parameters": {"eps": 0.1}}
    runs = {v: [] for v in versions}
    walls = {v: [] for v in versions}
    collects = {v: [] for v in versions}
    alone = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.repeat):
            for name, mod in versions.items():
                # a fresh adapter per round: cold caches
                model = mod.PythonModel(mod.PythonModelConfig.model_validate(cfg), str(REPO))
                c, w, k = one_round(model, Path(tmp, f"{len(runs[name])}-{id(mod)}"), args.steps,
                                    args.segments, rnd)
                runs[name].append(c)
                walls[name].append(w)
                collects[name].append(k)
            alone.append(step_alone_us(50_000))
    alone_m = statistics.median(alone)
    print(f"python adapter, 2-D double well, {args.steps} steps per segment, {args.segments} "
          f"segments x {args.repeat} rounds (medians; CPU = thread time)")
    print(f"  step function alone  {alone_m:6.2f} µs/step (tight loop)")
    for name in versions:
        run = statistics.median(runs[name])
        print(f"  [{name}]")
        print(f"    run_segment        {run:6.2f} µs/step CPU  ({run * args.steps:6.0f} µs/segment; "
              f"wall {statistics.median(walls[name]):.2f} µs/step)  rounds: "
              + " ".join(f"{x:.2f}" for x in runs[name]))
        print(f"    adapter overhead   {run - alone_m:6.2f} µs/step CPU  "
              f"({(run - alone_m) * args.steps:6.0f} µs/segment)")
        print(f"    collect (miss)     {statistics.median(collects[name]):6.1f} µs/segment CPU")
    if args.against:
        a, b = (statistics.median(runs[v]) for v in versions)
        print(f"  run_segment: this tree / {args.against} = {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
