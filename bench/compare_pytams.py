"""pyTAMS 1.0.0 against this orchestrator on the same problem (issue #6).

The 2-D double well of REFERENCES.md (eps 0.1, dt 0.01, T 10, start (-1, 0), target 0.95),
N = 50, 2 workers: pyTAMS then kills 2 per iteration (its kill count is its worker count);
ours runs `configs/doublewell2d.yaml` (k = 2, 2 thread workers, python adapter) one replica per
process.  Replicas are interleaved (one pyTAMS, one ours, ...), each in a fresh process, so that
machine load hits both alike.  Per tool it prints the mean estimate, its standard error, the
bias against the reference (7.56e-3 for our 1000 steps; pyTAMS steps 1001 times: 7.67e-3), the
relative std of one run, wall seconds per replica (of the run call, interpreter start excluded),
microseconds per model step, peak RSS (driver; worker processes), and disk bytes per stored
step; then the ratios.

pyTAMS runs in its own venv: ``--pytams-venv`` (default: a cache directory, created with
``python3 -m venv`` and ``pip install pytams==1.0.0`` on first use).

    python bench/compare_pytams.py [--replicas 10] [--quick] [--pytams-venv DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REF_OURS = 7.56e-3  # 1000 steps, ± 0.06e-3
REF_PYTAMS = 7.67e-3  # 1001 steps, ± 0.06e-3
PYTAMS = "pytams==1.0.0"


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tams-bench" / "venv-pytams-1.0.0"


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; assert m.version('pytams') == '1.0.0'"],
        capture_output=True).returncode == 0
    if not ok:
        print(f"creating {venv} with {PYTAMS} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PYTAMS], check=True)
    return py


# --- one replica of ours, in a child process ----------------------------------------------
def child_ours(workdir: str, seed: int) -> int:
    import yaml

    from orchestrator import config
    from orchestrator.runtime.driver import Driver
    from orchestrator.store import Database
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / "configs/doublewell2d.yaml").read_text())
    data.update(replicas=1, seed=seed)
    data["runner"] = {"kind": "threads", "workers": 2}
    path = work / "camp.yaml"
    path.write_text(yaml.safe_dump(data))
    db_path = work / "camp.h5"
    sys.path.insert(0, str(REPO))
    # imports happen before the clock starts, as in pyTAMS's child (which imports pytams
    # first): Parsl is imported lazily by the driver, ~1 s here, a third of a replica
    import h5py  # noqa: F401
    import parsl  # noqa: F401
    t0 = time.perf_counter()
    Driver(config.load(path), db_path=str(db_path)).run()
    wall = time.perf_counter() - t0
    with Database(db_path) as db:
        v = db.replica(0)
        stored = int(db.table(0, "steps")["step"].size)
        out = {"estimate": v.estimate, "steps": v.model_steps, "wall": wall,
               "iterations": v.iterations,
               "peak_driver_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               "peak_worker_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
               # the database plus the checkpoint files (pyTAMS's XML holds its states too)
               "disk_bytes": db_path.stat().st_size + db.state_bytes(), "stored_snapshots": stored,
               "state_bytes": db.state_bytes()}
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_child(cmd: list[str], cwd: str) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        raise SystemExit(f"{cmd[:3]} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    out = json.loads(line[-1][7:])
    out["process_wall"] = time.perf_counter() - t0
    return out


def summary(rows: list[dict], ref: float, disk: list[dict] | None = None) -> dict:
    import numpy as np
    disk = disk or rows
    est = np.array([r["estimate"] for r in rows])
    n = est.size
    mean = float(est.mean())
    std = float(est.std(ddof=1)) if n > 1 else math.nan
    se = std / math.sqrt(n) if n > 1 else math.nan
    steps = sum(r["steps"] for r in rows)
    wall = sum(r["wall"] for r in rows)
    return {"n": n, "mean": mean, "se": se, "bias": mean - ref, "bias_se": (mean - ref) / se,
            "rel_std": std / mean, "wall": wall / n, "us_step": wall / steps * 1e6,
            "steps": steps / n,
            "peak_driver_mb": max(r["peak_driver_kb"] for r in rows) / 1024,
            "peak_worker_mb": max(r["peak_worker_kb"] for r in rows) / 1024,
            "disk_per_stored": sum(r["disk_bytes"] for r in disk) / sum(r["stored_snapshots"] for r in disk),
            "disk_per_step": sum(r["disk_bytes"] for r in disk) / sum(r["steps"] for r in disk)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=10, help="replicas per tool (default 10)")
    ap.add_argument("--quick", action="store_true", help="2 replicas per tool (a smoke run; "
                    "the statistics then mean nothing)")
    ap.add_argument("--pytams-venv", type=Path, default=default_venv())
    ap.add_argument("--seed", type=int, default=7000, help="first seed of our replicas")
    ap.add_argument("--child-ours", nargs=2, metavar=("WORKDIR", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_ours:
        return child_ours(args.child_ours[0], int(args.child_ours[1]))
    reps = 2 if args.quick else args.replicas
    py = ensure_venv(args.pytams_venv)
    rows: dict[str, list[dict]] = {"pyTAMS": [], "ours": []}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tams-vs-pytams-") as tmp:
        for i in range(reps):
            for tool in ("pyTAMS", "ours"):
                work = Path(tmp, f"{tool}-{i}")
                if tool == "pyTAMS":
                    cmd = [str(py), str(REPO / "bench/pytams_doublewell2d.py"), str(work),
                           "--n", "50", "--workers", "2"]
                else:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-ours",
                           str(work), str(args.seed + i)]
                r = run_child(cmd, tmp)
                rows[tool].append(r)
                print(f"  replica {i + 1:2d}/{reps} {tool:<6} p = {r['estimate']:.4e}  "
                      f"steps {r['steps']:6d}  wall {r['wall']:6.1f} s  "
                      f"({r['wall'] / r['steps'] * 1e6:6.0f} µs/step)", flush=True)
                import shutil
                shutil.rmtree(work, ignore_errors=True)
        # pyTAMS's example keeps its database in memory (the replicas above, timed); its disk
        # use is measured in one more replica with the on-disk XML database, not timed.
        work = Path(tmp, "pyTAMS-disk")
        disk_row = run_child([str(py), str(REPO / "bench/pytams_doublewell2d.py"), str(work),
                              "--n", "50", "--workers", "2", "--db"], tmp)
        print(f"  pyTAMS with its on-disk XML database: {disk_row['disk_bytes']} bytes for "
              f"{disk_row['stored_snapshots']} stored steps, wall {disk_row['wall']:.1f} s", flush=True)
    xml_err = rows["pyTAMS"][0].get("xml_state_rel_error", math.nan)
    S = {"pyTAMS": summary(rows["pyTAMS"], REF_PYTAMS, [disk_row]),
         "ours": summary(rows["ours"], REF_OURS)}
    load = os.getloadavg()
    print(f"\n2-D double well, N = 50, 2 workers (pyTAMS kills 2 per iteration; ours k = 2), "
          f"{reps} replicas per tool, interleaved; {time.perf_counter() - t_all:.0f} s in all; "
          f"load average {load[0]:.1f} on {os.cpu_count()} cores (noisy timings)")
    fmt = [("mean estimate", "mean", "{:.3e}"), ("standard error", "se", "{:.2e}"),
           ("bias vs reference", "bias", "{:+.2e}"), ("bias / SE", "bias_se", "{:+.2f}"),
           ("relative std of one run", "rel_std", "{:.2f}"),
           ("model steps per replica", "steps", "{:.0f}"),
           ("wall s per replica", "wall", "{:.1f}"), ("µs per model step", "us_step", "{:.0f}"),
           ("peak RSS driver MB", "peak_driver_mb", "{:.0f}"),
           ("peak RSS one worker MB", "peak_worker_mb", "{:.0f}"),
           ("disk bytes per stored step", "disk_per_stored", "{:.0f}"),
           ("disk bytes per model step", "disk_per_step", "{:.0f}")]
    print(f"| {'figure':<28} | {'pyTAMS 1.0.0':>12} | {'ours':>12} | {'pyTAMS / ours':>13} |")
    print(f"|{'-' * 30}|{'-' * 14}|{'-' * 14}|{'-' * 15}|")
    for label, key, f in fmt:
        a, b = S["pyTAMS"][key], S["ours"][key]
        ratio = a / b if key in ("wall", "us_step", "peak_driver_mb", "disk_per_stored",
                                 "disk_per_step", "se", "rel_std") and b else math.nan
        rs = f"{ratio:.1f}" if math.isfinite(ratio) else ""
        print(f"| {label:<28} | {f.format(a):>12} | {f.format(b):>12} | {rs:>13} |")
    print(f"references: pyTAMS {REF_PYTAMS:.3g} (1001 steps), ours {REF_OURS:.3g} (1000 steps), "
          "both ± 0.06e-3")
    print("pyTAMS issues, as measured here:")
    print(f"  - XML precision: a state written by pyTAMS's XML writer and read back is off by up "
          f"to {xml_err:.1e} (relative) — numpy's 8-digit str(); ours stores float64 bits")
    print("  - no seed: the TOML has no seed; each replica's noise came from OS entropy (its "
          "'deterministic' flag seeds only the survivor choice, with 42*k, the same for every "
          "replica); ours: one seed, bit-identical reruns")
    pk = S["pyTAMS"]
    print(f"  - -k/N bias: pyTAMS's mean is {pk['bias_se']:+.2f} standard errors from its "
          f"reference; a bias of k/N = 4 % ({0.04 * REF_PYTAMS:.1e}) is "
          f"{0.04 * REF_PYTAMS / pk['se']:.2f} SE here: {reps} replicas cannot resolve it "
          "(bench/validate.py does, for ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
