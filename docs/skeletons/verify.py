#!/usr/bin/env python3
"""Build the two skeletons of docs/protocol.md and check them against protocol v1.

    python3 docs/skeletons/verify.py

Runs `make` here, then the file-mode protocol checks of containers/protocol_v1.py (trace,
checkpoints, exact restart, numpy reference, failures) on both binaries.  Exits non-zero on
the first failure.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "containers"))
from protocol_v1 import Failure, verify_model  # noqa: E402

PARAMS = {"sigma": 0.5, "x0": 0.0}


def reference(state_in, noise, step0):
    x = np.float64(PARAMS["x0"]) if state_in is None else np.frombuffer(state_in, "<f8")[0]
    dt, sigma = np.float64(0.01), np.float64(PARAMS["sigma"])
    obs, states = [], []
    for (xi,) in noise:
        x = x - dt*x + sigma*np.sqrt(dt)*xi
        obs.append((x,))
        states.append(np.array([x], "<f8").tobytes())
    return np.array(obs), states


def doc_in_sync() -> None:
    """docs/protocol.md shows the skeletons in full; the copies must equal these files."""
    doc = (HERE.parent / "protocol.md").read_text()
    for f in ("skeleton.f90", "skeleton.c"):
        if (HERE / f).read_text().rstrip() + "\n```" not in doc:
            raise Failure(f"docs/protocol.md does not show the current {f}; paste it in again")
    print("docs/protocol.md shows both skeletons verbatim")


def main() -> int:
    try:
        doc_in_sync()
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    subprocess.run(["make", "-C", str(HERE)], check=True)
    for b in ("skeleton-f", "skeleton-c"):
        print(f"{b}:")
        try:
            verify_model(HERE / "bin" / b, name=b, noise_dim=1, n_obs=1, state_bytes=8,
                         params=PARAMS, reference=reference, bitwise=True, seed_mode=False)
        except Failure as e:
            print(f"FAIL: {e}")
            return 1
    print("skeletons: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
