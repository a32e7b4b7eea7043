"""Faulty models (issue #3): every way a model can misbehave gives one clear ModelRunError
naming the kept segment directory, the exit code and the stderr tail; timeouts kill the whole
process group; transient failures are retried; a permanent one stops the campaign (exit 3)
with its database intact and resumable to the undisturbed result."""
from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pytest

from adapters.executable import ExecutableModel, ExecutableModelConfig
from conftest import assert_same, digest, write_campaign
from orchestrator.cli import main
from orchestrator.core import noise as nz
from orchestrator.model import ModelRunError, SegmentRequest

# A protocol-v1 model in pure Python (no numpy: it starts fast): the 2-D double well of
# adapters/examples/doublewell2d.py, file noise, states as text.  Parameter `fault` picks a
# misbehaviour; `flag` (a path) makes it conditional on that file existing (`marker`: on it
# not existing, creating it — a failure of the first attempt only); `only` restricts it to
# segment directories whose path contains that text.
MODEL = '''\
#!{python}
import json, math, os, struct, subprocess, sys, time
req = json.load(open("request.json"))
seg, par = req["segment"], req["parameters"]
fault = par.get("fault", "")
if par.get("only") and par["only"] not in os.getcwd():
    fault = ""
if par.get("flag") and not os.path.exists(par["flag"]):
    fault = ""
if fault and par.get("marker"):
    if os.path.exists(par["marker"]):
        fault = ""
    else:
        open(par["marker"], "w").close()
print("faulty model: starting segment at step", seg["step0"], file=sys.stderr)
if fault == "crash":
    print("faulty model: the solver diverged at step", seg["step0"] + 3, file=sys.stderr)
    sys.exit(7)
if fault == "hang":
    child = subprocess.Popen(["sleep", "1000"])
    with open(par["pids"], "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    print("faulty model: waiting forever", file=sys.stderr, flush=True)
    time.sleep(1000)
n, s0, dt, every = seg["n_steps"], seg["step0"], seg["dt"], seg["checkpoint_every"]
eps = par.get("eps", 0.1)
if seg["state_in"]:
    x, y = map(float, open(seg["state_in"]).read().split())
else:
    x, y = par.get("x0", -1.0), par.get("y0", 0.0)
raw = open(seg["noise_file"], "rb").read()
noise = struct.unpack("<%dd" % (2 * n), raw)
sq = math.sqrt(eps * dt)
lines = []
for i in range(n):
    x, y = x + dt * (x - x * x * x) + sq * noise[2 * i], y - 2.0 * dt * y + sq * noise[2 * i + 1]
    step = s0 + i + 1
    lines.append(f"{{step}} {{step * dt!r}} {{x!r}} {{y!r}}")
    if step % every == 0 or i == n - 1:
        name = "%s%0*d%s" % (seg["checkpoint_prefix"], seg["checkpoint_digits"], step,
                             seg["checkpoint_suffix"])
        if fault == "missing_checkpoint" and i == n - 1:
            continue
        with open(name, "w") as f:
            if not (fault == "empty_checkpoint" and i == n - 1):
                f.write(f"{{x!r}} {{y!r}}")
if fault == "nan":
    lines[4] = lines[4].rsplit(" ", 1)[0] + " nan"
if fault == "truncated":
    lines = lines[:7] + [lines[7][:9]]
if fault == "duplicate":
    lines.insert(6, lines[5])
    lines.pop()
if fault == "garbage":
    lines[2] = "Segmentation fault (core dumped) ### <<< x=?"
with open(seg["trace_file"], "w") as f:
    f.write("\\n".join(lines) + "\\n")
'''


