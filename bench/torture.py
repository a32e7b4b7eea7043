"""Crash torture, long version (tests/test_torture.py is the short one).

A small campaign of the Fortran 2-D double well (configs/doublewell2d-fortran.yaml shrunk) in a
temporary directory.  First an undisturbed reference run.  Then three disturbed runs, each
compared bit for bit with the reference (tests/conftest.py ``digest``/``assert_same``):

1. the driver (`tams run`) SIGKILLed ``--kills`` times, each time once a random fraction of the
   remaining progress (committed segments) is reached, plus a random 0-50 ms delay so kills land
   during segments, database writes and decisions; ``tams check-db`` must exit 0 after every
   kill; then resume;
2. ``runner.kind: processes``: one Parsl worker process (a ``process_worker_pool`` child of
   this campaign, found via /proc) SIGKILLed in the middle of the campaign;
3. one model process (the Fortran binary ``doublewell2d`` whose cwd is in the temp dir, found
   via /proc) SIGKILLed mid-segment: a failed attempt, retried.

    python bench/torture.py [--kills 20] [--seed S]

Exit status non-zero if any check fails.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# Progress is polled by opening the database read-only while the driver runs; without this an
# unlucky poll holds HDF5's file lock just as a (re)started driver opens the file for writing,
# and that driver refuses to start ("unable to lock file").  Only this process skips locking;
# the drivers it starts (ENV below) keep it.
_PARENT_ENV = dict(os.environ)
os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import assert_same, digest  # noqa: E402
from orchestrator.store import Database  # noqa: E402

EXE = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d"
ENV = dict(_PARENT_ENV, PYTHONPATH=os.pathsep.join(
    [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))


def write_campaign(tmp: Path, name: str, kind: str = "threads") -> Path:
    data = yaml.safe_load((REPO / "configs" / "doublewell2d-fortran.yaml").read_text())
    data["replicas"] = 2
    data["model"]["executable"] = str(EXE)
    data["model"]["checkpoint_every"] = 50
    data["tams"].update(trajectories=20, kill_per_iteration=2, horizon=6.0, segment_steps=50)
    data["runner"].update(kind=kind, workers=2, retries=2)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cmd(cfg: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "run", str(cfg), "--db", str(db), "-q"]


def segments(db: Path) -> int:
    try:
        with Database(db) as d:
            return sum(v.segments for v in d.replicas())
    except Exception:
        return 0


def failed_segments(db: Path) -> int:
    with Database(db) as d:
        return sum(v.failed_segments for v in d.replicas())


def check_db(db: Path, tmp: Path) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "check-db", str(db)],
                         cwd=tmp, env=ENV, capture_output=True, text=True, timeout=120)
    return res.returncode, (res.stdout + res.stderr).strip()


def finish(cfg: Path, db: Path, tmp: Path) -> tuple[int, str]:
    res = subprocess.run(run_cmd(cfg, db), cwd=tmp, env=ENV, capture_output=True, text=True,
                         timeout=900)
    return res.returncode, res.stderr.strip()[-2000:]


def identical(reference, db: Path) -> tuple[bool, str]:
    try:
        assert_same(reference, digest(db))
        return True, ""
    except AssertionError as e:
        return False, str(e)


# --- /proc -------------------------------------------------------------------------------------

def _procs():
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(p / "cwd")
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        yield int(p.name), ppid, [c.decode(errors="replace") for c in cmd if c], cwd


def _inside(path: str, tmp: Path) -> bool:
    return path == str(tmp) or path.startswith(str(tmp) + os.sep)


def parsl_workers(tmp: Path) -> list[int]:
    """Worker processes of a process_worker_pool belonging to this campaign."""
    procs = list(_procs())
    pools = {pid for pid, _, cmd, cwd in procs
             if any("process_worker_pool" in c for c in cmd)
             and (_inside(cwd, tmp) or any(str(tmp) in c for c in cmd))}
    return [pid for pid, ppid, _, _ in procs if ppid in pools]


def cleanup(tmp: Path) -> None:
    """SIGKILL leftovers this bench started (processes whose cwd or command is in tmp)."""
    for pid, _, cmd, cwd in list(_procs()):
        if pid != os.getpid() and (_inside(cwd, tmp) or any(str(tmp) in c for c in cmd)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def model_processes(tmp: Path) -> list[int]:
    return [pid for pid, _, cmd, cwd in _procs()
            if cmd and os.path.basename(cmd[0]) == EXE.name and _inside(cwd, tmp)]


# --- scenarios ---------------------------------------------------------------------------------

def scenario_driver_kills(tmp: Path, reference, total: int, kills: int, rng: random.Random) -> bool:
    cfg = write_campaign(tmp, "kills")
    db = tmp / "kills.h5"
    ok = True
    print(f"\nScenario 1: driver SIGKILLed {kills} times (reference: {total} committed segments)")
    print(f"{'kill #':>6}  {'target':>6}  {'committed at kill':>17}  {'delay ms':>8}  check-db")
    landed = 0
    for k in range(1, kills + 1):
        cur = segments(db)
        # spread the kills over what is left: about 1/(kills left + 1) of it each time, so
        # that they land during the work, not after it (commits come in batches)
        target = cur + rng.uniform(0.3, 1.0) * max(total - cur, 0) / (kills - k + 2)
        delay = rng.uniform(0, 0.05)
        errf = (tmp / f"kill{k}.err").open("w+")
        proc = subprocess.Popen(run_cmd(cfg, db), cwd=tmp, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=errf)
        while proc.poll() is None and segments(db) < target:
            time.sleep(0.005)
        time.sleep(delay)
        at = segments(db)
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
        landed += killed
        rc, out = check_db(db, tmp)
        ok &= rc == 0
        errf.seek(0)
        last = (errf.read().strip().splitlines() or [""])[-1][:160]
        errf.close()
        note = "" if killed else f"  (run ended first, exit {proc.returncode}: {last})"
        print(f"{k:>6}  {target:>6.1f}  {at:>17}  {delay * 1e3:>8.1f}  "
              f"{'ok (exit 0)' if rc == 0 else f'FAIL (exit {rc})'}{note}")
        if rc != 0:
            print("        " + out.replace("\n", "\n        "))
    rc, err = finish(cfg, db, tmp)
    if rc != 0:
        print(f"final resume failed (exit {rc}):\n{err}")
        ok = False
    crc, out = check_db(db, tmp)
    ok &= crc == 0 and landed > 0
    same, why = identical(reference, db) if rc == 0 else (False, "run did not finish")
    print(f"kills that landed: {landed}/{kills}; final resume exit {rc}; final check-db exit {crc}")
    print(f"driver kills: bitwise identical to the undisturbed run: {'yes' if same else 'no'}"
          + (f" ({why})" if why else ""))
    return ok and same


def scenario_with_victim(tmp: Path, reference, total: int, name: str, kind: str, title: str,
                         find, rng: random.Random) -> bool:
    cfg = write_campaign(tmp, name, kind)
    db = tmp / f"{name}.h5"
    print(f"\n{title}")
    proc = subprocess.Popen(run_cmd(cfg, db), cwd=tmp, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = rng.uniform(0.3, 0.6) * total
    while proc.poll() is None and segments(db) < target:
        time.sleep(0.005)
    victim, at = None, None
    deadline = time.monotonic() + 60
    while proc.poll() is None and victim is None and time.monotonic() < deadline:
        pids = find(tmp)
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
                victim, at = pid, segments(db)
            except ProcessLookupError:
                pass
        else:
            time.sleep(0.001)
    hung = False
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        hung = True
        proc.kill()
        _, err = proc.communicate()
        cleanup(tmp)
    rc = proc.returncode
    if hung:
        print(f"{name}: FAIL: the run did not finish within 120 s of the kill (hung); killed")
    crc, out = check_db(db, tmp)
    failed = failed_segments(db) if db.exists() else -1
    print(f"{'kill #':>6}  {'committed at kill':>17}  {'pid':>8}  check-db")
    print(f"{1:>6}  {str(at):>17}  {str(victim):>8}  "
          f"{'ok (exit 0)' if crc == 0 else f'FAIL (exit {crc})'}")
    if crc != 0:
        print("        " + out.replace("\n", "\n        "))
    print(f"run exit {rc}; failed (retried) segment attempts recorded: {failed}")
    if rc != 0:
        print(err.strip()[-2000:])
    same, why = identical(reference, db) if rc == 0 else (False, "run did not finish")
    print(f"{name}: bitwise identical to the undisturbed run: {'yes' if same else 'no'}"
          + (f" ({why})" if why else ""))
    if victim is None:
        print(f"{name}: FAIL: no process was killed (campaign ended first)")
    return victim is not None and rc == 0 and crc == 0 and same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    if not EXE.exists():
        print(f"{EXE} missing: make -C containers", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tams-torture-") as d:
        tmp = Path(d).resolve()
        ref_cfg = write_campaign(tmp, "ref")
        ref_db = tmp / "ref.h5"
        t = time.monotonic()
        rc, err = finish(ref_cfg, ref_db, tmp)
        if rc != 0:
            print(f"reference run failed (exit {rc}):\n{err}")
            return 1
        reference = digest(ref_db)
        total = int(reference["segments"])
        crc, _ = check_db(ref_db, tmp)
        print(f"torture seed {seed}; campaign: Fortran doublewell2d, 2 replicas x 20 trajectories, "
              f"horizon 6, 50-step segments, 2 workers, retries 2")
        print(f"undisturbed reference run: {total} committed segments, "
              f"{time.monotonic() - t:.1f} s, check-db exit {crc}")
        results = {
            "driver kills": scenario_driver_kills(tmp, reference, total, a.kills, rng),
            "parsl worker": scenario_with_victim(
                tmp, reference, total, "parsl-worker", "processes",
                "Scenario 2: runner.kind processes, one Parsl worker process SIGKILLed mid-campaign",
                parsl_workers, rng),
            "model process": scenario_with_victim(
                tmp, reference, total, "model-process", "threads",
                "Scenario 3: one model process (doublewell2d) SIGKILLed mid-segment",
                model_processes, rng),
        }
        cleanup(tmp)
    print(f"\nSummary ({time.monotonic() - t0:.0f} s):")
    for name, good in results.items():
        print(f"  {name:<14} {'PASS' if good else 'FAIL'}")
    return 0 if crc == 0 and all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
