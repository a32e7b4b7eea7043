"""Per-segment overhead of the executable adapter (docs/performance.md).

Times ``ExecutableModel.run_segment`` end to end (fresh segment directory, request.nml/json
and noise file written, launch through the local launcher in its own session, trace and
checkpoint validation, ingestion, done.json) against a bare ``subprocess.run`` of the same
binary on one prepared segment directory (emptied of the previous run's outputs, untimed), for short and long segments of the Fortran 2-D
double well (containers/doublewell2d, `noise: file`).  Prints medians, their ratio and the
orchestration milliseconds beyond the bare launch (difference of the medians, and the median
of the paired per-repetition differences), plus the adapter's own phases measured apart.

    python bench/executable_overhead.py [--reps-short 300] [--reps-long 40]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adapters.executable import ExecutableModel, ExecutableModelConfig  # noqa: E402
from orchestrator.core import noise as nz  # noqa: E402
from orchestrator.model import SegmentRequest  # noqa: E402

EXE = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d"


def model() -> ExecutableModel:
    cfg = ExecutableModelConfig(adapter="executable", executable=str(EXE), dt=0.01, noise="file",
                                noise_dim=2, observables=["x", "y"], checkpoint_every=100,
                                parameters={"eps": 0.1, "x0": -1.0, "y0": 0.0})
    return ExecutableModel(cfg, str(REPO))


def request(workdir: str, n: int) -> SegmentRequest:
    return SegmentRequest(workdir=workdir, start=None, step0=0, n_steps=n, dt=0.01,
                          checkpoint_every=100, noise=nz.step_noise((3, 4), 1, n, 2),
                          parameters={"eps": 0.1, "x0": -1.0, "y0": 0.0}, timeout=60)


def ms(xs) -> float:
    return statistics.median(xs) * 1e3


def bench(m: ExecutableModel, tmp: Path, n: int, reps: int) -> dict:
    req = request(str(tmp / f"bare-{n}"), n)
    argv = m.prepare(req)  # one prepared directory for the bare launches
    bare, adapter, prep, ingest = [], [], [], []
    keep = {"request.nml", "request.json", m.config.noise_file}
    for i in range(reps + 3):  # interleaved, so that load changes hit both alike
        for f in Path(req.workdir).iterdir():  # outputs of the last bare run: the model
            if f.name not in keep:             # writes new files, as in a fresh directory
                f.unlink()
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=req.workdir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        t1 = time.perf_counter()
        r = request(str(tmp / f"seg-{n}-{i}"), n)
        t2 = time.perf_counter()
        m.run_segment(r)
        t3 = time.perf_counter()
        shutil.rmtree(r.workdir)
        r2 = request(str(tmp / f"phase-{n}"), n)  # the adapter's own phases, separately
        t4 = time.perf_counter()
        argv2 = m.prepare(r2)
        t5 = time.perf_counter()
        subprocess.run(argv2, cwd=r2.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t6 = time.perf_counter()
        m.ingest(r2)
        t7 = time.perf_counter()
        if i >= 3:  # warm-up
            bare.append(t1 - t0)
            adapter.append(t3 - t2)
            prep.append(t5 - t4)
            ingest.append(t7 - t6)
    paired = [a - b for a, b in zip(adapter, bare)]  # robust to slow drifts of the load
    return {"n": n, "reps": reps, "bare": ms(bare), "adapter": ms(adapter), "paired": ms(paired),
            "prepare": ms(prep), "ingest": ms(ingest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps-short", type=int, default=300)
    ap.add_argument("--reps-long", type=int, default=40)
    args = ap.parse_args()
    if not EXE.exists():
        sys.exit(f"{EXE} does not exist: run `make -C {REPO / 'containers'}` first")
    m = model()
    with tempfile.TemporaryDirectory(prefix="tams-bench-") as tmp:
        rows = [bench(m, Path(tmp), 10, args.reps_short),
                bench(m, Path(tmp), 10_000, args.reps_long)]
    print(f"{'steps':>7} {'reps':>5} {'bare run ms':>12} {'adapter ms':>11} {'ratio':>6} "
          f"{'overhead ms':>12} {'paired ms':>10} {'prepare ms':>11} {'ingest ms':>10}")
    for r in rows:
        print(f"{r['n']:>7} {r['reps']:>5} {r['bare']:>12.2f} {r['adapter']:>11.2f} "
              f"{r['adapter'] / r['bare']:>6.2f} {r['adapter'] - r['bare']:>12.2f} {r['paired']:>10.2f} "
              f"{r['prepare']:>11.2f} {r['ingest']:>10.2f}")


if __name__ == "__main__":
    main()
