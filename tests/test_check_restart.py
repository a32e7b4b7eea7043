"""`tams check` proves a model restarts exactly (issue #11, item 1).

The acceptance test: a variant of the Fortran example model that does not restore one state
variable (y) from its checkpoint, built here from containers/doublewell2d with one line
changed, fails `tams check` with the one sentence (first differing step, observable, usual
causes); the exact models (Fortran, C in seed mode, python) pass.  A model that is not
deterministic, one that reads a file besides its checkpoint on restart, and one whose trace
time is accumulated from the segment's start fail too, each with its own sentence.
"""
from __future__ import annotations

import math
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require, write_campaign
from orchestrator.cli.check import estimate_cost
from test_cli_fixes import tams

DW_SRC = REPO / "containers/doublewell2d/doublewell2d.f90"
RESTORE = "read(u, pos=state_offset + 1, iostat=ios, iomsg=msg) x, y\n"


def _fortran(tmp: Path, source: str, name: str) -> Path:
    require(shutil.which("gfortran") is not None, "gfortran is needed to build the variants")
    src = tmp / f"{name}.f90"
    src.write_text(source)
    exe = tmp / name
    subprocess.run(["gfortran", "-O2", "-ffp-contract=off", "-fwrapv", "-J", str(tmp), "-o",
                    str(exe), str(src)], check=True, capture_output=True)
    return exe


