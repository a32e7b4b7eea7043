#!/usr/bin/env python3
"""Verify the doublewell2d model against file protocol v1 and a numpy copy of its recursion.

    make -C containers/doublewell2d && python3 containers/doublewell2d/verify.py

Exits non-zero on the first failure.
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from protocol_v1 import Failure, verify_model  # noqa: E402

PARAMS = {"eps": 0.1, "x0": -1.0, "y0": 0.0}
DT = 0.01


def reference(state_in, noise, step0):
    """The same expression, in the same operation order, as doublewell2d.f90."""
    x, y = (np.float64(PARAMS["x0"]), np.float64(PARAMS["y0"])) if state_in is None else \
        np.frombuffer(state_in, "<f8")
    dt = np.float64(DT)
    s = np.sqrt(np.float64(PARAMS["eps"]) * dt)
    obs, states = [], []
    for xi1, xi2 in noise:
        xn = x + dt*(x - x*x*x) + s*xi1
        yn = y - 2.0*dt*y + s*xi2
        x, y = xn, yn
        obs.append((x, y))
        states.append(np.array([x, y], "<f8").tobytes())
    return np.array(obs), states


def main() -> int:
    print("doublewell2d (Fortran):")
    try:
        verify_model(HERE / "bin" / "doublewell2d", name="doublewell2d", noise_dim=2, n_obs=2,
                     state_bytes=16, params=PARAMS, reference=reference, bitwise=True,
                     seed_mode=True)
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    print("doublewell2d: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
