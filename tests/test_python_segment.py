"""The python adapter's `segment` fast path gives the same bits as the `step` function it
stands for (so the statistical tests, which use it for speed, test what `step` campaigns run)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import orchestrator as tams
from conftest import assert_same, digest
from orchestrator.errors import CampaignFailed, ConfigError
from orchestrator.runtime.inline import InlineExecutor


def _campaign(fn_key: str, fn: str, noise: str = "file", every: int = 1, seg: int = 1000) -> dict:
    return {"seed": 4, "replicas": 3,
            "model": {"adapter": "python", fn_key: fn, "initial_state": [-1.0], "dt": 0.01,
                      "noise": noise, "checkpoint_every": every, "observables": ["x"],
                      "parameters": {"eps": 0.04}},
            "score": {"function": "adapters.examples.doublewell1d:score", "target": 0.95},
            "tams": {"trajectories": 16, "kill_per_iteration": 2, "horizon": 10.0,
                     "segment_steps": seg}}


@pytest.mark.parametrize("noise,every,seg", [("file", 1, 1000), ("file", 10, 64), ("seed", 10, 250)])
def test_segment_function_is_bitwise_the_step_function(tmp_path, noise, every, seg):
    out = []
    for key, fn in (("step", "adapters.examples.doublewell1d:step"),
                    ("segment", "adapters.examples.doublewell1d:segment")):
        res = tams.run(_campaign(key, fn, noise, every, seg), in_memory=True, progress=False,
                       executor=InlineExecutor(), run_dir=tmp_path / key)
        out.append(digest(res.store))
    assert_same(out[0], out[1])
    assert out[0]["0/steps/step"].size > 1000


def test_step_or_segment_exactly_one(tmp_path):
    data = _campaign("step", "adapters.examples.doublewell1d:step")
    data["model"]["segment"] = "adapters.examples.doublewell1d:segment"
    with pytest.raises(ConfigError, match="give exactly one of model.step"):
        tams.load_campaign(data)


def _bad_segment(state, t0, dt, noise, eps=0.04):
    return np.zeros(3), np.zeros(3)


def test_a_wrong_shape_is_one_sentence(tmp_path):
    res = None
    with pytest.raises(CampaignFailed, match=r"returned states of shape \(3,\) and observables "
                                             r"of shape \(3, 1\); both need one row per step"):
        res = tams.run(_campaign("segment", _bad_segment), in_memory=True, progress=False,
                       executor=InlineExecutor(), run_dir=tmp_path / "bad")
    assert res is None


@pytest.mark.parametrize("every", [1, 50])
def test_a_file_cut_short_by_a_crash_is_not_a_finished_segment(tmp_path, every):
    """The adapter writes its records in place (no rename): a record a crash cut short must
    make `collect` report no finished segment, so that the segment runs again -- and the
    next segment of the trajectory, appended to the same file, must not be lost to it."""
    from test_executable import python_model, request

    model = python_model()
    req = request(tmp_path / "s00000000", model.initial_state(str(tmp_path)), every=every)
    req = dataclasses.replace(req, trajectory=str(tmp_path / "t0000000"))
    res = model.run_segment(req)
    again = model.collect(req)
    assert again is not None
    assert np.array_equal(again.observables, res.observables)
    record = tmp_path / "t0000000.f64"
    assert not (tmp_path / "t0000000").exists()  # no directory per trajectory
    data = record.read_bytes()
    record.write_bytes(data[:-8])
    assert model.collect(req) is None
    record.write_bytes(data[:100])
    assert model.collect(req) is None
    # run again over the cut file: the same bytes; then a second segment appends its record
    model.run_segment(req)
    assert record.read_bytes() == data
    last = res.checkpoints.ref(res.checkpoints.steps.size - 1)
    nxt = dataclasses.replace(req, workdir=str(tmp_path / f"s{req.n_steps:08d}"), start=last,
                              step0=req.n_steps)
    res2 = model.run_segment(nxt)
    assert record.read_bytes()[:len(data)] == data
    assert len(record.read_bytes()) > len(data)
    assert res2.checkpoints.index[0] > res.checkpoints.index[-1]
    assert model.collect(req) is not None and model.collect(nxt) is not None


def _mutating_step(state, t, dt, noise, eps=0.04):
    """The 1-D double well, written as a step that updates its input array in place."""
    x = state[0]
    state[0] = x + dt * (x - x * x * x) + np.sqrt(2.0 * eps * dt) * noise[0]
    return state


def _copying_step(state, t, dt, noise, eps=0.04):
    return _mutating_step(np.array(state, dtype=np.float64), t, dt, noise, eps)


@pytest.mark.parametrize("seg", [1000, 64])
def test_start_states_kept_in_memory_are_never_shared_with_the_step(tmp_path, seg):
    """The adapter keeps the initial state and each segment's last state in memory for the
    next segment (a read saved per segment); a step that writes into the state it is given
    must not change what the next segment, or a child, starts from."""
    out = []
    for name, fn in (("mutating", _mutating_step), ("copying", _copying_step)):
        data = _campaign("step", fn, seg=seg)
        res = tams.run(data, in_memory=True, progress=False, executor=InlineExecutor(),
                       run_dir=tmp_path / name)
        out.append(digest(res.store))
    assert_same(out[0], out[1])
    assert out[0]["0/steps/step"].size > 1000
