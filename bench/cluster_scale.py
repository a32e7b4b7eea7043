"""Keeping hundreds of workers busy: the real driver, Parsl and HDF5 store at 64-256 workers,
with simulated model compute (issue 13, item 1).

Each segment of bench/scale_model.py advances a real Ornstein-Uhlenbeck path from the
orchestrator's noise (so levels, kills and branches are TAMS's own) and then sleeps for its
steps x `--cost` seconds x a log-normal spread (sigma 0.3, keyed by the segment's noise).  A
sleeping segment costs a worker no CPU, so this 2-core machine can run 256 workers and show
what the driver and Parsl do at that scale; the model's own compute is what is simulated.

Three campaigns per worker count: one replica with k = 1, one replica with k = 16, and 16
concurrent replicas with k = 4 (each replica capped at a fixed number of iterations so the
runs are comparable).  Columns:

- `wall`: the driver's wall time (Driver.run, from start to finished database);
- `bound`: max(total segment time / workers, longest chain of dependent segments), from the
  segment durations the database records: the chain of a replica is its initial ensemble's
  longest trajectory (its segments run one after another), then, per iteration, the longest
  child (an iteration is decided only when every member has ended, so that much waiting is
  the algorithm's);
- `ideal`: the same segments and dependencies scheduled first-released-first-served with zero
  overhead (an event simulation); `wall/ideal` is what the driver, Parsl and the store add,
  `ideal/bound` what the release order (no priorities) costs when chains and work compete;
- `util`: total segment time / (wall x workers);
- `drv ms/seg`: CPU time of the driver's thread per segment, in its loop (ingest, record,
  submit through Parsl, commit, progress; start-up and clean-up excluded); `proc ms/seg`: the
  whole driver process's CPU per segment over the same span (with `threads` this includes
  the workers' own model code and Parsl's threads);
- `seg/s`: segments through the driver per second;
- `barrier`: what a barrier scheduler needs on the same segment durations: replicas one after
  another (as pyTAMS runs them), the initial ensemble's trajectories list-scheduled on the
  workers, then every iteration waiting for all its children; `gain` = barrier / wall.

`--runner processes` uses Parsl's HighThroughputExecutor (worker processes, ~60 MB each:
watch memory at 256) and prints its per-task latency (`--latency`: a chain of no-cost
segments, wall per link).

    python bench/cluster_scale.py [--workers 64 128 256] [--runner threads|processes]
                                  [--cost 0.005] [--only k1,k16,r16] [--latency]
"""
from __future__ import annotations

import argparse
import heapq
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import config  # noqa: E402
from orchestrator.runtime.driver import Driver  # noqa: E402
from orchestrator.store import Database  # noqa: E402

