"""The executable adapter against the Fortran 2-D double well (containers/doublewell2d): with
`noise: file` it reproduces the python adapter's model bit for bit, one segment and a whole
campaign; the namelist writer produces a request the Fortran model reads exactly."""
from __future__ import annotations

import numpy as np
import pytest

from adapters.executable import ExecutableModel, ExecutableModelConfig, namelist
from adapters.python import PythonModel, PythonModelConfig
from conftest import REPO, assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.core import noise as nz
from orchestrator.model import SegmentRequest
from orchestrator.runtime.driver import Driver

DW2D = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d"
pytestmark = pytest.mark.skipif(not DW2D.exists(), reason="build the models: make -C containers")

FORTRAN_MODEL = {"adapter": "executable", "executable": str(DW2D), "dt": 0.01, "noise": "file",
                 "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 50,
                 "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}


def fortran(**kw) -> ExecutableModel:
    return ExecutableModel(ExecutableModelConfig(**{**FORTRAN_MODEL, **kw}), str(REPO))


def python_model() -> PythonModel:
    cfg = PythonModelConfig(adapter="python", step="adapters.examples.doublewell2d:step",
                            initial_state=[-1.0, 0.0], dt=0.01, noise_dim=2,
                            observables=["x", "y"], parameters={"eps": 0.1})
    return PythonModel(cfg, str(REPO))


def request(workdir, start, n=200, params=None, step0=0, every=50) -> SegmentRequest:
    key = nz.trajectory_key(11, 0, 3)
    return SegmentRequest(workdir=str(workdir), start=start, step0=step0, n_steps=n, dt=0.01,
                          checkpoint_every=every, noise=nz.step_noise(key, step0 + 1, n, 2),
                          parameters=params or {}, timeout=30)


def test_first_segment_matches_python_adapter(tmp_path):
    py = python_model()
    a = py.run_segment(request(tmp_path / "py", py.initial_state(str(tmp_path / "init"))))
    b = fortran().run_segment(request(tmp_path / "f90", None, params=FORTRAN_MODEL["parameters"]))
    assert np.array_equal(a.steps, b.steps)
    np.testing.assert_allclose(b.observables, a.observables, rtol=1e-12, atol=0)
    assert b.observables.shape == (200, 2) and np.ptp(b.observables[:, 0]) > 0
    # the Fortran checkpoints: every 50 steps, each one a file in the segment directory
    assert b.checkpoints.steps.tolist() == [50, 100, 150, 200]
    assert all((tmp_path / "f90" / f"ckpt_{s:08d}.bin").stat().st_size > 0 for s in (50, 200))
    assert (tmp_path / "f90" / "done.json").exists()


def test_restart_from_checkpoint_continues_exactly(tmp_path):
    m = fortran()
    whole = m.run_segment(request(tmp_path / "a", None, n=200))
    first = m.run_segment(request(tmp_path / "b", None, n=100))
    rest = m.run_segment(request(tmp_path / "c", first.checkpoints.ref(1), n=100, step0=100))
    assert first.checkpoints.steps[1] == 100
    assert whole.observables[100:].tobytes() == rest.observables.tobytes()


def _without_checkpoints(d: dict) -> dict:
    """Checkpoints differ by design (python: every step; Fortran: every 50), and so does the
    step a child restarts from (the checkpoint at or before its branch step)."""
    return {k: v for k, v in d.items() if "/checkpoints/" not in k and not k.endswith("/start_step")}


@pytest.mark.slow  # two full campaigns
def test_campaign_matches_python_campaign(tmp_path):
    py = write_campaign(tmp_path, "py", replicas=2, tams__trajectories=10, tams__segment_steps=200)
    f90 = write_campaign(tmp_path, "f90", replicas=2, tams__trajectories=10, tams__segment_steps=200,
                         model=FORTRAN_MODEL, runner__workers=2)
    Driver(config.load(py), db_path=str(tmp_path / "py.h5")).run()
    Driver(config.load(f90), db_path=str(tmp_path / "f90.h5")).run()
    a = _without_checkpoints(digest(tmp_path / "py.h5"))
    b = _without_checkpoints(digest(tmp_path / "f90.h5"))
    assert_same(a, b)
    for r in (0, 1):  # a real run: iterations, some branching, a positive estimate
        assert a[f"{r}/summary"][1] >= 3 and 0 < a[f"{r}/summary"][4] < 1


def test_namelist_writer_quotes_and_floats():
    text = namelist({"segment": {"s": "it's", "e": "", "f": 0.1, "g": 1e-05, "n": 3, "b": True},
                     "parameters": {}})
    assert text == ("&segment\n  s = 'it''s',\n  e = '',\n  f = 0.1,\n  g = 1e-05,\n  n = 3,\n"
                    "  b = .true.,\n/\n&parameters\n/\n")


def test_fortran_reads_the_namelist_exactly(tmp_path):
    """Quoted strings (a quote inside a name) and floats that need all 17 digits reach the
    Fortran model intact: the checkpoint and trace names it writes carry the quote, and its
    numbers equal the python model's with the same awkward parameters."""
    x0, eps, dt = -1.0000000000000002, 0.1 + 0.2 - 0.2, 0.009999999999999998
    m = fortran(checkpoint_prefix="it's ck_", trace_file="tr'ace \"x\".txt",
                parameters={"eps": eps, "x0": x0, "y0": 1e-17})
    req = request(tmp_path / "seg", None, n=60, params={"eps": eps, "x0": x0, "y0": 1e-17})
    req = SegmentRequest(**{**req.__dict__, "dt": dt})
    res = m.run_segment(req)
    assert (tmp_path / "seg" / "it's ck_00000050.bin").exists()
    assert (tmp_path / "seg" / "tr'ace \"x\".txt").exists()
    # the same numbers in python, in the Fortran model's order of operations
    from adapters.examples.doublewell2d import step
    state = (x0, 1e-17)
    for i in range(60):
        state = step(state, 0.0, dt, req.noise[i], eps=eps)
        assert res.observables[i].tolist() == list(state)
