"""Export a campaign database: ``Database.to_xarray()``, netCDF-4 (xarray + h5netcdf, both
dependencies of the package) and CSV (standard library only).

Layout (CF-1.8 names and attributes, units from ``model.observables``):

* dimension ``trajectory``: every trajectory of every replica (ancestors and killed ones
  included), with ``replica``, ``traj_id``, ``parent``, ``branch_step``, ``status``,
  ``length``, ``max_score``, ``iteration_created``, ``in_final_ensemble`` and ``weight`` (the
  trajectory's weight in the estimator of Lestang et al. 2018, see orchestrator/returntimes.py);
* dimension ``step`` (1 .. the longest path): ``time``, ``score`` and one variable per
  observable, each ``(trajectory, step)`` and NaN-padded after the end of the path — the FULL
  path, the parent's prefix included (what ``Database.trajectory(id, replica)`` returns);
* dimensions ``replica`` and ``iteration``: ``level``, ``weight``, ``log_weight``,
  ``n_killed`` per (replica, iteration), NaN/-1 padded; ``estimate``, ``log_estimate``,
  ``outcome``, ``iterations``, ``model_steps`` per replica.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from orchestrator.errors import DatabaseError

STATUS_MEANINGS = "running reached_target horizon fell_back_into_A"
OUTCOME_MEANINGS = "running converged max_iterations extinct"
RESERVED = {"time", "score", "step", "trajectory", "replica", "iteration", "weight", "level"}


def _var_name(obs: str) -> str:
    return f"obs_{obs}" if obs in RESERVED else obs


def gather(db) -> dict:
    """Everything exported, as numpy arrays."""
    rows = []  # (replica, id, parent, branch, status, created_it, final, log_w, path rows)
    paths = []
    for r in range(db.n_replicas):
        rec = db.record(r)
        created, ended = rec.tables["created"], rec.tables["trajectories"]
        status = dict(zip(ended["id"].tolist(), ended["status"].tolist()))
        w = db.weights(r)
        final = set(db.ensemble(r).tolist())
        for i, t in enumerate(created["id"].tolist()):
            tr = db.trajectory(t, r)
            paths.append(tr)
            rows.append((r, t, int(created["parent"][i]), int(created["branch_step"][i]),
                         int(status.get(t, 0)), int(created["iteration"][i]), t in final,
                         float(w["log_weight"][i])))
    m = len(rows)
    n_obs = len(db.observables)
    length = np.array([p.steps.size for p in paths], dtype=np.int64)
    s_max = int(length.max()) if m else 0
    time = np.full((m, s_max), np.nan)
    score = np.full((m, s_max), np.nan)
    obs = np.full((n_obs, m, s_max), np.nan)
    for i, p in enumerate(paths):
        n = p.steps.size
        time[i, :n], score[i, :n] = p.times, p.scores
        obs[:, i, :n] = p.observables.T
    col = lambda j, dt: np.array([row[j] for row in rows], dtype=dt)  # noqa: E731
    reps = db.replicas()
    iters = [db.iterations(r) for r in range(db.n_replicas)]
    n_it = max((len(it["iteration"]) for it in iters), default=0)
    it_arr = {k: np.full((db.n_replicas, n_it), np.nan) for k in ("level", "weight", "log_weight")}
    n_killed = np.full((db.n_replicas, n_it), -1, dtype=np.int64)
    for r, it in enumerate(iters):
        j = len(it["iteration"])
        for k in it_arr:
            it_arr[k][r, :j] = it[k]
        n_killed[r, :j] = it["n_killed"]
    max_score = np.array([np.max(p.scores) if p.scores.size else np.nan for p in paths])
    return {
        "replica_of": col(0, np.int64), "traj_id": col(1, np.int64), "parent": col(2, np.int64),
        "branch_step": col(3, np.int64), "status": col(4, np.int8),
        "iteration_created": col(5, np.int64), "final": col(6, np.int8),
        "log_weight_traj": col(7, np.float64), "length": length, "max_score": max_score,
        "time": time, "score": score, "obs": obs, "n_it": n_it, "n_killed": n_killed, **it_arr,
        "estimate": np.array([v.estimate for v in reps]),
        "log_estimate": np.array([v.log_estimate for v in reps]),
        "outcome": np.array([int(v.outcome) for v in reps], dtype=np.int8),
        "iterations": np.array([v.iterations for v in reps], dtype=np.int64),
        "model_steps": np.array([v.model_steps for v in reps], dtype=np.int64),
    }


def to_xarray(db):
    try:
        import xarray as xr
    except ImportError:
        raise DatabaseError("exporting to xarray/netCDF needs xarray and h5netcdf, which this "
                            "installation lacks: pip install xarray h5netcdf (or use "
                            "--format csv).") from None
    g = gather(db)
    m, s_max = g["time"].shape
    tdim, ts = ("trajectory",), ("trajectory", "step")
    data = {
        "replica_of_trajectory": (tdim, g["replica_of"], {"long_name": "replica of the trajectory"}),
        "traj_id": (tdim, g["traj_id"], {"long_name": "trajectory id within its replica"}),
        "parent": (tdim, g["parent"], {"long_name": "id of the parent trajectory (-1: initial ensemble)"}),
        "branch_step": (tdim, g["branch_step"], {"long_name": "last step copied from the parent"}),
        "status": (tdim, g["status"], {"long_name": "how the trajectory ended",
                                       "flag_values": np.array([0, 1, 2, 3], dtype=np.int8),
                                       "flag_meanings": STATUS_MEANINGS}),
        "iteration_created": (tdim, g["iteration_created"], {"long_name": "iteration that created the trajectory (0: initial ensemble)"}),
        "in_final_ensemble": (tdim, g["final"], {"long_name": "1 if in the replica's final ensemble"}),
        "weight": (tdim, np.exp(g["log_weight_traj"]), {"long_name": "weight of the trajectory in the estimator (killed at iteration j: W_{j-1}/N; final ensemble: W_J/N)", "units": "1"}),
        "log_weight_trajectory": (tdim, g["log_weight_traj"], {"long_name": "natural log of weight", "units": "1"}),
        "length": (tdim, g["length"], {"long_name": "number of steps in the full path"}),
        "max_score": (tdim, g["max_score"], {"long_name": "maximum score over the full path", "units": "1"}),
        "time": (ts, g["time"], {"long_name": "model time",
                                  "units": db.meta.time_units or "1",
                                  "comment": f"{db.meta.time_label} (step s at s*dt)"}),
        "score": (ts, g["score"], {"long_name": "score (reaction coordinate)", "units": "1"}),
        "level": (("replica", "iteration"), g["level"], {"long_name": "level z_j (score)", "units": "1"}),
        "iteration_weight": (("replica", "iteration"), g["weight"], {"long_name": "weight W_j after iteration j", "units": "1"}),
        "iteration_log_weight": (("replica", "iteration"), g["log_weight"], {"long_name": "natural log of W_j", "units": "1"}),
        "n_killed": (("replica", "iteration"), g["n_killed"], {"long_name": "trajectories killed at iteration j", "_FillValue": -1}),
        "estimate": (("replica",), g["estimate"], {"long_name": "estimate of the probability p", "units": "1"}),
        "log_estimate": (("replica",), g["log_estimate"], {"long_name": "natural log of the estimate", "units": "1"}),
        "outcome": (("replica",), g["outcome"], {"long_name": "why the replica stopped",
                                                 "flag_values": np.array([0, 1, 2, 3], dtype=np.int8),
                                                 "flag_meanings": OUTCOME_MEANINGS}),
        "iterations": (("replica",), g["iterations"], {"long_name": "iterations done"}),
        "model_steps": (("replica",), g["model_steps"], {"long_name": "model steps computed"}),
    }
    for i, spec in enumerate(db.observable_specs):
        attrs = {"units": spec.get("units") or "1", "long_name": spec.get("long_name") or spec["name"]}
        data[_var_name(spec["name"])] = (ts, g["obs"][i], attrs)
    coords = {"trajectory": np.arange(m), "step": np.arange(1, s_max + 1),
              "replica": np.arange(db.n_replicas), "iteration": np.arange(1, g["n_it"] + 1)}
    ds = xr.Dataset(data, coords=coords)
    ds["step"].attrs["long_name"] = "model step (step s is at time s*dt)"
    ds.attrs.update({
        "Conventions": "CF-1.8", "title": f"TAMS campaign {db.name}",
        "source": f"tams {db.software_version} (database schema {db.schema_version})",
        "seed": db.seed, "time_units": db.meta.time_label, "observables": json.dumps(db.observable_specs),
        "campaign_yaml": db.config_yaml,
    })
    return ds


def export(db, fmt: str, out: str | Path | None = None) -> Path:
    if fmt == "netcdf":
        path = Path(out) if out else Path(db.path).with_suffix(".nc")
        ds = to_xarray(db)
        enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].ndim == 2}
        ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
        return path
    if fmt == "csv":
        return to_csv(db, Path(out) if out else Path(db.path).with_suffix(".csv"))
    raise DatabaseError(f"unknown export format {fmt!r}; use netcdf or csv.")


def to_csv(db, folder: Path) -> Path:
    """``steps.csv`` (one row per step of every full path), ``trajectories.csv``,
    ``iterations.csv``, ``replicas.csv`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    g = gather(db)
    names = [_var_name(o) for o in db.observables]
    with open(folder / "steps.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["replica", "traj_id", "step", "time", "score", *names])
        for i in range(g["time"].shape[0]):
            n = int(g["length"][i])
            cols = [g["time"][i, :n], g["score"][i, :n], *(g["obs"][k, i, :n] for k in range(len(names)))]
            r, t = int(g["replica_of"][i]), int(g["traj_id"][i])
            w.writerows([r, t, s + 1, *(repr(float(c[s])) for c in cols)] for s in range(n))
    with open(folder / "trajectories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["replica", "traj_id", "parent", "branch_step", "status", "iteration_created",
                    "in_final_ensemble", "weight", "log_weight", "length", "max_score"])
        for i in range(g["time"].shape[0]):
            w.writerow([int(g["replica_of"][i]), int(g["traj_id"][i]), int(g["parent"][i]),
                        int(g["branch_step"][i]), int(g["status"][i]), int(g["iteration_created"][i]),
                        int(g["final"][i]), repr(float(np.exp(g["log_weight_traj"][i]))),
                        repr(float(g["log_weight_traj"][i])), int(g["length"][i]),
                        repr(float(g["max_score"][i]))])
    with open(folder / "iterations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["replica", "iteration", "level", "n_killed", "log_weight", "weight"])
        for r in range(db.n_replicas):
            it = db.iterations(r)
            for j in range(len(it["iteration"])):
                w.writerow([r, int(it["iteration"][j]), repr(float(it["level"][j])),
                            int(it["n_killed"][j]), repr(float(it["log_weight"][j])),
                            repr(float(it["weight"][j]))])
    with open(folder / "replicas.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["replica", "outcome", "iterations", "estimate", "log_estimate", "model_steps"])
        for r in range(db.n_replicas):
            w.writerow([r, int(g["outcome"][r]), int(g["iterations"][r]),
                        repr(float(g["estimate"][r])), repr(float(g["log_estimate"][r])),
                        int(g["model_steps"][r])])
    return folder
