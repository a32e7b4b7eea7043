"""``tams check-db DB``: is a campaign database internally consistent?

Read-only; works on a database whose driver was killed (only committed rows count).  Returns
a list of problems, one sentence each; empty means consistent.  Checked per replica:

* every table's columns have the committed length;
* trajectory ids unique in ``created`` and in ``trajectories``; every parent created earlier;
* branch steps within the parent's path; each trajectory's own steps contiguous from
  branch_step + 1, no duplicates, ending at its end step once ended;
* iterations numbered 1..J, log-weights = cumulative sum of log(1 - K/N), weight = exp;
* the summary agrees with the tables (iterations, log-weight, reached count when finished);
* every checkpoint of the current ensemble and of its ancestors exists on disk, non-empty.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from orchestrator.core.algorithm import Outcome


def check_database(path) -> list[str]:
    from orchestrator.store import Database
    problems: list[str] = []
    path = Path(path)
    with Database(path) as db:
        n = db.meta.n
        target = db.meta.target
        run_dir = db.run_dir()
        for r in range(db.n_replicas):
            p = f"replica {r}"
            problems += [f"{p}: {what}" for what in db.short_tables(r)]
            if problems:
                continue
            rec = db.record(r)
            T, s = rec.tables, rec.summary
            cr, en, it, st, ck = (T["created"], T["trajectories"], T["iterations"], T["steps"],
                                  T["checkpoints"])
            ids = cr["id"]
            if np.unique(ids).size != ids.size:
                problems.append(f"{p}: duplicate trajectory ids in table created")
            if np.unique(en["id"]).size != en["id"].size:
                problems.append(f"{p}: a trajectory ended twice in table trajectories")
            row_of = {int(t): i for i, t in enumerate(ids)}
            branch = dict(zip(ids.tolist(), cr["branch_step"].tolist()))
            parent = dict(zip(ids.tolist(), cr["parent"].tolist()))
            # own steps per trajectory
            order = np.lexsort((st["step"], st["traj"]))
            tr, sp = st["traj"][order], st["step"][order]
            own: dict[int, tuple[int, int]] = {}
            if tr.size:
                cut = np.flatnonzero(np.diff(tr)) + 1
                for a, e in zip(np.r_[0, cut], np.r_[cut, tr.size]):
                    tid = int(tr[a])
                    steps = sp[a:e]
                    if tid not in branch:
                        problems.append(f"{p}: steps of trajectory {tid}, which was never created")
                        continue
                    b = branch[tid]
                    if not np.array_equal(steps, np.arange(b + 1, b + 1 + steps.size)):
                        dup = steps.size != np.unique(steps).size
                        problems.append(f"{p}: trajectory {tid}'s own steps are not contiguous "
                                        f"from {b + 1}" + (" (duplicates)" if dup else ""))
                    own[tid] = (b, b + steps.size)
            ended = dict(zip(en["id"].tolist(), en["end_step"].tolist()))
            for tid, end in ended.items():
                last = own.get(tid, (branch.get(tid, 0), branch.get(tid, 0)))[1]
                if tid not in branch:
                    problems.append(f"{p}: trajectory {tid} ended but was never created")
                elif last != end:
                    problems.append(f"{p}: trajectory {tid} ended at step {end} but its path "
                                    f"stops at {last}")
            for i, tid in enumerate(ids.tolist()):
                par = parent[tid]
                if par < 0:
                    continue
                if par not in row_of or row_of[par] >= i:
                    problems.append(f"{p}: trajectory {tid}'s parent {par} is not created before it")
                    continue
                pend = own.get(par, (branch[par], branch[par]))[1]
                if not 0 <= branch[tid] <= pend:
                    problems.append(f"{p}: trajectory {tid} branches at step {branch[tid]}, outside "
                                    f"its parent {par}'s path (steps 1..{pend})")
            J = it["iteration"].size
            if not np.array_equal(it["iteration"], np.arange(1, J + 1)):
                problems.append(f"{p}: iterations are not numbered 1..{J}")
            lw = np.cumsum(np.log1p(-it["n_killed"] / n)) if J else np.zeros(0)
            if J and not np.allclose(it["log_weight"], lw, rtol=1e-12, atol=1e-12):
                problems.append(f"{p}: log-weights differ from the sum of log(1 - K/N)")
            if J and not np.allclose(it["weight"], np.exp(it["log_weight"]), rtol=1e-12, atol=0):
                problems.append(f"{p}: weights are not exp(log-weight)")
            if int(s["iterations"]) != J:
                problems.append(f"{p}: summary says {int(s['iterations'])} iterations, the table "
                                f"holds {J}")
            outcome = int(s["outcome"])
            expect_lw = float(lw[-1]) if J else 0.0
            if outcome == Outcome.EXTINCT:
                expect_lw = -math.inf
            if not (float(s["log_weight"]) == expect_lw or
                    math.isclose(float(s["log_weight"]), expect_lw, rel_tol=1e-12, abs_tol=1e-12)):
                problems.append(f"{p}: summary log-weight {float(s['log_weight'])} is not the last "
                                f"iteration's {expect_lw}")
            ens = db.ensemble(r) if ids.size else np.zeros(0, dtype=np.int64)
            if ens.size and (ens < 0).any():
                problems.append(f"{p}: the ensemble has empty slots")
                continue
            if outcome != Outcome.RUNNING and ens.size:
                maxs = dict(zip(en["id"].tolist(), en["max_score"].tolist()))
                reached = sum(1 for t in ens.tolist() if maxs.get(t, -math.inf) >= target)
                if outcome != Outcome.EXTINCT and reached != int(s["n_reached"]):
                    problems.append(f"{p}: summary says {int(s['n_reached'])} reached B, the "
                                    f"final ensemble has {reached}")
                if any(t not in maxs for t in ens.tolist()):
                    problems.append(f"{p}: finished, but a trajectory of its ensemble never ended")
            if int(s["model_steps"]) < st["step"].size:
                problems.append(f"{p}: summary counts {int(s['model_steps'])} model steps, fewer "
                                f"than the {st['step'].size} stored")
            # checkpoints a live trajectory may branch from
            live: set[int] = set()
            for t in ens.tolist():
                while t >= 0 and t not in live:
                    live.add(t)
                    t = parent.get(t, -1)
            files = T["files"]["path"]
            seen: set[int] = set()
            for tid, fid in zip(ck["traj"].tolist(), ck["file"].tolist()):
                if tid not in live or fid in seen:
                    continue
                seen.add(fid)
                if not 0 <= fid < files.size:
                    problems.append(f"{p}: checkpoint of trajectory {tid} names file {fid}, not "
                                    "in table files")
                    continue
                f = run_dir / files[fid].decode()
                try:
                    ok = f.stat().st_size > 0
                except OSError:
                    ok = False
                if not ok:
                    problems.append(f"{p}: checkpoint file {f} of live trajectory {tid} is "
                                    "missing or empty")
    return problems


def cmd_check_db(args) -> int:
    problems = check_database(args.database)
    for line in problems:
        print(line)
    if not problems:
        print(f"{args.database}: consistent")
    return 2 if problems else 0


__all__ = ["check_database", "cmd_check_db"]