# name: (replicas, k, max_iterations, trajectories as a function of the workers)
SCENARIOS = {
    "k1": ("1 replica, k=1", 1, 1, 40, lambda w: w),
    "k16": ("1 replica, k=16", 1, 16, 12, lambda w: w),
    "r16": ("16 replicas, k=4", 16, 4, 10, lambda w: max(16, w // 16)),
}


def campaign(tmp: Path, runner: str, workers: int, replicas: int, n: int, k: int,
             max_iter: int, cost: float, horizon: int = 200, segment: int = 50) -> Path:
    shutil.copy(REPO / "bench" / "scale_model.py", tmp / "scale_model.py")
    data = {
        "seed": 13, "replicas": replicas,
        "model": {"adapter": "python", "segment": "scale_model:segment", "initial_state": [0.0],
                  "dt": 1.0, "noise_dim": 1, "observables": ["x"], "checkpoint_every": segment,
                  "parameters": {"cost": cost}},
        "score": {"function": "scale_model:score", "target": 1.0},
        "tams": {"trajectories": n, "kill_per_iteration": k, "horizon": float(horizon),
                 "segment_steps": segment, "max_iterations": max_iter},
        "runner": {"kind": runner, "workers": workers},
        "database": {"path": str(tmp / "scale.h5"), "commit_interval": 2.0},
    }
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def durations(db_path: Path):
    """Per replica: {trajectory: total segment seconds}, {iteration: [children]}, and every
    segment's seconds."""
    out = []
    with Database(db_path) as db:
        for r in range(db.n_replicas):
            seg = db.table(r, "segments")
            created = db.table(r, "created")
            per_traj: dict[int, float] = {}
            segs: dict[int, list[tuple[int, float]]] = {}
            for t, s0, w in zip(seg["traj"].tolist(), seg["step0"].tolist(),
                                seg["wall_time"].tolist()):
                per_traj[t] = per_traj.get(t, 0.0) + w
                segs.setdefault(t, []).append((s0, w))
            by_iter: dict[int, list[int]] = {}
            for it, tid in zip(created["iteration"].tolist(), created["id"].tolist()):
                by_iter.setdefault(it, []).append(tid)
            chains = {t: [w for _, w in sorted(v)] for t, v in segs.items()}
            out.append((per_traj, by_iter, seg["wall_time"].copy(), chains))
    return out


def list_schedule(jobs: list[float], workers: int) -> float:
    """Makespan of jobs started in order on the first free of `workers`."""
    if not jobs:
        return 0.0
    free = [0.0] * min(workers, len(jobs))
    heapq.heapify(free)
    end = 0.0
    for d in jobs:
        t = heapq.heappop(free) + d
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def dataflow(reps, workers: int) -> float:
    """The time this driver's scheduling needs with zero overhead: the same segments, the
    same dependencies (a trajectory's segments one after another; iteration j's children once
    every trajectory of the iterations before has ended), first released first served on
    `workers` workers.  wall / dataflow is what the driver, Parsl and the store add."""
    import collections
    queue: collections.deque = collections.deque()  # (replica, trajectory, segment index)
    # per replica: its iterations in order, trajectories still running per iteration
    order = [sorted(by_iter) for _, by_iter, _, _ in reps]
    level = [0] * len(reps)  # the iteration whose children are released
    left = [0] * len(reps)  # trajectories released and not yet ended
    for r, (_, by_iter, _, chains) in enumerate(reps):
        for t in by_iter[order[r][0]]:
            if chains.get(t):
                queue.append((r, t, 0))
                left[r] += 1
    running: list[tuple[float, int, int, int]] = []  # (end, replica, trajectory, index)
    now = 0.0
    while queue or running:
        while queue and len(running) < workers:
            r, t, i = queue.popleft()
            heapq.heappush(running, (now + reps[r][3][t][i], r, t, i))
        now, r, t, i = heapq.heappop(running)
        chain = reps[r][3][t]
        if i + 1 < len(chain):
            queue.append((r, t, i + 1))
            continue
        left[r] -= 1
        while left[r] == 0 and level[r] + 1 < len(order[r]):
            level[r] += 1
            for c in reps[r][1][order[r][level[r]]]:
                if reps[r][3].get(c):
                    queue.append((r, c, 0))
                    left[r] += 1
    return now


def bounds(reps, workers: int) -> tuple[float, float, float]:
    """(total segment seconds, longest dependent chain, barrier scheduler's time)."""
    total = sum(float(s.sum()) for _, _, s, _ in reps)
    chain = 0.0
    barrier = 0.0
    for per_traj, by_iter, _, _ in reps:
        iters = sorted(by_iter)
        c = 0.0
        for it in iters:
            c += max(per_traj.get(t, 0.0) for t in by_iter[it])
            barrier += list_schedule([per_traj.get(t, 0.0) for t in by_iter[it]], workers)
        chain = max(chain, c)
    return total, chain, barrier


def run_one(runner: str, workers: int, key: str, cost: float, keep: bool = False) -> dict:
    label, replicas, k, max_iter, n_of = SCENARIOS[key]
    tmp = Path(tempfile.mkdtemp(prefix=f"scale-{key}-{workers}-"))
    try:
        path = campaign(tmp, runner, workers, replicas, n_of(workers), k, max_iter, cost)
        loaded = config.load(path)
        marks: list[tuple[float, float]] = []  # (driver thread CPU, process CPU) per report

        def on_progress(p) -> None:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            mark = (time.thread_time(), ru.ru_utime + ru.ru_stime)
            if len(marks) < 2:
                marks.append(mark)
            else:
                marks[1] = mark

        drv = Driver(loaded, on_progress=on_progress)
        t0 = time.perf_counter()
        drv.run()
        wall = time.perf_counter() - t0
        # the loop only (first to last progress report): start-up (model check, database,
        # Parsl) and clean-up are once per run, not per segment
        cpu = marks[-1][0] - marks[0][0]
        proc = marks[-1][1] - marks[0][1]
        reps = durations(tmp / "scale.h5")
        total, chain, barrier = bounds(reps, workers)
        nseg = sum(s.size for _, _, s, _ in reps)
        bound = max(total / workers, chain)
        ideal = dataflow(reps, workers)
        return dict(ideal=ideal, label=label, workers=workers, wall=wall, bound=bound, chain=chain,
                    fill=total / workers, util=total / (wall * workers), nseg=nseg,
                    drv_ms=1e3 * cpu / nseg, proc_ms=1e3 * proc / nseg, segps=nseg / wall,
                    barrier=barrier, n=n_of(workers), k=k, replicas=replicas)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def latency(runner: str, workers: int, links: int = 200) -> tuple[float, float, int]:
    """A chain of dependent no-cost iterations (N = 32, k = 1, one 20-step segment per child):
    the loop's wall time per iteration after the initial ensemble is the round trip driver ->
    Parsl -> worker -> driver of one segment plus the driver's work on it; and the driver
    thread's CPU per segment over the same span."""
    tmp = Path(tempfile.mkdtemp(prefix="scale-lat-"))
    try:
        path = campaign(tmp, runner, workers, 1, 32, 1, links, 0.0, horizon=20, segment=20)
        marks: list[tuple[float, float, int]] = []

        def on_progress(p) -> None:
            it = p.replicas[0].iteration
            if it >= 1:  # the initial ensemble is done
                mark = (time.perf_counter(), time.thread_time(), it)
                if len(marks) < 2:
                    marks.append(mark)
                else:
                    marks[1] = mark

        Driver(config.load(path), on_progress=on_progress).run()
        (w0, c0, i0), (w1, c1, i1) = marks[0], marks[-1]
        n = max(1, i1 - i0)
        return (w1 - w0) / n, 1e3 * (c1 - c0) / n, n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def throughput(runner: str, workers: int, n: int = 1024) -> float:
    """Independent no-cost segments (an initial ensemble of `n` 20-step trajectories):
    segments per second through driver, Parsl and workers (the pipeline kept full)."""
    tmp = Path(tempfile.mkdtemp(prefix="scale-thr-"))
    try:
        path = campaign(tmp, runner, workers, 1, n, 1, 1, 0.0, horizon=20, segment=20)
        marks: list[float] = []

        def on_progress(p) -> None:
            if not marks:
                marks.append(time.perf_counter())
            elif p.replicas[0].iteration >= 1 and len(marks) == 1:
                marks.append(time.perf_counter())

        Driver(config.load(path), on_progress=on_progress).run()
        return n / (marks[1] - marks[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--runner", default="threads", choices=("threads", "processes"))
    ap.add_argument("--cost", type=float, default=0.005, help="simulated seconds per model step "
                    "(a 50-step segment: 0.25 s on average)")
    ap.add_argument("--only", default="k1,k16,r16", help="scenarios, comma-separated")
    ap.add_argument("--latency", action="store_true", help="also the per-task latency")
    args = ap.parse_args()
    print(f"runner {args.runner}, simulated {args.cost * 1e3:g} ms/step x 50 steps/segment "
          f"(spread sigma 0.3), horizon 200 steps; this machine: {os.cpu_count()} cores")
    hdr = (f"{'campaign':<17} {'workers':>7} {'N':>4} {'segs':>5} {'wall s':>7} {'bound s':>7} "
           f"{'wall/bnd':>8} {'ideal s':>7} {'wall/ideal':>10} {'chain s':>7} {'work/W s':>8} {'util':>5} {'drv ms/seg':>10} "
           f"{'proc ms/seg':>11} {'seg/s':>6} {'barrier s':>9} {'gain':>5}")
    print(hdr)
    rows = []
    for w in args.workers:
        for key in args.only.split(","):
            r = run_one(args.runner, w, key, args.cost)
            rows.append(r)
            print(f"{r['label']:<17} {w:>7} {r['n']:>4} {r['nseg']:>5} {r['wall']:>7.1f} "
                  f"{r['bound']:>7.1f} {r['wall'] / r['bound']:>8.2f} {r['ideal']:>7.1f} "
                  f"{r['wall'] / r['ideal']:>10.2f} {r['chain']:>7.1f} "
                  f"{r['fill']:>8.1f} {r['util']:>5.2f} {r['drv_ms']:>10.2f} "
                  f"{r['proc_ms']:>11.2f} {r['segps']:>6.1f} {r['barrier']:>9.1f} "
                  f"{r['barrier'] / r['wall']:>5.2f}", flush=True)
    if args.latency:
        for w in sorted(set(args.workers))[:1]:
            per_link, drv_ms, n = latency(args.runner, w)
            print(f"latency ({args.runner}, {w} workers): {per_link * 1e3:.2f} ms per dependent "
                  f"segment (round trip incl. the driver's work, {n} iterations), driver thread "
                  f"{drv_ms:.2f} ms CPU per segment")
            try:
                rate = throughput(args.runner, w)
            except Exception as exc:  # noqa: BLE001 - a finding to print, not to hide
                print(f"throughput ({args.runner}, {w} workers): failed: {exc}")
            else:
                print(f"throughput ({args.runner}, {w} workers, independent no-cost segments): "
                      f"{rate:.0f} segments/s ({1e3 / rate:.2f} ms each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
