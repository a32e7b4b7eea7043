"""Driver cost per iteration and database write cost as a campaign grows (issue #6).

The driver is isolated: ``orchestrator.core.ensemble.Replica`` and the real HDF5 ``Writer`` are fed
synthetic ``SegmentResult``s (observables are keyed pseudo-random numbers, no model runs, no
Parsl), in the order the driver would see them, with a commit every ``--commit-every``
segments.  Two experiments:

1. **Cost vs N** (N = 100, 1 000, 10 000; k = 1; 2 000 iterations):
   initial ensemble µs per trajectory, µs per iteration (decision + branch + child's segment
   ingested + its share of commits), commit ms, peak RSS, database bytes per stored step.
2. **Cost vs history** (N = 100, k = 1, 10^5 iterations): µs per iteration in windows of 10^4
   iterations — it must stay flat.  The level of these walks rises without bound, so a
   child's excursion (hence segments per iteration) grows with the level: µs per *segment*
   is the column that must stay flat.

The scores never reach the target (1e300), so the replica runs until
``max_iterations``.  Timings on a shared, loaded machine: expect ±30 % noise.

    python bench/scaling.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.core.ensemble import Ensemble  # noqa: E402
from orchestrator.core.meta import CampaignMeta, ObservableMeta, Settings  # noqa: E402
from orchestrator.model import Checkpoints, Provenance, SegmentResult  # noqa: E402
from orchestrator.store import HDF5Store  # noqa: E402

SEGMENT = 100
DRIFT = 4.0


def meta(n: int, max_iterations: int) -> CampaignMeta:
    return CampaignMeta(name="scaling", seed=1, replicas=1, algorithm="tams", n=n, k=1,
                        target=1e300, score_a=0.0, horizon_steps=10**9, dt=0.1,
                        max_iterations=max_iterations, segment_steps=SEGMENT, noise_mode="seed",
                        noise_dim=1, checkpoint_every=1, observables=(ObservableMeta("u"),),
                        adapter="synthetic")


def synth(task, rep) -> SegmentResult:
    """Excursions of a keyed Gaussian random walk with drift -DRIFT: the observable at step0 + i
    is the path's value at step0 plus i increments N(-DRIFT, 1) keyed by (trajectory, step0),
    the first increment of a trajectory taken positive.  With score_a = 0 (classic AMS) a
    trajectory ends when it falls back to 0: no horizon, so no child is a copy of its parent
    and the replica can run 10^5 iterations.  (With a fixed horizon every synthetic process we
    tried saturates: children tie their parents' maximum exactly and the replica goes
    extinct within ~10^3 iterations.)"""
    req = task.request
    n = req.n_steps
    steps = np.arange(req.step0 + 1, req.step0 + n + 1, dtype=np.int64)
    x0 = 0.0
    if req.step0 > 0:
        x0 = rep.score_at(rep.trajs[task.traj], req.step0)
    dx = np.random.default_rng([task.traj, req.step0]).standard_normal(n) - DRIFT
    if req.step0 == 0 or req.step0 == rep.trajs[task.traj].branch:
        dx[0] = abs(dx[0]) + 1e-6  # a child's first own step is above its branch point
    obs = (x0 + np.cumsum(dx))[:, None]
    ck = Checkpoints(steps, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                     (os.path.join(req.workdir, "states.npy"),))
    return SegmentResult(steps, obs, ck, provenance=Provenance("h", 1, launcher="synthetic"))


def score(times, obs):
    return obs[:, 0]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Run:
    def __init__(self, tmp: str, n: int, max_iterations: int, commit_every: int):
        self.path = Path(tmp, f"n{n}-{max_iterations}.h5")
        m = meta(n, max_iterations)
        self.db = HDF5Store.create(self.path, m, config_text="", fingerprint="x")
        self.rep = Ensemble(0, Settings(m), score, tmp, None, lambda p: p)
        self.commit_every = commit_every
        self.commit_s = 0.0
        self.commits = 0
        self.done = 0

    def feed(self, tasks, until_iteration: int | None = None) -> list:
        queue = list(tasks)
        while queue:
            task = queue.pop()
            res = synth(task, self.rep)
            self.rep.validate(task.request, res)
            queue += self.rep.on_result(task, res)
            self.db.record(self.rep.drain())
            self.done += 1
            if self.done % self.commit_every == 0:
                t = time.perf_counter()
                self.db.commit()
                self.commit_s += time.perf_counter() - t
                self.commits += 1
                self.rep.garbage.clear()
            if until_iteration is not None and self.rep.iteration > until_iteration:
                break
        return queue

    def close(self) -> int:
        self.db.close()
        return self.path.stat().st_size


def cost_vs_n(tmp: str, ns, iterations: int, commit_every: int) -> None:
    print(f"1. cost vs N (k = 1, excursions of a walk, {iterations} iterations, commit every "
          f"{commit_every} segments)")
    print(f"{'N':>7} {'init µs/traj':>13} {'µs/iteration':>13} {'of which commit':>16} "
          f"{'peak RSS MB':>12} {'DB bytes/step':>14}")
    for n in ns:
        run = Run(tmp, n, iterations, commit_every)
        t0 = time.perf_counter()
        tasks = run.rep.start()
        run.db.record(run.rep.drain())
        rest = run.feed(tasks, until_iteration=0)  # stops once iteration 1 is decided
        t_init = time.perf_counter() - t0
        c0, i0 = run.commit_s, run.rep.iteration
        t1 = time.perf_counter()
        run.feed(rest)
        t_it = time.perf_counter() - t1
        its = run.rep.iteration - i0
        steps = run.rep.model_steps
        size = run.close()
        print(f"{n:>7} {t_init / n * 1e6:>13.0f} {t_it / max(its, 1) * 1e6:>13.0f} "
              f"{(run.commit_s - c0) / max(its, 1) * 1e6:>16.0f} {peak_mb():>12.0f} "
              f"{size / steps:>14.1f}", flush=True)


def cost_vs_history(tmp: str, total: int, window: int, n: int, commit_every: int) -> None:
    print(f"\n2. cost vs history (N = {n}, k = 1, {total} iterations, commit every {commit_every} "
          "segments)")
    print(f"{'iterations done':>16} {'µs/iteration':>13} {'segments/it':>12} {'µs/segment':>11} "
          f"{'live trajectories':>18} {'peak RSS MB':>12}")
    run = Run(tmp, n, total, commit_every)
    queue = run.rep.start()
    run.db.record(run.rep.drain())
    t = time.perf_counter()
    last_it = 0
    last_seg = 0
    # run the queue by hand so we can sample between windows
    while queue:
        task = queue.pop()
        res = synth(task, run.rep)
        queue += run.rep.on_result(task, res)
        run.db.record(run.rep.drain())
        run.done += 1
        if run.done % commit_every == 0:
            run.db.commit()
            run.rep.garbage.clear()
        it = run.rep.iteration
        if it - last_it >= window or not queue:
            now = time.perf_counter()
            seg = run.done - last_seg
            print(f"{it:>16} {(now - t) / max(it - last_it, 1) * 1e6:>13.0f} "
                  f"{seg / max(it - last_it, 1):>12.2f} {(now - t) / max(seg, 1) * 1e6:>11.0f} "
                  f"{len(run.rep.trajs):>18} {peak_mb():>12.0f}", flush=True)
            t, last_it, last_seg = now, it, run.done
    steps = run.rep.model_steps
    size = run.close()
    print(f"database: {size / 1e6:.1f} MB, {size / steps:.1f} bytes per model step")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N up to 1 000, 10^4 iterations")
    ap.add_argument("--commit-every", type=int, default=200)
    args = ap.parse_args()
    ns = (100, 1000) if args.quick else (100, 1000, 10000)
    total = 10_000 if args.quick else 100_000
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: timings are noisy\n")
    with tempfile.TemporaryDirectory(prefix="tams-scaling-") as tmp:
        cost_vs_n(tmp, ns, 500 if args.quick else 2000, args.commit_every)
        cost_vs_history(tmp, total, total // 10, 100, args.commit_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
