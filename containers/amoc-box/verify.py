#!/usr/bin/env python3
"""Verify the amoc-box model against file protocol v1 and a numpy copy of its recursion.

    make -C containers/amoc-box && python3 containers/amoc-box/verify.py

Exits non-zero on the first failure.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from protocol_v1 import Failure, check, read_trace, verify_model  # noqa: E402

BIN = HERE / "bin" / "amoc-box"
PARAMS = {"mu2": 6.2, "pbar": 1.1, "sigma": 0.1}
DT = 0.01


def y_on(mu2=6.2, pbar=1.1):
    r = np.roots([mu2, -2.0 * mu2, 1.0 + mu2, -pbar])
    return float(np.sort(r[np.abs(r.imag) < 1e-12].real)[0])


def reference(state_in, noise, step0, y0=None):
    """The same expression, in the same operation order, as amoc_box.c."""
    if state_in is not None:
        y = np.frombuffer(state_in, "<f8")[0]
    else:  # the binary's own y_on (bisection) -- checked against numpy's roots below
        y = np.float64(y0 if y0 is not None else model_roots()["y_on"])
    mu2, pbar, dt = np.float64(PARAMS["mu2"]), np.float64(PARAMS["pbar"]), np.float64(DT)
    amp = np.float64(PARAMS["sigma"]) * np.sqrt(dt)
    obs, states = [], []
    for (xi,) in noise:
        y = y + dt * (pbar - y * (1.0 + mu2 * (1.0 - y) * (1.0 - y))) + amp * xi
        obs.append((1.0 - y, y))
        states.append(np.array([y], "<f8").tobytes())
    return np.array(obs), states


def model_roots():
    out = subprocess.run([str(BIN), "--roots"], capture_output=True, text=True, check=True).stdout
    return {k.strip(): float(v) for k, v in (line.split("=") for line in out.splitlines())}


MESSY = """! hand-written request: comments, odd spacing, no trailing commas, double quotes
&SEGMENT
 protocol_version=1   step0 = 0 , n_steps= 7
   dt = 1.0d-2 ,  t0 = 0.0
 state_in = '' ,checkpoint_every = 3 ! inline comment, with 'quotes'
 checkpoint_prefix = "it's_"   checkpoint_digits = 3, checkpoint_suffix = '.dat'
 noise_mode = 'seed' noise_file = '' noise_dim = 1 seed = 7 trace_file = 'my trace.txt'
/
&parameters  sigma = 0.1   Y0 = 0.5 /
"""


def main() -> int:
    print("amoc-box (C):")
    try:
        roots = model_roots()
        ref_on = y_on()
        print(f"  --roots: y_on = {roots['y_on']!r}, y_off = {roots['y_off']!r}"
              f" (numpy.roots: y_on = {ref_on!r})")
        check(abs(roots["y_on"] - ref_on) < 1e-12, "y_on agrees with numpy.roots")
        check(abs(roots["y_on"] - 0.2402) < 1e-4 and abs(roots["y_off"] - 1.0687) < 1e-4,
              "y_on ~ 0.2402 and y_off ~ 1.0687")
        verify_model(BIN, name="amoc-box", noise_dim=1, n_obs=2, state_bytes=8, params=PARAMS,
                     reference=reference, bitwise=True, seed_mode=True)

        # the hand-written namelist parser: messy but valid input
        with tempfile.TemporaryDirectory(prefix="verify-amoc-messy-") as tmp:
            d = Path(tmp)
            (d / "request.nml").write_text(MESSY)
            p = subprocess.run([str(BIN), "request.nml"], cwd=d, capture_output=True, text=True)
            check(p.returncode == 0, f"messy namelist accepted ({p.stderr.strip()})")
            names = sorted(f.name for f in d.iterdir())
            check(names == ["it's_003.dat", "it's_006.dat", "it's_007.dat", "my trace.txt",
                            "request.nml"], f"messy namelist: files {names}")
            steps, _, obs = read_trace(d / "my trace.txt")
            from protocol_v1 import SeedNoise
            ref, _ = reference(None, SeedNoise(7).block(7, 1), 0, y0=0.5)
            check(np.array_equal(obs, ref), "messy namelist: y0 = 0.5, seed 7, 1.0d-2 honoured")
            print("  messy hand-written namelist (comments, no commas, d-exponent, quotes,"
                  " upper case, one-line group) parsed correctly")
    except (Failure, subprocess.CalledProcessError) as e:
        print(f"FAIL: {e}")
        return 1
    print("amoc-box: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
