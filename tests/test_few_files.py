"""Cheap models at the speed of the model (issue 15): the binary trace and the one-file
checkpoints of protocol v1's optional parts, on the real Fortran and C example models.

The same seed gives bitwise the same database with a text or a binary trace, and with a file
per checkpoint or one checkpoint file per segment (only where a state lies -- the checkpoint's
file and index -- differs); a model that breaks either format gets one sentence naming it."""
from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_same, digest, write_campaign
from orchestrator import config
from orchestrator.core import noise as nz
from orchestrator.model import ModelRunError, SegmentRequest
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database
from test_executable import DW2D, FORTRAN_MODEL, fortran

AMOC = REPO / "containers" / "amoc-box" / "bin" / "amoc-box"
pytestmark = pytest.mark.skipif(not (DW2D.exists() and AMOC.exists()),
                                reason="build the models: make -C containers")

AMOC_MODEL = {"adapter": "executable", "executable": str(AMOC), "dt": 0.01, "noise": "seed",
              "noise_dim": 1, "observables": ["q", "y"], "checkpoint_every": 25,
              "parameters": {"mu2": 6.2, "pbar": 1.1, "sigma": 0.12}}
AMOC_SCORE = {"function": "adapters.examples.amoc:score", "target": 1.0}

VARIANTS = {"text, a file per checkpoint": {},
            "binary trace": {"trace_format": "binary", "trace_file": "trace.bin"},
            "checkpoint file": {"checkpoint_file": "checkpoints.bin"},
            "binary + checkpoint file": {"trace_format": "binary", "trace_file": "trace.bin",
                                         "checkpoint_file": "checkpoints.bin"}}


def _without_where(d: dict) -> dict:
    """A digest without the checkpoints' index (where a state lies inside its file)."""
    return {k: v for k, v in d.items() if not k.endswith("checkpoints/index")}


def _run(tmp_path: Path, name: str, model: dict, **kw) -> tuple[dict, Path]:
    path = write_campaign(tmp_path, name, model=model, runner__workers=2, **kw)
    db = tmp_path / f"{name}.h5"
    Driver(config.load(path), db_path=str(db)).run()
    return digest(db), db


@pytest.mark.slow  # 4 campaigns each
@pytest.mark.parametrize("which", ["fortran", "c"])
def test_binary_trace_and_checkpoint_file_give_the_same_database(tmp_path, which):
    base = FORTRAN_MODEL if which == "fortran" else AMOC_MODEL
    kw = {} if which == "fortran" else {"score": AMOC_SCORE, "tams__horizon": 10.0,
                                        "tams__segment_steps": 500}
    out = {}
    for label, extra in VARIANTS.items():
        name = label.replace(" ", "-").replace(",", "").replace("+", "and")
        out[label], db = _run(tmp_path, name, {**base, **extra}, **kw)
        with Database(db) as d:
            files = d.table(0, "files")["path"]
            n_ck = d.table(0, "checkpoints")["step"].size
            segs = d.table(0, "segments")["traj"].size
        if "checkpoint file" in label:  # one state file per segment, indexed in bytes
            assert files.size <= segs < n_ck
            assert all(p.decode().endswith("/checkpoints.bin") for p in files)
        else:
            assert files.size >= n_ck  # a file per checkpoint (replayed ones included)
        run_dir = tmp_path / f"{name}.run"
        if run_dir.exists():  # what the model left: the trace in the chosen format
            traces = list(run_dir.rglob("trace.*"))
            assert traces and all(t.suffix == (".bin" if "binary" in label else ".txt")
                                  for t in traces)
    ref = _without_where(out["text, a file per checkpoint"])
    assert int(ref["segments"]) > 10
    for d in out.values():
        assert_same(ref, _without_where(d))


