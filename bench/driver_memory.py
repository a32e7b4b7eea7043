"""Driver memory per live step: 64 concurrent replicas of the 1-D double well.

The driver keeps, per replica, the scores of every trajectory a member of the ensemble
descends from ("live steps"); everything else is on disk.  This runs the real driver
in-process (python adapter, threads runner, HDF5 store) and samples, at every progress
report, the driver's resident memory above its baseline (after imports and the first
segments) and the number of live steps.  It prints the peak and the bytes per live step.
Target: <= 64 bytes per live step (the scores alone are 8).

    python bench/driver_memory.py [--replicas 64] [--trajectories 50] [--workers 2]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--trajectories", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-iterations", type=int, default=60,
                    help="stop each replica after this many iterations (enough to fill memory)")
    args = ap.parse_args()
    from orchestrator import config
    from orchestrator.runtime.driver import Driver

    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        camp = {
            "seed": 5, "replicas": args.replicas,
            "model": {"adapter": "python", "step": "adapters.examples.doublewell1d:step",
                      "initial_state": [-1.0], "dt": 0.01, "noise_dim": 1,
                      "observables": ["x"], "parameters": {"eps": 0.04}},
            "score": {"function": "adapters.examples.doublewell1d:score", "target": 0.95},
            "tams": {"trajectories": args.trajectories, "kill_per_iteration": 1,
                     "horizon": 10.0, "segment_steps": 1000,
                     "max_iterations": args.max_iterations},
            "runner": {"kind": "threads", "workers": args.workers},
        }
        path = Path(tmp, "mem.yaml")
        path.write_text(yaml.safe_dump(camp))
        gc.collect()
        base = [rss_bytes()]
        t0 = time.monotonic()

        def on_progress(p):
            live = sum(t.n_own for r in p.replicas for t in r.trajs.values())
            if not samples and live:
                base[0] = rss_bytes()  # after Parsl, h5py and the first segments are loaded
            samples.append((time.monotonic() - t0, rss_bytes() - base[0], live))

        Driver(config.load(path), db_path=str(Path(tmp, "mem.h5")), on_progress=on_progress).run()
    peak_live = max(s[2] for s in samples)
    # memory when the live steps peak, and the peak memory overall
    at_peak = max(samples, key=lambda s: s[2])
    peak_rss = max(s[1] for s in samples)
    print(f"{args.replicas} replicas x N = {args.trajectories}, 1000 steps, python adapter, "
          f"{args.workers} workers, {time.monotonic() - t0:.0f} s")
    print(f"peak live steps {peak_live}; driver memory above baseline: {at_peak[1] / 1e6:.1f} MB "
          f"at that moment, {peak_rss / 1e6:.1f} MB at most")
    print(f"bytes per live step: {at_peak[1] / peak_live:.1f} (at the live-step peak), "
          f"{peak_rss / peak_live:.1f} (peak memory / peak live steps); target <= 64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
