"""Cheap executables end to end (issue 15): µs per model step and segments per second.

Runs the C AMOC box model (containers/amoc-box, `noise: seed`, a few ns per step) through the
whole of `tams run` -- the real driver, the threads runner with 2 workers, the executable
adapter with the local launcher, the HDF5 store -- for segments of 500, 5 000 and 50 000
steps, a text or a binary trace, a checkpoint every 1, 25 or 500 steps, in a file per
checkpoint or in one checkpoint file per segment.  Each campaign runs N = 40, k = 4 TAMS with a
horizon of max(segment, 5 000) steps and a few iterations, about a million model steps;
prints wall µs per model step, segments per second, files the model created per model step
and bytes of state on disk per live checkpoint.  Then the orchestration cost per segment
beyond the model's own run at 500-step segments (`run_segment` against a bare launch of the
same binary on the same request, interleaved, medians).

    python bench/cheap_models.py [--quick] [--only-grid | --only-segment]

The issue's scenario is the row "5000 / text / 25 / files" (before the optional parts existed
that was the only way); its target is the row "5000 / binary / 25 / one file".
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

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
AMOC = REPO / "containers" / "amoc-box" / "bin" / "amoc-box"


def campaign(tmp: Path, seg: int, trace: str, every: int, one_file: bool, replicas: int,
             iterations: int) -> Path:
    model = {"adapter": "executable", "executable": str(AMOC), "dt": 0.01, "noise": "seed",
             "noise_dim": 1, "observables": ["q", "y"], "checkpoint_every": every,
             "parameters": {"mu2": 6.2, "pbar": 1.1, "sigma": 0.12}}
    if trace == "binary":
        model |= {"trace_format": "binary", "trace_file": "trace.bin"}
    if one_file:
        model["checkpoint_file"] = "checkpoints.bin"
    horizon = max(seg, 5000)
    data = {"seed": 15, "replicas": replicas, "model": model,
            "score": {"function": "adapters.examples.amoc:score", "target": 1.0},
            "tams": {"trajectories": 40, "kill_per_iteration": 4, "horizon": horizon * 0.01,
                     "segment_steps": seg, "max_iterations": iterations},
            "runner": {"kind": "threads", "workers": 2, "segment_timeout": 600},
            "database": {"keep_states": "live"}}
    path = tmp / "camp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def count_files(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, f))
    return n, size


def run_grid_row(seg: int, trace: str, every: int, one_file: bool, quick: bool) -> dict:
    from orchestrator import config
    from orchestrator.runtime.driver import Driver
    from orchestrator.store import Database
    horizon = max(seg, 5000)
    replicas = max(1, (2 if quick else 5) * 5000 // horizon)
    with tempfile.TemporaryDirectory(prefix="tams-cheap-") as td:
        tmp = Path(td)
        path = campaign(tmp, seg, trace, every, one_file, replicas, 2 if quick else 5)
        db = tmp / "camp.h5"
        t0 = time.perf_counter()
        d = Driver(config.load(path), db_path=str(db))
        reps = d.run()
        wall = time.perf_counter() - t0
        steps = sum(r.model_steps for r in reps)
        segs = sum(r.segments for r in reps)
        with Database(db) as dbr:
            ck_rows = sum(int(dbr.table(r, "checkpoints")["step"].size) for r in range(replicas))
            file_rows = sum(int(dbr.table(r, "files")["path"].size) for r in range(replicas))
        live_files, live_bytes = count_files(d.run_dir)
        live_ck = sum(len(t.ck) for r in reps for t in r.trajs.values())
    # files made per segment besides its checkpoint files: the directory, request.nml,
    # request.json, the trace and done.json (seed mode: no noise file)
    per_seg_files = 5
    return {"seg": seg, "trace": trace, "every": every, "layout": "one file" if one_file else "files",
            "steps": steps, "segments": segs, "wall": wall, "us_step": wall / steps * 1e6,
            "seg_s": segs / wall, "files_per_step": (file_rows + per_seg_files * segs) / steps,
            "bytes_per_live_state": live_bytes / max(1, live_ck), "ck_rows": ck_rows,
            "live_files": live_files}


def grid(quick: bool) -> None:
    rows = []
    combos = []
    for seg in (500, 5000, 50000):
        for trace in ("text", "binary"):
            for every in (1, 25, 500):
                for one in (False, True):
                    if not one and every == 1:
                        continue  # a file per step: ~0.5 M files per row, minutes of creation
                    combos.append((seg, trace, every, one))
    if quick:
        combos = [c for c in combos if c[0] == 5000 and c[2] == 25] + [(500, "binary", 25, True)]
    print(f"{'steps/seg':>9} {'trace':>6} {'ckpt':>5} {'layout':>8} {'model steps':>11} "
          f"{'segs':>5} {'wall s':>7} {'µs/step':>8} {'seg/s':>7} {'files/step':>10} "
          f"{'B/live ckpt':>11}", flush=True)
    for c in combos:
        r = run_grid_row(*c, quick=quick)
        rows.append(r)
        print(f"{r['seg']:>9} {r['trace']:>6} {r['every']:>5} {r['layout']:>8} {r['steps']:>11} "
              f"{r['segments']:>5} {r['wall']:>7.1f} {r['us_step']:>8.2f} {r['seg_s']:>7.1f} "
              f"{r['files_per_step']:>10.4f} {r['bytes_per_live_state']:>11.0f}", flush=True)


def per_segment(reps: int) -> None:
    """Orchestration per segment beyond the model's own run, 500-step segments."""
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    from orchestrator.model import SegmentRequest
    print(f"\norchestration per 500-step segment beyond a bare launch of the same request "
          f"({reps} interleaved repetitions, medians):", flush=True)
    print(f"{'trace':>6} {'ckpt':>5} {'layout':>8} {'bare ms':>8} {'run_segment ms':>14} "
          f"{'paired ms':>9}")
    for trace, every, one in (("text", 25, False), ("binary", 25, True), ("text", 500, False),
                              ("binary", 500, True)):
        kw = {"trace_format": "binary", "trace_file": "trace.bin"} if trace == "binary" else {}
        if one:
            kw["checkpoint_file"] = "checkpoints.bin"
        m = ExecutableModel(ExecutableModelConfig(
            adapter="executable", executable=str(AMOC), dt=0.01, noise="seed", noise_dim=1,
            observables=["q", "y"], checkpoint_every=every,
            parameters={"mu2": 6.2, "pbar": 1.1, "sigma": 0.12}, **kw), str(REPO))
        bare, full = [], []
        with tempfile.TemporaryDirectory(prefix="tams-seg-") as td:
            tmp = Path(td)
            for i in range(reps + 3):
                req = SegmentRequest(workdir=str(tmp / f"b{i}"), start=None, step0=0,
                                     n_steps=500, dt=0.01, checkpoint_every=every, seed=7 + i,
                                     timeout=60)
                argv = m.prepare(req)
                t0 = time.perf_counter()
                subprocess.run(argv, cwd=req.workdir, check=True)
                t1 = time.perf_counter()
                shutil.rmtree(req.workdir)
                req2 = SegmentRequest(workdir=str(tmp / f"a{i}"), start=None, step0=0,
                                      n_steps=500, dt=0.01, checkpoint_every=every, seed=7 + i,
                                      timeout=60)
                t2 = time.perf_counter()
                m.run_segment(req2)
                t3 = time.perf_counter()
                shutil.rmtree(req2.workdir)
                if i >= 3:
                    bare.append(t1 - t0)
                    full.append(t3 - t2)
        paired = statistics.median(a - b for a, b in zip(full, bare)) * 1e3
        print(f"{trace:>6} {every:>5} {'one file' if one else 'files':>8} "
              f"{statistics.median(bare) * 1e3:>8.2f} {statistics.median(full) * 1e3:>14.2f} "
              f"{paired:>9.2f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the issue's rows only, smaller runs")
    ap.add_argument("--only-grid", action="store_true")
    ap.add_argument("--only-segment", action="store_true")
    ap.add_argument("--reps", type=int, default=200, help="repetitions per segment row")
    args = ap.parse_args()
    if not AMOC.exists():
        sys.exit(f"{AMOC} does not exist: run `make -C {REPO / 'containers'}` first")
    if not args.only_segment:
        grid(args.quick)
    if not args.only_grid:
        per_segment(args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