def test_a_restart_from_a_record_of_the_checkpoint_file_is_exact(tmp_path):
    """Split a segment at a middle record of its checkpoint file: the second half gives the
    unsplit run's trace and states bit for bit (the Fortran model seeks to state_offset)."""
    m = fortran(checkpoint_file="checkpoints.bin", trace_format="binary", trace_file="trace.bin")
    key = nz.trajectory_key(5, 0, 1)

    def req(wd, start, step0, n):
        return SegmentRequest(workdir=str(tmp_path / wd), start=start, step0=step0, n_steps=n,
                              dt=0.01, checkpoint_every=50, timeout=30,
                              noise=nz.step_noise(key, step0 + 1, n, 2),
                              parameters=FORTRAN_MODEL["parameters"])
    full = m.run_segment(req("full", None, 0, 200))
    ck = full.checkpoints
    assert ck.steps.tolist() == [50, 100, 150, 200] and ck.index.tolist() == [0, 16, 32, 48]
    half = m.run_segment(req("half", ck.ref(1), 100, 100))
    assert np.array_equal(half.observables, full.observables[100:])
    assert m.state_bytes(half.checkpoints.ref(1)) == m.state_bytes(ck.ref(3))
    assert len(m.state_bytes(ck.ref(3)) or b"") == 16


def _script(tmp_path: Path, body: str) -> str:
    """A model written as a Python script (a real program run through the protocol)."""
    p = tmp_path / "model.py"
    p.write_text(f"#!{sys.executable}\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


BAD = """
import json, struct, sys
seg = json.load(open("request.json"))["segment"]
s0, n = seg["step0"], seg["n_steps"]
rows = [(float(s), s * 0.01, 1.0, 2.0) for s in range(s0 + 1, s0 + n + 1)]
what = "{what}"
if what == "short":
    rows = rows[:-1]
if what == "order":
    rows[3], rows[4] = rows[4], rows[3]
if what == "nan":
    rows[2] = (rows[2][0], rows[2][1], float("nan"), 2.0)
with open("trace.bin", "wb") as f:
    for r in rows:
        f.write(struct.pack("<4d", *r))
ck = seg.get("checkpoint_file")
if ck:
    with open(ck, "wb") as f:
        f.write(b"x" * (7 if what == "ragged" else 8 * (n // seg["checkpoint_every"])))
"""


@pytest.mark.parametrize("what,expect", [
    ("short", "holds 288 bytes, 9 rows; expected 10 rows (steps 1..10) of 4 little-endian float64"),
    ("order", "binary trace row 4 is step 5; expected step 4"),
    ("nan", "binary trace row 3 (step 3) holds a non-finite number"),
    ("ragged", "the checkpoint file checkpoints.bin holds 7 bytes, not 2 records of equal size"),
])
def test_a_broken_binary_trace_or_checkpoint_file_is_one_sentence(tmp_path, what, expect):
    exe = _script(tmp_path, BAD.replace("{what}", what))
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    m = ExecutableModel(ExecutableModelConfig(
        adapter="executable", executable=exe, dt=0.01, noise="seed", noise_dim=1,
        observables=["a", "b"], checkpoint_every=5, trace_format="binary",
        trace_file="trace.bin", checkpoint_file="checkpoints.bin"), str(tmp_path))
    req = SegmentRequest(workdir=str(tmp_path / "seg"), start=None, step0=0, n_steps=10,
                         dt=0.01, checkpoint_every=5, seed=3, timeout=30)
    with pytest.raises(ModelRunError) as err:
        m.run_segment(req)
    msg = str(err.value)
    assert expect in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


@pytest.mark.parametrize("script", ["docs/skeletons/verify.py", "containers/doublewell2d/verify.py",
                                    "containers/amoc-box/verify.py"])
def test_models_and_skeletons_pass_the_protocol_checks(script):
    """containers/protocol_v1.py's checks, the optional parts included (binary trace equal to
    the text one bit for bit, checkpoints.bin equal to the files, a restart at state_offset)."""
    import subprocess
    p = subprocess.run([sys.executable, str(REPO / script)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "D/E: binary trace and checkpoints.bin equal A's" in p.stdout
