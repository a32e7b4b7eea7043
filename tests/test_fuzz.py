"""Property-based fuzzing (hypothesis, bounded): bad input never gives a traceback.

* random campaign YAML (a valid campaign mutated: keys dropped, wrong types, random strings,
  huge or negative numbers, or random YAML text) → ``tams check``: exit 0, or exit 2 with
  exactly one stderr line; nothing written on disk either way;
* random model outputs (trace lines garbled, NaN, missing, duplicated; checkpoints empty or
  missing) → ``ExecutableModel.ingest``: a ``ModelRunError`` or a ``SegmentResult``
  consistent with the trace;
* random damage to a finished campaign's database (truncated at a random byte, or random
  bytes flipped) → ``tams status`` / ``report`` / ``check-db``: exit 0 or 2, no traceback;
  ``tams run`` on it either resumes to the undisturbed result or exits 2 with one line and
  leaves the damaged file as it was.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, assert_same, digest, write_campaign
from orchestrator import config as cfg
from orchestrator.cli import main
from orchestrator.model import ModelRunError, SegmentRequest, SegmentResult

pytestmark = pytest.mark.slow  # hundreds of hypothesis examples, ~30 s

def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- 1. campaign YAML --------------------------------------------------------------------
def _valid() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return yaml.safe_load(write_campaign(Path(tmp)).read_text())


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([10**30, -1, 0, 1e308, -1e-300]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@st.composite
def campaigns(draw) -> str:
    if draw(st.integers(0, 9)) == 0:  # random text, YAML or not
        return draw(st.text(max_size=200))
    data = _valid()
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.integers(0, 2))
        if op == 0:
            del parent[path[-1]]
        elif op == 1:
            parent[path[-1]] = draw(SCALARS)
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(SCALARS)
    return yaml.safe_dump(data, sort_keys=False)


@fuzz(40)
@given(text=campaigns())
def test_fuzz_campaign_yaml(text):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = d / "camp.yaml"
        path.write_text(text)
        before = _tree(d)
        old = os.getcwd()
        os.chdir(d)
        try:
            rc, out, err = _cli(["check", str(path)])
        finally:
            os.chdir(old)
        assert "Traceback" not in err + out
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            assert len(err.strip().splitlines()) == 1, err
        assert _tree(d) == before, "tams check wrote something"


# --- 2. model outputs --------------------------------------------------------------------
@pytest.fixture(scope="module")
def exe_model():
    from adapters.executable import ExecutableModel
    loaded = cfg.load(REPO / "configs" / "doublewell2d-fortran.yaml")
    return ExecutableModel(loaded.model, loaded.base_dir)


@st.composite
def outputs(draw):
    step0 = draw(st.integers(0, 20))
    n = draw(st.integers(1, 12))
    ce = draw(st.integers(1, 6))
    rows = [[step0 + i + 1, (step0 + i + 1) * 0.01, draw(st.floats(-5, 5)), draw(st.floats(-5, 5))]
            for i in range(n)]
    lines = [" ".join(repr(float(v)) if j else str(int(v)) for j, v in enumerate(r)) for r in rows]
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 6))
        i = draw(st.integers(0, len(lines))) if lines else 0
        if op == 0 and lines:
            lines.pop(min(i, len(lines) - 1))
        elif op == 1 and lines:
            lines.insert(i, lines[min(i, len(lines) - 1)])  # duplicated
        elif op == 2 and lines:
            w = lines[min(i, len(lines) - 1)].split()
            w[draw(st.integers(0, len(w) - 1))] = draw(st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "x", ""]))
            lines[min(i, len(lines) - 1)] = " ".join(w)
        elif op == 3:
            lines.insert(i, draw(st.text(max_size=30)))
        elif op == 4 and lines:
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]  # truncated
        elif op == 5:
            lines.insert(i, " ".join(str(draw(st.floats(allow_nan=True))) for _ in range(draw(st.integers(0, 6)))))
        elif op == 6 and lines:
            lines = lines[::-1]
    ckpts = draw(st.lists(st.sampled_from(["ok", "ok", "ok", "empty", "missing"]), min_size=n, max_size=n))
    trace = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))
    return step0, n, ce, rows, trace, ckpts


@fuzz(120)
@given(case=outputs())
def test_fuzz_model_outputs(exe_model, case):
    step0, n, ce, rows, trace, ckpts = case
    with tempfile.TemporaryDirectory() as wd:
        req = SegmentRequest(workdir=wd, start=None, step0=step0, n_steps=n, dt=0.01,
                             checkpoint_every=ce, noise=None, seed=1)
        Path(wd, exe_model.config.trace_file).write_text(trace)
        for s, kind in zip(req.promised_checkpoints().tolist(), ckpts):
            p = Path(wd, exe_model._ckpt_name(int(s)))
            if kind != "missing":
                p.write_bytes(b"" if kind == "empty" else b"state")
        try:
            res = exe_model.ingest(req)
        except ModelRunError as exc:
            assert str(exc).strip()
            return
        assert isinstance(res, SegmentResult)
        assert res.steps.tolist() == list(range(step0 + 1, step0 + n + 1))
        assert np.isfinite(res.observables).all()
        # consistent with the trace: its numeric rows are exactly these
        table = np.array(trace.split(), dtype=np.float64).reshape(n, 4)
        assert np.array_equal(table[:, 0], res.steps)
        assert np.array_equal(table[:, 2:], res.observables)
        for f in res.checkpoints.files:
            assert os.path.getsize(f) > 0


# --- 3. damaged databases ----------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from orchestrator.runtime.driver import Driver
    tmp = tmp_path_factory.mktemp("fuzzdb")
    path = write_campaign(tmp, replicas=1, tams__trajectories=8, tams__horizon=2.0,
                          database__run_dir=str(tmp / "states"))
    db = tmp / "ok.h5"
    Driver(cfg.load(path), db_path=str(db)).run()
    return path, db, digest(db)


@st.composite
def damage(draw):
    if draw(st.booleans()):
        return ("truncate", draw(st.floats(0, 1)))
    return ("flip", draw(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=20)))


def _damage(src: Path, dst: Path, how) -> None:
    data = bytearray(src.read_bytes())
    if how[0] == "truncate":
        data = data[: int(how[1] * len(data))]
    else:
        for pos, x in how[1]:
            i = min(int(pos * len(data)), len(data) - 1)
            data[i] ^= x
    dst.write_bytes(bytes(data))


@fuzz(25)
@given(how=damage())
def test_fuzz_damaged_database_readers(finished, how):
    _, db, _ = finished
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp, "bad.h5")
        _damage(db, bad, how)
        for argv in (["status", str(bad)], ["report", str(bad), "--no-figures"], ["check-db", str(bad)]):
            try:
                rc, out, err = _cli(argv)
            except Exception as exc:  # noqa: BLE001 - this is the finding
                raise AssertionError(f"tams {argv[0]} on {how}: {type(exc).__name__}: {exc}") from exc
            assert rc in (0, 2), (argv, rc, err)
            assert "Traceback" not in out + err
            if argv[0] != "check-db" and rc == 2:
                assert len(err.strip().splitlines()) == 1, (argv, err)


@fuzz(12)
@given(how=damage())
def test_fuzz_damaged_database_run(finished, how):
    path, db, ref = finished
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copytree(Path(db).parent / "states", d / "states")
        data = yaml.safe_load(Path(path).read_text())
        data["database"]["run_dir"] = str(d / "states")
        camp = d / "camp.yaml"
        camp.write_text(yaml.safe_dump(data))
        bad = d / "bad.h5"
        _damage(db, bad, how)
        damaged = bad.read_bytes()
        try:
            rc, out, err = _cli(["run", str(camp), "--db", str(bad), "-q"])
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"tams run on {how}: {type(exc).__name__}: {exc}") from exc
        assert "Traceback" not in out + err
        if rc == 0:
            assert _cli(["check-db", str(bad)])[0] == 0
            assert_same(ref, digest(bad))
        else:
            assert rc == 2, (rc, err)
            assert len(err.strip().splitlines()) == 1, err
            assert bad.read_bytes() == damaged, "tams run changed the damaged database"
