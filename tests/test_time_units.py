"""Issue #11, item 3: `model.time_units` (e.g. days) reaches the report, its figures' axes, the
database metadata and the netCDF export's CF `units`; a database made before the key still
reads, and says "model time units"."""
from __future__ import annotations

import json

import pytest

from conftest import write_campaign
from orchestrator.core.meta import CampaignMeta
from orchestrator.store import Database
from test_cli_fixes import tams


@pytest.fixture(scope="module")
def days_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("days")
    path = write_campaign(tmp, tams__segment_steps=400, model__time_units="days", replicas=2)
    assert tams(tmp, "run", "-q", path.name).returncode == 0
    return tmp, tmp / "camp.h5"


@pytest.mark.slow
def test_time_units_in_report_metadata_and_export(days_db):
    tmp, db = days_db
    with Database(db) as d:
        assert d.meta.time_units == "days" and d.meta.time_label == "days"
    res = tams(tmp, "report", "--no-figures", "--return-times", "score", db.name)
    assert res.returncode == 0, res
    assert "horizon T = 4 days (400 steps of dt = 0.01)" in res.stdout, res.stdout
    assert "over T = 4 (days)" in res.stdout
    assert tams(tmp, "export", db.name).returncode == 0
    import xarray as xr
    with xr.open_dataset(tmp / "camp.nc", engine="h5netcdf", decode_times=False) as ds:
        assert ds["time"].attrs["units"] == "days"
        assert ds.attrs["time_units"] == "days"


@pytest.mark.slow
def test_figures_carry_the_units(days_db):
    from orchestrator.cli import report as rep
    tmp, db = days_db
    labels = []
    import matplotlib.axes
    orig = matplotlib.axes.Axes.set_xlabel

    def spy(self, text, *a, **k):
        labels.append(text)
        return orig(self, text, *a, **k)

    matplotlib.axes.Axes.set_xlabel = spy
    try:
        with Database(db) as d:
            rep.make_figures(d, tmp / "figs")
    finally:
        matplotlib.axes.Axes.set_xlabel = orig
    assert "time (days)" in labels and "first-passage time (days)" in labels, labels


@pytest.mark.slow
def test_a_database_made_before_the_key_still_reads(days_db, tmp_path):
    """The metadata JSON of an older database has no time_units: it loads, labelled as before."""
    _, db = days_db
    with Database(db) as d:
        old = json.loads(d.meta.to_json())
    del old["time_units"]
    meta = CampaignMeta.from_json(json.dumps(old))
    assert meta.time_units == "" and meta.time_label == "model time units"


def test_blank_time_units_is_one_clear_error(tmp_path):
    path = write_campaign(tmp_path, model__time_units=" ")
    res = tams(tmp_path, "check", path.name)
    assert res.returncode == 2 and "model.time_units" in res.stderr and "\n" not in \
        res.stderr.strip(), res.stderr