@pytest.fixture
def model_exe(tmp_path) -> Path:
    path = tmp_path / "faulty-model"
    path.write_text(MODEL.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def model_section(exe, **params) -> dict:
    return {"adapter": "executable", "executable": str(exe), "dt": 0.01, "noise": "file",
            "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 10,
            "parameters": {"eps": 0.1, **params}}


def run_one(exe, workdir, timeout=30.0, **params):
    m = ExecutableModel(ExecutableModelConfig(**model_section(exe, **params)), str(workdir.parent))
    req = SegmentRequest(workdir=str(workdir), start=None, step0=0, n_steps=20, dt=0.01,
                         checkpoint_every=10, noise=nz.step_noise((1, 2), 1, 20, 2),
                         parameters=m.config.parameters, timeout=timeout)
    return m.run_segment(req)


def fails(exe, tmp_path, fault, **params) -> ModelRunError:
    wd = tmp_path / "r0000" / "t0000003" / "s00000000"
    with pytest.raises(ModelRunError) as info:
        run_one(exe, wd, fault=fault, **params)
    err = info.value
    msg = str(err)
    # the message names the kept directory, which exists (the retry starts afresh in wd)
    assert err.workdir == f"{wd}.failed-1" and Path(err.workdir).is_dir(), msg
    assert err.workdir in msg and not wd.exists()
    # the model's stderr tail is shown
    assert "faulty model: " in msg and "faulty model" in err.stderr_tail
    assert "\n" not in msg
    return err


def test_good_model_passes(model_exe, tmp_path):
    res = run_one(model_exe, tmp_path / "seg")
    assert res.observables.shape == (20, 2) and res.checkpoints.steps.tolist() == [10, 20]
    # the same numbers as the python adapter's step function
    from adapters.examples.doublewell2d import step
    state = (-1.0, 0.0)
    for n in nz.step_noise((1, 2), 1, 20, 2):
        state = step(state, 0.0, 0.01, n)
    assert res.observables[-1].tolist() == list(state)


def test_crash(model_exe, tmp_path):
    err = fails(model_exe, tmp_path, "crash")
    assert err.exit_code == 7 and "(exit code 7)" in str(err)
    assert "the solver diverged at step 3" in str(err)


def _alive(pid: int) -> bool:
    try:  # a zombie (reparented to an init that does not reap) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_hang_kills_the_process_group(model_exe, tmp_path):
    pids = tmp_path / "pids"
    t0 = time.monotonic()
    wd = tmp_path / "seg"
    with pytest.raises(ModelRunError) as info:
        run_one(model_exe, wd, timeout=1.5, fault="hang", pids=str(pids))
    assert time.monotonic() - t0 < 10
    err = info.value
    msg = str(err)
    assert "timed out after 1.5 s" in msg and "process group was killed" in msg
    assert err.workdir == f"{wd}.failed-1" and Path(err.workdir).is_dir() and err.workdir in msg
    assert "waiting forever" in msg and err.exit_code is None
    model_pid, sleep_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(model_pid) or _alive(sleep_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(model_pid), "the model survived its timeout"
    assert not _alive(sleep_pid), "the model's child `sleep 1000` was orphaned"


@pytest.mark.parametrize("fault, expect", [
    ("nan", "trace line 5 (step 5) holds a non-finite number"),
    ("missing_checkpoint", "the promised checkpoint ckpt_00000020.bin (step 20) is missing"),
    ("empty_checkpoint", "the checkpoint ckpt_00000020.bin (step 20) is empty"),
    ("truncated", "the trace is truncated: its last line (line 8) has 3 of 4 column(s)"),
    ("duplicate", "step 6 appears twice in the trace (lines 6 and 7)"),
    ("garbage", "trace line 3 is not numbers: 'Segmentation fault (core dumped)"),
])
def test_invalid_outputs(model_exe, tmp_path, fault, expect):
    err = fails(model_exe, tmp_path, fault)
    assert expect in str(err), str(err)
    assert err.exit_code == 0 and "(exit code 0)" in str(err)


def test_short_trace_is_truncated(tmp_path):
    """A trace that simply stops (the model died after flushing some lines)."""
    exe = tmp_path / "short"
    exe.write_text(f"#!{sys.executable}\nimport json\nseg = json.load(open('request.json'))['segment']\n"
                   "open(seg['trace_file'], 'w').write(''.join(f'{s} {s/100} 0.5 0.5\\n' for s in range(1, 13)))\n")
    exe.chmod(0o755)
    with pytest.raises(ModelRunError, match=r"the trace is truncated: it ends at step 12 \(line 12\), "
                       r"expected steps 1\.\.20 \(exit code 0\)"):
        run_one(exe, tmp_path / "seg")


# --- campaign level ------------------------------------------------------------------------
def campaign(tmp_path, exe, name="camp", retries=0, **params):
    return write_campaign(tmp_path, name, replicas=1, model=model_section(exe, **params),
                          tams__trajectories=4, tams__kill_per_iteration=1, tams__horizon=0.4,
                          tams__segment_steps=20, tams__max_iterations=4,
                          runner__retries=retries, runner__segment_timeout=30)


@pytest.mark.parametrize("cmd", ["run", "check"])
@pytest.mark.parametrize("problem", ["missing", "not executable"])
def test_bad_executable_caught_before_anything_is_written(model_exe, in_tmp, capsys, cmd, problem):
    exe = in_tmp / "nowhere" / "model" if problem == "missing" else in_tmp / "plain"
    if problem != "missing":
        exe.write_text(model_exe.read_text())  # no x bit
    path = campaign(in_tmp, exe)
    before = sorted(p.name for p in in_tmp.iterdir())
    assert main([cmd, str(path), "-q"] if cmd == "run" else [cmd, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(exe) in err
    assert ("does not exist" if problem == "missing" else "is not an executable file") in err
    assert sorted(p.name for p in in_tmp.iterdir()) == before  # no database, no run directory


def test_transient_failure_retried(model_exe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = campaign(tmp_path, model_exe, retries=1, fault="crash", marker=str(tmp_path / "marker"),
                    only="t0000002")
    assert main(["run", str(path), "-q"]) == 0
    from orchestrator.store import Database
    with Database(tmp_path / "camp.h5") as db:
        seg = db.table(0, "segments")
        assert seg["attempts"].max() == 2 and db.replica(0).outcome != 0
        assert db.replica(0).failed_segments == 1
    assert len(list(tmp_path.glob("camp.run/r0000/t0000002/*.failed-1"))) == 1


def test_permanent_failure_stops_then_resumes(model_exe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flag = tmp_path / "broken"
    path = campaign(tmp_path, model_exe, fault="crash", flag=str(flag), only="t0000002/s00000020")
    assert main(["run", str(path), "-q", "--db", "ref.h5"]) == 0  # undisturbed (no flag)
    reference = digest(tmp_path / "ref.h5")
    capsys.readouterr()
    flag.touch()
    assert main(["run", str(path), "-q"]) == 3
    out = capsys.readouterr()
    line = out.err.strip()
    assert "\n" not in line and line.startswith("tams: campaign stopped: the model failed after 1 "
                                                "attempt(s)")
    assert "t0000002/s00000020.failed-1" in line and "(exit code 7)" in line
    assert "the solver diverged" in line and "run `tams run" in line
    partial = digest(tmp_path / "camp.h5")  # intact and readable
    assert partial["0/summary"][0] == 0  # still running
    flag.unlink()
    assert main(["run", str(path), "-q"]) == 0
    assert_same(reference, digest(tmp_path / "camp.h5"))
