"""Montecarlo and GKLT keep the determinism promise (DESIGN §5): the same seed gives the same
database bit for bit with 1 or 2 workers, and after clean stops at arbitrary segments (file and seed noise) and
resumes (GKLT: stops inside resampling intervals and between them), through the real driver,
Parsl's thread pool and the HDF5 store."""
from __future__ import annotations

import pytest

from conftest import assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.runtime.driver import Driver

pytestmark = pytest.mark.slow  # five small campaigns per algorithm through Parsl: ~5 s

GKLT = {"k": 2.0, "observable": "x", "resample_every": 40, "threshold": 0.2}


def campaign(tmp_path, algorithm: str, **over):
    extra = {"gklt": GKLT} if algorithm == "gklt" else {}
    return write_campaign(tmp_path, name=algorithm, algorithm=algorithm,
                          tams__trajectories=8, tams__kill_per_iteration=1,
                          tams__horizon=3.0, tams__segment_steps=30,  # segments cross resamplings
                          model__checkpoint_every=7, **extra, **over)


def run(path, db, **kw):
    Driver(config.load(path), db_path=str(db), **kw).run()
    return digest(db)


@pytest.mark.parametrize("algorithm, noise", [("montecarlo", "file"), ("gklt", "file"),
                                              ("gklt", "seed")])
def test_same_bits_with_workers_and_resumes(tmp_path, algorithm, noise):
    ref = run(campaign(tmp_path, algorithm, model__noise=noise), tmp_path / "ref.h5")
    for r in (0, 1):
        assert ref[f"{r}/summary"][0] == 1  # finished
    if algorithm == "gklt":
        assert ref["0/iterations/iteration"].size == 7  # resamplings at 40, 80, ..., 280 < 300
        assert (ref["0/trajectories/status"] == 4).any()  # some members got no copy
    two = campaign(tmp_path, algorithm, runner__workers=2, model__noise=noise)
    assert_same(ref, run(two, tmp_path / "two.h5"))
    path = campaign(tmp_path, algorithm, model__noise=noise)
    db = tmp_path / "part.h5"
    for stop in (5, 13, 29):  # clean stops, then a resume to the end
        part = run(path, db, max_segments=stop)
        assert part["0/steps/step"].size < ref["0/steps/step"].size
    assert_same(ref, run(path, db))


@pytest.mark.parametrize("algorithm", ["montecarlo", "gklt"])
def test_report_of_the_other_algorithms(tmp_path, algorithm, capsys):
    """`tams report` on a finished montecarlo / gklt database: its estimate line, its
    diagnostics table (montecarlo) or return-time table (gklt), and the figures."""
    from orchestrator.cli.report import report
    db = tmp_path / "r.h5"
    run(campaign(tmp_path, algorithm), db)
    assert report(db, figures=tmp_path / "fig") == 0
    out = capsys.readouterr().out
    if algorithm == "montecarlo":
        assert "(Wilson)" in out and "level crossing P(max score >= z)" in out
        assert (tmp_path / "fig" / "level_crossing.png").stat().st_size > 0
        assert (tmp_path / "fig" / "composite.png").stat().st_size > 0
    else:
        assert "P(time average of x over T >= 0.2)" in out
        assert "probability and return time of the time average of x" in out
        assert (tmp_path / "fig" / "return_times.png").stat().st_size > 0
