"""The Python API (orchestrator/api.py, docs/python-api.md) drives the same code as `tams run`."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import orchestrator as tams
from conftest import REPO, assert_same, digest, write_campaign
from orchestrator.errors import ConfigError
from orchestrator.runtime.inline import InlineExecutor


def test_the_documented_example_runs(in_tmp):
    """docs/python-api.md's example, executed as written."""
    doc = (REPO / "docs" / "python-api.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    out = io.StringIO()
    ns: dict = {"__name__": "docs_example", "print": lambda *a, **k: print(*a, file=out, **k)}
    exec(compile(code, "docs/python-api.md", "exec"), ns)
    text = out.getvalue()
    assert re.search(r"RunResult\('campaign': p = \S+ ± \S+, 95 % CI \[\S+, \S+\], 4 replicas\)",
                     text), text
    assert "16 0.95 finished" in text
    assert (in_tmp / "api-example.h5").exists()
    res = ns["result"]
    assert res.estimates.shape == (4,) and res.cost["model_steps"] > 0
    assert 0 <= res.ci[0] <= res.mean <= res.ci[1] <= 1


def test_dict_yaml_and_callables_give_the_same_database(tmp_path, monkeypatch):
    """One campaign three ways: `tams run` on a YAML, the API on the dict, and the API with
    the functions themselves instead of their import paths: bitwise the same results."""
    from adapters.examples import doublewell2d as dw
    path = write_campaign(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "-q", str(path),
                           "--db", "cli.h5"], capture_output=True).returncode == 0
    data = yaml.safe_load(path.read_text())
    tams.run(data, db="dict.h5", progress=False)
    data["model"]["step"] = dw.step
    data["score"]["function"] = dw.score
    res = tams.run(data, db="callables.h5", progress=False)
    ref = digest(tmp_path / "cli.h5")
    assert_same(ref, digest(tmp_path / "dict.h5"))
    assert_same(ref, digest(tmp_path / "callables.h5"))
    assert res.db_path == Path("callables.h5")


def test_in_memory_inline_run_equals_the_file(tmp_path, monkeypatch):
    """MemoryStore + in-process executor (what the statistical tests use) == HDF5 + threads."""
    path = write_campaign(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = tams.run(path, in_memory=True, executor=InlineExecutor(), progress=False,
                   run_dir=tmp_path / "mem.run")
    assert res.db_path is None and not (tmp_path / "camp.h5").exists()
    tams.run(path, db="file.h5", progress=False)
    with res.database() as db:
        assert db.meta.n == 10 and db.run_state().state == "finished"
        assert db.trajectory(0, 0).steps[0] == 1
    assert_same(digest(tmp_path / "file.h5"), digest(res.store))


def test_lambdas_work_with_threads(tmp_path, monkeypatch):
    from adapters.examples import doublewell2d as dw
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(write_campaign(tmp_path).read_text())
    data["score"]["function"] = lambda t, obs: dw.score(t, obs)
    res = tams.run(data, in_memory=True, progress=False, run_dir=tmp_path / "l.run")
    assert all(r.outcome == "converged" for r in res.replicas)


def test_progress_line_and_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    res = tams.run(write_campaign(tmp_path), db="p.h5", tams__trajectories=6, replicas=1)
    err = capsys.readouterr().err
    assert "\rTAMS" in err and "replicas 1/1 done" in err and err.endswith("\n")
    with res.database() as db:
        assert db.meta.n == 6 and db.n_replicas == 1


def test_bad_campaign_is_one_sentence(tmp_path):
    data = yaml.safe_load(write_campaign(tmp_path).read_text())
    data["tams"]["trajectories"] = 1
    with pytest.raises(ConfigError, match=r"key tams\.trajectories: must be an integer >= 2"):
        tams.load_campaign(data)
    with pytest.raises(TypeError):
        tams.load_campaign(42)


def test_unknown_algorithm_is_one_sentence(tmp_path, monkeypatch):
    """The driver takes its replica state machine from the `tams.algorithms` entry points."""
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(write_campaign(tmp_path).read_text())
    data["algorithm"] = "nope"
    with pytest.raises(ConfigError, match=r"key algorithm: unknown algorithm 'nope'; use one of "
                                          r"\['gklt', 'montecarlo', 'tams'\]"):
        tams.run(data, in_memory=True, progress=False)
    assert not list(tmp_path.glob("*.h5"))


def test_inline_executors_never_share_a_closed_pool(tmp_path, monkeypatch):
    """Two in-process runs one after the other in one process (the statistical tests' batches):
    the second must not find the first executor's closed model pool."""
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(write_campaign(tmp_path, replicas=1).read_text())
    for i in range(3):
        ex = InlineExecutor()
        res = tams.run(data, in_memory=True, progress=False, executor=ex,
                       run_dir=tmp_path / f"r{i}")
        assert res.replicas[0].outcome == "converged"
        del ex
