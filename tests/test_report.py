"""tams report (figures, cost, relative error), return times against the exact OU chain,
tams export (netCDF, CSV)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from conftest import write_campaign
from orchestrator import cli, config
from orchestrator.core.returntimes import return_time, return_times
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database

FIGURES = ("scores.png", "levels.png", "estimates.png", "first_passage.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    path = write_campaign(tmp, replicas=3, model__observables=[
        {"name": "x", "units": "m", "long_name": "first coordinate"}, "y"])
    db = tmp / "small.h5"
    Driver(config.load(path), db_path=str(db)).run()
    return db


def _assert_png(p):
    assert p.exists(), p
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, f"{p}: not a non-trivial PNG"


def test_report_writes_figures_and_cost(small_db, tmp_path, capsys):
    out = tmp_path / "figs"
    assert cli.main(["report", str(small_db), "--figures", str(out), "--reference", "7.6e-3",
                     "--return-times", "x"]) == 0
    text = capsys.readouterr().out
    for f in FIGURES + ("return_times.png",):
        _assert_png(out / f)
    assert (out / "return_times.csv").read_text().startswith("amplitude,p,")
    assert "95 % CI [" in text and "ideal AMS sqrt(-log p / N)" in text
    assert "iterations," in text and "model hours" in text and "reference p = 0.0076" in text
    assert not small_db.with_suffix(".report").exists()  # --figures honoured


def test_report_default_folder(small_db, capsys):
    assert cli.main(["report", str(small_db)]) == 0
    for f in FIGURES:
        _assert_png(small_db.with_suffix(".report") / f)
    assert "figures:" in capsys.readouterr().out


def test_export_netcdf_holds_every_full_path(small_db, tmp_path):
    import xarray as xr
    nc = tmp_path / "out.nc"
    assert cli.main(["export", str(small_db), "--format", "netcdf", "--out", str(nc)]) == 0
    with xr.open_dataset(nc, engine="h5netcdf") as ds, Database(small_db) as db:
        assert ds["x"].attrs["units"] == "m" and ds["x"].attrs["long_name"] == "first coordinate"
        assert ds.attrs["Conventions"] == "CF-1.8"
        n_traj = sum(db.trajectory_ids(r).size for r in range(db.n_replicas))
        assert ds.sizes["trajectory"] == n_traj
        np.testing.assert_array_equal(ds["estimate"].values, db.estimates())
        for r in range(db.n_replicas):
            sel = np.flatnonzero(ds["replica_of_trajectory"].values == r)
            ids = ds["traj_id"].values[sel]
            # the weights of a finished replica sum to one
            assert ds["weight"].values[sel].sum() == pytest.approx(1.0, rel=1e-12)
            np.testing.assert_array_equal(ds["level"].values[r, :db.iterations(r)["level"].size],
                                          db.iterations(r)["level"])
            children = sel[ds["parent"].values[sel] >= 0]
            for i in list(sel[:2]) + list(children[-3:]):
                t = db.trajectory(int(ds["traj_id"].values[i]), r)
                n = int(ds["length"].values[i])
                assert n == t.steps.size
                assert ds["score"].values[i, :n].tobytes() == t.scores.tobytes()
                assert ds["time"].values[i, :n].tobytes() == t.times.tobytes()
                assert ds["x"].values[i, :n].tobytes() == t.observables[:, 0].tobytes()
                assert ds["y"].values[i, :n].tobytes() == t.observables[:, 1].tobytes()
                assert np.isnan(ds["score"].values[i, n:]).all()
            assert set(ids.tolist()) == set(db.trajectory_ids(r).tolist())


def test_export_csv(small_db, tmp_path):
    out = tmp_path / "csv"
    assert cli.main(["export", str(small_db), "--format", "csv", "--out", str(out)]) == 0
    with Database(small_db) as db:
        rows = {}
        with open(out / "steps.csv") as fh:
            for row in csv.DictReader(fh):
                rows.setdefault((int(row["replica"]), int(row["traj_id"])), []).append(row)
        assert len(rows) == sum(db.trajectory_ids(r).size for r in range(db.n_replicas))
        for (r, tid) in list(rows)[:: max(1, len(rows) // 5)]:
            t = db.trajectory(tid, r)
            got = rows[(r, tid)]
            assert [int(x["step"]) for x in got] == t.steps.tolist()
            assert np.array_equal([float(x["score"]) for x in got], t.scores)
            assert np.array_equal([float(x["x"]) for x in got], t.observables[:, 0])
        with open(out / "replicas.csv") as fh:
            est = [float(x["estimate"]) for x in csv.DictReader(fh)]
        np.testing.assert_array_equal(est, db.estimates())


# --- return times against the exact discrete OU chain ----------------------------------------
def _cdf(z):
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0)))


def _propagate(thresholds, dt, n_steps, sigma, x0, dx, lo):
    s = sigma * math.sqrt(dt)
    m = int(round((max(thresholds) - lo) / dx))
    edges = lo + dx * np.arange(m + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    # K[i, j] = P(next state in cell j | state at the centre of cell i)
    kernel = np.diff(_cdf((edges[None, :] - centers[:, None] * (1 - dt)) / s), axis=1)
    f1 = np.diff(_cdf((edges - x0 * (1 - dt)) / s))  # step 1, exact from x0
    out = []
    for a in thresholds:
        k = int(round((a - lo) / dx))  # the cells below a: what reaches a is absorbed
        f, K = f1[:k], kernel[:k, :k]
        for _ in range(n_steps - 1):
            f = f @ K
        out.append(1.0 - f.sum())
    return np.array(out)


def ou_exceedance_reference(thresholds, dt=0.01, n_steps=500, sigma=0.5, x0=0.0, lo=-2.5):
    """P(max_{s=1..n} x_s >= a) for x_{s+1} = x_s - dt x_s + sigma sqrt(dt) xi_s: the
    transition density propagated on cells of width dx below a, Richardson-extrapolated
    from dx = 0.01 and 0.005 (the error is O(dx^2)); 5.4592e-4 at a = 1.5 against the
    5.4596e-4 of docs/references.md."""
    coarse = _propagate(thresholds, dt, n_steps, sigma, x0, 0.01, lo)
    fine = _propagate(thresholds, dt, n_steps, sigma, x0, 0.005, lo)
    return (4 * fine - coarse) / 3


OU = dict(seed=7, replicas=16,
          model={"adapter": "python", "step": "adapters.examples.ou:step", "initial_state": [0.0],
                 "dt": 0.01, "noise_dim": 1, "observables": ["x"], "parameters": {"sigma": 0.5}},
          score={"function": "adapters.examples.ou:score", "target": 1.0,
                 "parameters": {"level": 1.5}},
          tams={"trajectories": 24, "kill_per_iteration": 1, "horizon": 5.0, "segment_steps": 500})


@pytest.mark.slow  # statistical: a return-time curve against the exact chain, ~1.5 min
def test_ou_return_times_match_the_exact_chain(tmp_path, capsys):
    path = write_campaign(tmp_path, "ou", **OU)
    db_path = tmp_path / "ou.h5"
    Driver(config.load(path), db_path=str(db_path)).run()
    a = np.round(np.arange(0.5, 1.501, 0.1), 10)
    ref = ou_exceedance_reference(a)
    assert ref[-1] == pytest.approx(5.4596e-4, rel=2e-3)
    with Database(db_path) as db:
        rt = return_times(db, "x", a)
    r_ref = return_time(ref, 5.0)
    with capsys.disabled():
        print("\n  a      p_ref      p_tams    s.e.   (p-ref)/se   r_ref     r_tams   95 % CI of r")
        for i in range(a.size):
            print(f"{a[i]:4.1f} {ref[i]:10.4g} {rt.p[i]:10.4g} {rt.p_stderr[i]:8.2g} "
                  f"{(rt.p[i] - ref[i]) / rt.p_stderr[i]:+8.2f} {r_ref[i]:9.4g} {rt.r[i]:9.4g} "
                  f"[{rt.r_low[i]:.4g}, {rt.r_high[i]:.4g}]")
    assert r_ref.max() / r_ref.min() > 100  # at least two decades of return time
    inside = (rt.r_low <= r_ref) & (r_ref <= rt.r_high)  # the 95 % error bars of the figure
    assert inside.all(), f"outside the error bars at a = {a[~inside]}"
