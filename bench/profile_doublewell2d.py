"""Profile `tams run configs/doublewell2d.yaml` (the README campaign): where does a step go?

Runs the campaign through the real driver, Parsl (threads) and the HDF5 writer, with
``--replicas`` replicas, and reports

1. the CPU split per thread kind (``time.thread_time``, robust against other jobs' load):
   the worker threads inside ``PythonModel.run_segment`` (and in it, the step loop as the
   adapter reports it in ``model_time``), the worker threads outside it (Parsl's task
   wrapper and the done-callbacks, which run in the worker thread), and the driver thread
   (``Driver.run``: ingestion, submission, commits);
2. per segment and per step, the cost of the driver's phases (``Replica.on_result`` and
   what it calls, ``Writer.commit``, ``Executor.submit``...), timed by wrapping them;
3. with ``--cprofile``, a cProfile of every thread (one profiler per thread, merged, timed
   with ``time.thread_time``: CPU seconds, so that other jobs preempting this one do not
   show up as cost), top functions by internal time, written to ``--out`` as a pstats file.

Timing wrappers cost ~1 µs per call; the cProfile run is 2-3x slower than a plain run, so
read its figures as ranks and shares, not as absolute costs.

    python bench/profile_doublewell2d.py [--replicas 3] [--inline] [--cprofile] [--top 40]
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class Timers:
    """Thread-CPU and wall time per named phase, summed over calls (re-entrant: an inner
    phase's time also counts in the outer one)."""

    def __init__(self):
        self.cpu = defaultdict(float)
        self.wall = defaultdict(float)
        self.calls = defaultdict(int)
        self.lock = threading.Lock()

    def wrap(self, owner, name: str, label: str | None = None):
        fn = getattr(owner, name, None)
        if fn is None:  # not in this version of the code
            return None
        label = label or f"{getattr(owner, '__name__', owner)}.{name}"

        @functools.wraps(fn)
        def timed(*a, **kw):
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                c, w = time.thread_time() - c0, time.perf_counter() - w0
                with self.lock:
                    self.cpu[label] += c
                    self.wall[label] += w
                    self.calls[label] += 1
        setattr(owner, name, timed)
        return fn


class ThreadProfiles:
    """One cProfile.Profile per thread that calls ``around`` (cProfile sees only its own
    thread), merged at the end."""

    def __init__(self):
        self.local = threading.local()
        self.all: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def profile(self) -> cProfile.Profile:
        p = getattr(self.local, "p", None)
        if p is None:
            p = self.local.p = cProfile.Profile(time.thread_time)
            with self.lock:
                self.all.append(p)
        return p

    def wrap(self, owner, name: str):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def profiled(*a, **kw):
            p = self.profile()
            p.enable()
            try:
                return fn(*a, **kw)
            finally:
                p.disable()
        setattr(owner, name, profiled)

    def stats(self) -> pstats.Stats:
        s = None
        for p in self.all:
            p.create_stats()
            if s is None:
                s = pstats.Stats(p)
            else:
                s.add(p)
        return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--cprofile", action="store_true", help="profile every thread with cProfile")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--segment-steps", type=int, default=None,
                    help="override tams.segment_steps (the results do not depend on it)")
    ap.add_argument("--inline", action="store_true",
                    help="run every segment in the driver's thread (InlineExecutor, as the "
                    "statistical tests do): no thread hand-offs, so the CPU of each phase is "
                    "measured without GIL contention")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--out", type=Path, default=None, help="pstats file (with --cprofile)")
    args = ap.parse_args()

    from adapters import python as pyadapter
    from orchestrator import config
    from orchestrator.core import ensemble
    try:  # the layout after the core rebuild (orchestrator/runtime), else the one before
        from orchestrator.runtime import driver as drv
        from orchestrator.runtime import executor as exe
        from orchestrator.runtime import worker
    except ImportError:
        from orchestrator.run import driver as drv
        from orchestrator.run import executor as exe
        from orchestrator.run import worker
    from orchestrator.store import Database, hdf5
    Replica = getattr(ensemble, "Ensemble", None) or ensemble.Replica
    Store = getattr(hdf5, "HDF5Store", None) or hdf5.Writer
    try:
        from orchestrator.core import tree
        from orchestrator.store import base as store_base
    except ImportError:
        tree = store_base = None

    timers = Timers()
    profiles = ThreadProfiles() if args.cprofile else None
    if profiles:
        # worker threads: the Parsl app body; the driver thread: the whole loop.  Parsl's
        # callbacks that run in a worker thread after the app returns are not seen here.
        profiles.wrap(worker, "run_segment")
        exe.run_segment = worker.run_segment
        profiles.wrap(drv.Driver, "run")
    else:
        W = timers.wrap
        W(pyadapter.PythonModel, "run_segment", "worker: PythonModel.run_segment")
        W(worker, "run_segment", "worker: app body (worker.run_segment)")
        exe.run_segment = worker.run_segment  # the Parsl app is built from this name
        W(drv.Driver, "run", "driver: Driver.run (whole loop, driver thread)")
        W(Replica, "on_result", "driver: Replica.on_result")
        W(Replica, "validate", "driver:   Replica.validate")
        W(Replica, "_task", "driver:   Replica._task (next request)")
        W(Replica, "_noise", "driver:     Replica._noise (keyed noise)")
        W(Replica, "_ckpt_at_or_before", "driver:     Replica._ckpt_at_or_before")
        W(Replica, "_summary", "driver:   Replica._summary")
        W(Replica, "_emit_summary", "driver:   Replica._emit_summary")
        W(Replica, "_iterate", "driver:   Replica._iterate")
        W(Replica, "_add_records", "driver:   Replica._add_records")
        W(Replica, "_file_id", "driver:   Replica._file_id")
        W(Replica, "_ingest_checkpoints", "driver:   Replica._ingest_checkpoints")
        W(Replica, "drain", "driver: Replica.drain (events)")
        if tree is not None:
            W(tree.Tree, "noise", "driver:     Tree.noise (keyed noise)")
            W(tree.Tree, "checkpoint_at_or_before", "driver:     Tree.checkpoint_at_or_before")
            W(tree.Tree, "file_id", "driver:   Tree.file_id")
            W(store_base.Store, "record", "driver: Store.record (events to rows)")
        W(Store, "append", "driver:   Writer.append")
        W(Store, "commit", "driver: Writer.commit")
        W(exe.Executor, "submit", "driver: Executor.submit (Parsl app call)")
        W(drv.Driver, "_collect_garbage", "driver: Driver._collect_garbage")
        W(drv, "dir_bytes", "driver: dir_bytes (state size walk)")

    data = yaml.safe_load((REPO / "configs/doublewell2d.yaml").read_text())
    data["replicas"] = args.replicas
    data["seed"] = args.seed
    if args.segment_steps:
        data["tams"]["segment_steps"] = args.segment_steps
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench.yaml")
        path.write_text(yaml.safe_dump(data))
        loaded = config.load(path)
        c0, w0 = time.process_time(), time.perf_counter()
        executor = None
        if args.inline:
            from orchestrator.runtime.inline import InlineExecutor
            executor = InlineExecutor()
        drv.Driver(loaded, db_path=str(Path(tmp, "bench.h5")), executor=executor).run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        with Database(Path(tmp, "bench.h5")) as db:
            reps = db.replicas()
            steps = sum(v.model_steps for v in reps)
            segments = sum(v.segments for v in reps)
            model_time = sum(float(db.table(r, "segments")["model_time"].sum())
                             for r in range(db.n_replicas))

    print(f"2-D double well, {args.replicas} replicas, seed {args.seed}: {steps} steps, "
          f"{segments} segments ({steps / segments:.0f} steps per segment)")
    print(f"  wall {wall:.2f} s = {wall / steps * 1e6:.2f} µs/step;  process CPU {cpu:.2f} s = "
          f"{cpu / steps * 1e6:.2f} µs/step;  adapter step loop (model_time, wall) "
          f"{model_time / steps * 1e6:.2f} µs/step")
    if profiles:
        st = profiles.stats()
        if args.out:
            st.dump_stats(args.out)
        buf = io.StringIO()
        st.stream = buf
        st.sort_stats(args.sort).print_stats(args.top)
        print(buf.getvalue())
        return 0
    print(f"  {'phase':58s} {'calls':>8s} {'CPU s':>7s} {'µs/call':>8s} {'µs/seg':>7s} "
          f"{'µs/step':>7s}")
    for label in sorted(timers.cpu, key=lambda k: (k.split(":")[0], -timers.cpu[k])):
        c, n = timers.cpu[label], timers.calls[label]
        print(f"  {label:58s} {n:8d} {c:7.2f} {c / n * 1e6:8.1f} {c / segments * 1e6:7.1f} "
              f"{c / steps * 1e6:7.2f}")
    worker_cpu = timers.cpu["worker: app body (worker.run_segment)"]
    driver_cpu = timers.cpu["driver: Driver.run (whole loop, driver thread)"]
    other = cpu - worker_cpu - driver_cpu
    print(f"  other threads (Parsl callbacks and bookkeeping in worker threads, Parsl's own "
          f"threads): {other:.2f} s = {other / steps * 1e6:.2f} µs/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
