"""Digest of every example campaign in configs/: the numbers a refactoring must not move.

Runs each campaign of ``configs/`` to the end in a temporary directory and prints one line per
campaign: a SHA-256 over its estimates, levels, weights, scores, observables and checkpoint
steps (no timings, no provenance, canonical row order), and the estimate.  A checkpoint's
``index`` (where a state lies inside its file) is left out: it is the adapter's private
address, which changed when the python adapter moved from a file per segment to a record
file per trajectory, while every number of the run stayed.  Run it before and
after a change of the core; the lines must be identical.

Campaigns whose runner or launcher needs a service (Slurm, Docker, Apptainer) run here with
``runner.kind: threads`` and the ``local`` launcher on the same binary: the test suite proves
those runners and launchers bitwise identical to these, and the results do not depend on them.

    python bench/digests.py [--only NAME ...]
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
# in-image executable -> the same program on the host
HOST_BINARY = {"/usr/local/bin/doublewell2d": "../containers/doublewell2d/bin/doublewell2d",
               "amoc-box": "../containers/amoc-box/bin/amoc-box"}


def digest(db_path: Path) -> tuple[str, list[float]]:
    """SHA-256 of everything in a database that must be bit-for-bit reproducible."""
    from orchestrator.store import Database
    h = hashlib.sha256()
    with Database(db_path) as db:
        estimates = []
        for r in range(db.n_replicas):
            v = db.replica(r)
            estimates.append(v.estimate)
            h.update(np.array([v.outcome, v.iterations, v.log_weight, v.n_reached, v.estimate,
                               v.log_estimate, v.level], dtype=np.float64).tobytes())
            for table, cols, key in (
                    ("iterations", ("iteration", "level", "n_killed", "log_weight", "weight"),
                     ("iteration",)),
                    ("created", ("iteration", "slot", "id", "killed", "parent", "branch_step",
                                 "start_step"), ("id",)),
                    ("trajectories", ("id", "end_step", "status", "max_score"), ("id",)),
                    ("steps", ("traj", "step", "time", "score", "obs"), ("step", "traj")),
                    ("checkpoints", ("traj", "step"), ("step", "traj"))):
                t = db.table(r, table)
                order = (np.lexsort(tuple(t[k] for k in key)) if t[key[0]].size
                         else np.zeros(0, int))
                for c in cols:
                    h.update(f"{r}/{table}/{c}".encode())
                    h.update(np.ascontiguousarray(t[c][order]).tobytes())
    return h.hexdigest(), estimates


def localised(path: Path) -> dict:
    """The campaign with threads and the local launcher (results do not depend on either)."""
    data = yaml.safe_load(path.read_text())
    model = data["model"]
    if model.get("launcher") in ("docker", "apptainer"):
        model.pop(model.pop("launcher"), None)
        model["executable"] = HOST_BINARY.get(model["executable"], model["executable"])
    runner = data.setdefault("runner", {})
    runner["kind"] = "threads"
    runner.pop("slurm", None)
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="campaign stems to run (default: all)")
    args = ap.parse_args()
    paths = sorted(CONFIGS.glob("*.yaml"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    for path in paths:
        data = localised(path)
        tmp_yaml = CONFIGS / f".digest-{path.stem}.yaml"
        tmp_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / f"{path.stem}.h5"
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-q",
                                    str(tmp_yaml), "--db", str(db)], cwd=tmp,
                                   capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    print(f"{path.stem:28s} FAILED (exit {p.returncode}): "
                          f"{p.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                h, est = digest(db)
                print(f"{path.stem:28s} {h}  mean p {np.mean(est):.6g}  ({wall:.0f} s)",
                      flush=True)
        finally:
            tmp_yaml.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