def _dw_campaign(tmp: Path, exe: Path, **over) -> Path:
    model = {"adapter": "executable", "executable": str(exe), "dt": 0.01, "noise": "file",
             "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 50,
             "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}
    model.update(over)
    return write_campaign(tmp, model=model)


def test_a_variable_not_restored_fails_with_the_sentence(tmp_path):
    text = DW_SRC.read_text()
    assert text.count(RESTORE) == 1
    exe = _fortran(tmp_path, text.replace(RESTORE, RESTORE.rstrip("\n") + "; y = y0\n"),
                   "dw_broken")
    path = _dw_campaign(tmp_path, exe)
    res = tams(tmp_path, "check", path.name)
    assert res.returncode == 2, res
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "camp.yaml: the restart is not exact" in err
    assert "first differs at step 51, in observable y" in err, err
    assert "state variable missing from the checkpoint" in err and "hidden files" in err
    assert "determinism: the same request twice gave the same bits" in res.stdout


def test_the_exact_fortran_model_passes_with_its_cost(tmp_path):
    exe = _fortran(tmp_path, DW_SRC.read_text(), "dw")
    path = _dw_campaign(tmp_path, exe)
    res = tams(tmp_path, "check", path.name, "--guess-p", "1e-4")
    assert res.returncode == 0, res
    out = res.stdout
    assert "restart: exact (split at step 50" in out and "mid-segment checkpoint of step 50" in out
    assert "16 bytes per checkpoint" in out
    assert "estimate for p = 0.0001" in out and "iterations per replica" in out
    # N = 10, k = 2: J = ceil(ln 1e-4 / ln 0.8) = 42
    assert "42 iterations per replica" in out, out


def test_the_examples_pass(tmp_path):
    """The python double well (file noise) and the C box model (seed noise) as shipped."""
    exe = REPO / "containers/amoc-box/bin/amoc-box"
    require(exe.exists(), "build the models: make -C containers all")
    for cfg, expect in (("doublewell2d.yaml", "restart: exact"),
                        ("amoc-box.yaml", "restart: deterministic")):
        res = tams(REPO / "configs", "check", cfg)
        assert res.returncode == 0 and expect in res.stdout, res


def test_a_model_that_is_not_deterministic_fails(tmp_path):
    (tmp_path / "jitter.py").write_text(
        "import numpy as np\n"
        "def step(state, t, dt, noise, eps=0.1):\n"
        "    return state + 1e-3 * np.random.standard_normal(state.shape)\n")
    path = write_campaign(tmp_path, model__step="jitter:step")
    res = tams(tmp_path, "check", path.name, PYTHONPATH=str(tmp_path))
    assert res.returncode == 2, res
    err = res.stderr.strip()
    assert "the model is not deterministic: the same request run twice first differs at step 1"\
        in err, err
    assert "clock" in err and "\n" not in err


def _legacy_script(tmp: Path, body: str) -> Path:
    """A shell 'model' in the protocol: x_{s+1} = x_s + noise; state = x (text)."""
    exe = tmp / "model.sh"
    exe.write_text("#!/bin/sh\nset -e\ncd \"$(dirname \"$1\")\"\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.mark.parametrize("flaw, expect", [
    ("hidden", "the model failed its restarted segment"),
    ("time", "first differs at step 3, in the time column of the trace"),
])
def test_hidden_files_and_accumulated_time_fail(tmp_path, flaw, expect):
    """The model below reads python's json request and writes a state; one variant also needs
    a file it left beside its checkpoint, the other writes t = i*dt counted from the
    segment's start."""
    py = tmp_path / "model.py"
    py.write_text(f"""
import json, os, sys
import numpy as np
r = json.load(open('request.json'))['segment']
s0, n, dt, every = r['step0'], r['n_steps'], r['dt'], r['checkpoint_every']
noise = np.fromfile(r['noise_file'], dtype='<f8').reshape(n, 1)
if r['state_in']:
    x = float(open(r['state_in']).read())
    if {flaw == 'hidden'!r}:
        x += float(open(os.path.join(os.path.dirname(r['state_in']), 'aux.txt')).read())
else:
    x = 0.0
with open(r['trace_file'], 'w') as tr:
    for i in range(1, n + 1):
        x = x + 0.1 * float(noise[i - 1, 0])
        t = (i * dt) if {flaw == 'time'!r} else (s0 + i) * dt
        tr.write(f'{{s0 + i}} {{t!r}} {{x!r}}\\n')
        if (s0 + i) % every == 0 or i == n:
            name = '%s%0*d%s' % (r['checkpoint_prefix'], r['checkpoint_digits'], s0 + i,
                                 r['checkpoint_suffix'])
            open(name, 'w').write(repr(x))
            open('aux.txt', 'w').write('0.0')
""")
    exe = _legacy_script(tmp_path, f'exec "{sys.executable}" "{py}"\n')
    path = write_campaign(tmp_path, model={
        "adapter": "executable", "executable": str(exe), "dt": 0.5, "noise": "file",
        "noise_dim": 1, "observables": ["x"], "checkpoint_every": 2},
        score={"function": "score_x:score", "target": 0.95},
        tams={"trajectories": 4, "horizon": 2.0, "segment_steps": 4})
    (tmp_path / "score_x.py").write_text("def score(t, obs):\n    return obs[:, 0]\n")
    res = tams(tmp_path, "check", path.name, "--steps", "4")
    assert res.returncode == 2, res
    assert expect in res.stderr and "\n" not in res.stderr.strip(), res.stderr


def test_estimate_formula():
    """The formulas of docs/wrapping.md on numbers worked by hand."""
    est = estimate_cost(1e-3, replicas=2, n=10, k=2, horizon=100, segment_steps=30,
                        checkpoint_every=10, workers=4, sec_per_step=0.01, sec_per_start=0.5,
                        bytes_per_checkpoint=1000)
    jj = math.ceil(math.log(1e-3) / math.log(0.8))
    assert est.iterations == jj == 31
    assert est.trajectories == 2 * (10 + 2 * 31)
    assert est.segments == est.trajectories * 4  # ceil(100 / 30)
    assert est.model_steps == est.trajectories * 100
    tau = 100 * 0.01 + 4 * 0.5
    assert est.wall == pytest.approx(tau * (math.ceil(20 / 4) + 31 * math.ceil(4 / 4)))
    assert est.disk_live == 2 * 10 * (10 + 4) * 1000
    assert est.disk_all == est.trajectories * (10 + 4) * 1000
