"""Early-summer climatology of the heat-wave index for configs/speedy-heatwave.yaml.

Runs ``--members`` free SPEEDY runs of ``--days`` days from the spun-up summer state
(bin/summer_state.bin, 1 June) through the file-protocol wrapper, each with its own daily
vorticity noise (the campaign's noise_amp), takes the 7-day running means of the box
temperature exactly as `score.window: 7` does (orchestrator.core.window.running_means), and
prints the least-squares line clim0 + clim_slope * t through their ensemble mean and the
spread of the anomalies about it -- the numbers the campaign's score parameters come from.

    python3 containers/speedy/climatology.py --members 8 --days 30
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from orchestrator.core.window import running_means  # noqa: E402

REQUEST = """&segment
  protocol_version = 1,
  state_in = '{state}',
  step0 = 0,
  n_steps = {days},
  dt = 1.0,
  t0 = 0.0,
  checkpoint_every = {days},
  checkpoint_prefix = 'ckpt_',
  checkpoint_digits = 4,
  checkpoint_suffix = '.bin',
  noise_mode = 'file',
  noise_file = 'noise.bin',
  noise_dim = 24,
  seed = 0,
  trace_file = 'trace.txt',
/
&parameters
  noise_amp = {amp!r},
/
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--window", type=int, default=7)
    ap.add_argument("--noise-amp", type=float, default=2.0e-7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--state", default=str(HERE / "bin" / "summer_state.bin"))
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    means = []
    t0 = time.perf_counter()
    for m in range(a.members):
        with tempfile.TemporaryDirectory(prefix="speedy-clim-") as d:
            Path(d, "request.nml").write_text(REQUEST.format(state=a.state, days=a.days, amp=a.noise_amp))
            rng.standard_normal((a.days, 24)).astype("<f8").tofile(Path(d, "noise.bin"))
            subprocess.run([str(HERE / "speedy_segment.sh"), "request.nml"], cwd=d, check=True)
            tr = np.loadtxt(Path(d, "trace.txt"), ndmin=2)
        obs = tr[:, 2:3]
        means.append(running_means(obs[:0], obs, a.window, 1)[:, 0])
        print(f"member {m}: 7-day mean box T {means[-1].min():.2f} .. {means[-1].max():.2f} K",
              flush=True)
    wall = time.perf_counter() - t0
    x = np.array(means)
    days = np.arange(1, a.days + 1, dtype=np.float64)
    use = days >= a.window  # full windows only
    slope, icpt = np.polyfit(days[use], x[:, use].mean(axis=0), 1)
    anom = x[:, use] - (icpt + slope * days[use])
    print(f"{a.members} members x {a.days} days in {wall:.0f} s "
          f"({wall / (a.members * a.days):.2f} s per model day)")
    print(f"clim0 = {icpt:.3f}  clim_slope = {slope:.4f}  (K, K/day; fit over days {a.window}..{a.days})")
    print(f"anomaly spread: std {anom.std(ddof=1):.3f} K, max {anom.max():.3f} K")
    return 0


if __name__ == "__main__":
    sys.exit(main())
