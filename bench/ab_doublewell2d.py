"""Before/after on the README campaign: bench/doublewell2d.py on this tree and on a git
revision, interleaved (one run of each per round), medians.

The revision is exported with ``git archive`` to a temporary directory and put first on
``PYTHONPATH``, so its ``orchestrator`` and ``adapters`` are imported instead of this tree's;
both run this tree's bench/doublewell2d.py (the same measurement).  On a shared machine the
wall times move with other jobs' load; the CPU times (process time) much less, and because
the rounds alternate, load hits both sides alike.

    python bench/ab_doublewell2d.py [--against main] [--rounds 5] [--replicas 3]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIELDS = {"wall": r"wall per model step\s+([\d.]+)", "cpu": r"CPU per model step\s+([\d.]+)",
          "adapter": r"python adapter\s+([\d.]+)", "rest": r"driver\+Parsl\+HDF5\s+([\d.]+)",
          "step": r"step function\s+([\d.]+)"}


def run(tree: Path | None, replicas: int) -> dict[str, float]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "doublewell2d.py"),
                          "--replicas", str(replicas)], env=env, cwd=tree or REPO,
                         capture_output=True, text=True, check=True).stdout
    return {k: float(m.group(1)) for k, rx in FIELDS.items() if (m := re.search(rx, out))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="main", help="git revision (default main)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.against],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sides = {args.against: Path(tmp), "this tree": None}
        res = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, tree in sides.items():
                res[name].append(run(tree, args.replicas))
                m = res[name][-1]
                print(f"round {r + 1}: {name:10s} wall {m['wall']:6.1f}  CPU {m['cpu']:6.1f} µs/step",
                      file=sys.stderr, flush=True)
    print(f"README campaign (configs/doublewell2d.yaml, {args.replicas} replicas), "
          f"{args.rounds} interleaved rounds, medians, µs per model step")
    print(f"  {'':12s} {'wall':>7s} {'CPU':>7s} {'step fn':>8s} {'adapter':>8s} {'rest':>7s}")
    med = {}
    for name, rows in res.items():
        med[name] = {k: statistics.median(r[k] for r in rows if k in r) for k in FIELDS
                     if any(k in r for r in rows)}
        m = med[name]
        print(f"  {name:12s} {m['wall']:7.1f} {m['cpu']:7.1f} {m.get('step', float('nan')):8.2f} "
              f"{m.get('adapter', float('nan')):8.2f} {m.get('rest', float('nan')):7.2f}")
    a, b = med["this tree"], med[args.against]
    print(f"  this tree / {args.against}: wall {a['wall'] / b['wall']:.2f}, CPU "
          f"{a['cpu'] / b['cpu']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
