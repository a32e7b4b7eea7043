"""SPEEDY (containers/speedy, docs/speedy.md): the flagship legacy model, built and run for real.

The model's source is not in this repository: it is built from ../shared/models/speedy.f90
(or SPEEDY_SRC) with the project's restart patch, into a temporary directory (so a running
campaign's binary is never replaced).  Needs gfortran and libnetcdff-dev (tests/setup_and_run.sh
installs them as root).  Kept small for CI: a 6-day spin-up from rest instead of the 151-day
one, a campaign of 4 trajectories over 4 days.

- the restart is bit-exact: 4 days in one segment == 2 + 2 days joined at a checkpoint,
  trace and final checkpoint compared byte for byte (with noise);
- the same request twice gives the same bytes;
- SPEEDY's own error `stop` (exit status 0) becomes a non-zero exit with a sentence;
- `tams check` passes on configs/speedy-heatwave.yaml (pointed at the test build);
- a tiny heat-wave campaign completes through `tams run` and `tams report`;
- a tiny GKLT campaign (configs/speedy-gklt.yaml) completes through both, copies stored as
  branches;
- the Docker image (Dockerfile + rootfs.sh) gives the local build's bytes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, require

pytestmark = pytest.mark.slow  # builds and runs a Fortran GCM

HERE = REPO / "containers" / "speedy"
SRC = Path(os.environ.get("SPEEDY_SRC", REPO.parent / "shared" / "models" / "speedy.f90"))
CLI = [sys.executable, "-m", "orchestrator.cli"]
SPINUP_DAYS = 6


@pytest.fixture(scope="module")
def speedy(tmp_path_factory) -> Path:
    """A built SPEEDY + wrapper in a temporary directory, with a short spin-up state."""
    require(shutil.which("gfortran") is not None, "no gfortran (apt-get install gfortran)")
    require(Path("/usr/include/netcdf.mod").exists() or bool(os.environ.get("NETCDF")),
            "no NetCDF Fortran library (apt-get install libnetcdff-dev)")
    require((SRC / "source" / "speedy.f90").exists(), f"no SPEEDY source at {SRC}")
    d = tmp_path_factory.mktemp("speedy")
    shutil.copy(HERE / "speedy_segment.sh", d)
    env = dict(os.environ, SPEEDY_SRC=str(SRC), SPEEDY_OUT=str(d / "bin"),
               SPEEDY_BUILD=str(d / "build"))
    out = subprocess.run(["bash", str(HERE / "build.sh"), "--spinup", str(SPINUP_DAYS)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (d / "bin" / "summer_state.bin").stat().st_size > 1_000_000
    return d


def request(state_in: str, step0: int, n: int, every: int, noise: bool = True) -> str:
    return f"""&segment
  protocol_version = 1,
  state_in = '{state_in}',
  step0 = {step0},
  n_steps = {n},
  dt = 1.0,
  t0 = {float(step0)!r},
  checkpoint_every = {every},
  checkpoint_prefix = 'ckpt_',
  checkpoint_digits = 8,
  checkpoint_suffix = '.bin',
  noise_mode = 'file',
  noise_file = '{"noise.bin" if noise else ""}',
  noise_dim = 24,
  seed = 0,
  trace_file = 'trace.txt',
/
&parameters
  noise_amp = 2e-07,
/
"""


def run_segment(speedy: Path, seg: Path, state_in: str, step0: int, n: int, every: int,
                noise: np.ndarray) -> subprocess.CompletedProcess:
    seg.mkdir(parents=True)
    (seg / "request.nml").write_text(request(state_in, step0, n, every))
    noise.astype("<f8").tofile(seg / "noise.bin")
    return subprocess.run([str(speedy / "speedy_segment.sh"), "request.nml"], cwd=seg,
                          capture_output=True, text=True, timeout=300)


def test_restart_is_bit_exact(speedy, tmp_path):
    start = str(speedy / "bin" / "summer_state.bin")
    noise = np.random.default_rng(7).standard_normal((4, 24))
    one = run_segment(speedy, tmp_path / "one", start, 0, 4, 2, noise)
    assert one.returncode == 0, one.stderr
    a = run_segment(speedy, tmp_path / "a", start, 0, 2, 2, noise[:2])
    assert a.returncode == 0, a.stderr
    b = run_segment(speedy, tmp_path / "b", str(tmp_path / "a" / "ckpt_00000002.bin"), 2, 2, 2,
                    noise[2:])
    assert b.returncode == 0, b.stderr
    whole = (tmp_path / "one" / "trace.txt").read_text().splitlines()
    joined = ((tmp_path / "a" / "trace.txt").read_text().splitlines()
              + (tmp_path / "b" / "trace.txt").read_text().splitlines())
    assert len(whole) == 4 and whole == joined
    assert [line.split()[0] for line in whole] == ["1", "2", "3", "4"]
    for step in (2, 4):
        name = f"ckpt_{step:08d}.bin"
        seg = tmp_path / ("a" if step == 2 else "b")
        assert (tmp_path / "one" / name).read_bytes() == (seg / name).read_bytes(), name
    # the noise matters (so the test above compares something that can differ)
    c = run_segment(speedy, tmp_path / "c", start, 0, 4, 2, noise * 0.5)
    assert c.returncode == 0, c.stderr
    assert (tmp_path / "c" / "trace.txt").read_text().splitlines()[1:] != whole[1:]
    # the same request twice: the same bytes
    again = run_segment(speedy, tmp_path / "again", start, 0, 4, 2, noise)
    assert again.returncode == 0
    assert (tmp_path / "again" / "trace.txt").read_bytes() == (tmp_path / "one" / "trace.txt").read_bytes()
    assert ((tmp_path / "again" / "ckpt_00000004.bin").read_bytes()
            == (tmp_path / "one" / "ckpt_00000004.bin").read_bytes())


def test_error_stop_becomes_a_nonzero_exit(speedy, tmp_path):
    # a state that blows the model up: SPEEDY's check_diagnostics `stop`s with exit status 0
    bad = bytearray((speedy / "bin" / "summer_state.bin").read_bytes())
    arr = np.frombuffer(bad, dtype="<f8", count=2000, offset=200).copy() * 1e6
    bad[200:200 + arr.nbytes] = arr.tobytes()
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    res = run_segment(speedy, tmp_path / "seg", str(tmp_path / "bad.bin"), 0, 2, 1,
                      np.zeros((2, 24)))
    assert res.returncode != 0
    assert "SPEEDY stopped before the end" in res.stderr
    # a wrong noise_dim is refused with a sentence
    seg = tmp_path / "dim"
    seg.mkdir()
    (seg / "request.nml").write_text(request("", 0, 1, 1).replace("noise_dim = 24", "noise_dim = 3"))
    np.zeros((1, 3)).tofile(seg / "noise.bin")
    res = subprocess.run([str(speedy / "speedy_segment.sh"), "request.nml"], cwd=seg,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "noise_dim must be 24" in res.stderr


def campaign_yaml(speedy: Path, tmp_path: Path, **tams) -> Path:
    """configs/speedy-heatwave.yaml pointed at the test build (and made tiny)."""
    c = yaml.safe_load((REPO / "configs" / "speedy-heatwave.yaml").read_text())
    c["model"]["executable"] = str(speedy / "speedy_segment.sh")
    c["model"]["initial_state"] = str(speedy / "bin" / "summer_state.bin")
    c["tams"].update(tams)
    c["replicas"] = 1
    c["runner"]["workers"] = 1
    c["database"] = {"path": str(tmp_path / "speedy.h5"), "keep_states": "live"}
    p = tmp_path / "speedy-heatwave.yaml"
    p.write_text(yaml.safe_dump(c, sort_keys=False))
    return p


def test_tams_check_passes_on_the_heatwave_campaign(speedy, tmp_path):
    cfg = campaign_yaml(speedy, tmp_path)
    out = subprocess.run(CLI + ["check", str(cfg)], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check passed" in out.stdout


def test_tiny_heatwave_campaign_completes(speedy, tmp_path):
    cfg = campaign_yaml(speedy, tmp_path, trajectories=4, kill_per_iteration=1, horizon=4.0,
                        segment_steps=4, max_iterations=3)
    c = yaml.safe_load(cfg.read_text())
    c["score"]["parameters"]["first_day"] = 1  # 4 days: score the partial windows too
    cfg.write_text(yaml.safe_dump(c, sort_keys=False))
    out = subprocess.run(CLI + ["run", str(cfg)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    from orchestrator.store import Database
    db = Database(tmp_path / "speedy.h5")
    rep = db.replicas()[0]
    assert rep.iterations >= 1
    tr = db.trajectory(int(db.trajectory_ids(0)[-1]), 0)
    assert tr.steps.size == 4 and np.isfinite(tr.observables).all()
    assert 250 < tr.observables[:, 0].mean() < 320  # kelvin
    rpt = subprocess.run(CLI + ["report", str(tmp_path / "speedy.h5")], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert rpt.returncode == 0, rpt.stderr


def test_tiny_gklt_campaign_completes(speedy, tmp_path):
    """configs/speedy-gklt.yaml made tiny (3 trajectories, 4 days, one resampling on day 2)
    through `tams run` and `tams report`: the genealogy is stored as branches (a copy holds
    only its own days after the resampling day) and the weights are finite."""
    c = yaml.safe_load((REPO / "configs" / "speedy-gklt.yaml").read_text())
    c["model"]["executable"] = str(speedy / "speedy_segment.sh")
    c["model"]["initial_state"] = str(speedy / "bin" / "summer_state.bin")
    c["tams"].update(trajectories=3, horizon=4.0, segment_steps=4)
    c["gklt"].update(resample_every=2, k=200.0)  # a strong tilt: the warmest member is copied
    c["replicas"] = 1
    c["runner"]["workers"] = 1
    c["database"] = {"path": str(tmp_path / "gklt.h5"), "keep_states": "live"}
    cfg = tmp_path / "speedy-gklt.yaml"
    cfg.write_text(yaml.safe_dump(c, sort_keys=False))
    out = subprocess.run(CLI + ["run", str(cfg)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    from orchestrator.store import Database
    with Database(tmp_path / "gklt.h5") as db:
        rep = db.replicas()[0]
        it = db.iterations(0)
        assert rep.outcome == 1 and rep.iterations == 1 and it["iteration"].tolist() == [1]
        assert 2 * 250 < it["level"][0] < 2 * 320  # c_1: the mean of 2 days of t_box, K day
        assert np.isfinite(it["log_weight"]).all() and 0 <= rep.estimate <= 1
        created = db.table(0, "created")
        steps = db.table(0, "steps")
        assert (created["parent"] >= 0).any() and it["n_killed"][0] >= 1
        for tid, parent, b in zip(created["id"], created["parent"], created["branch_step"]):
            own = steps["step"][steps["traj"] == tid]
            if parent >= 0:  # a copy: branched on day 2, its own days 3..4 only
                assert b == 2 and own.tolist() == [3, 4]
        for tid in db.ensemble(0):
            tr = db.trajectory(int(tid), 0)
            assert tr.steps.tolist() == [1, 2, 3, 4]
            assert 250 < tr.observables[:, 0].mean() < 320  # kelvin
    rpt = subprocess.run(CLI + ["report", str(tmp_path / "gklt.h5"), "--no-figures"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert rpt.returncode == 0, rpt.stderr
    assert "probability and return time of the time average of t_box" in rpt.stdout


def test_docker_image_gives_the_local_bits(speedy, tmp_path):
    """containers/speedy/Dockerfile (FROM scratch + rootfs.sh's tree): a segment run in the
    image gives the local build's trace and checkpoint, byte for byte."""
    import uuid
    docker = shutil.which("docker")
    ok = docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0
    require(ok, "no Docker engine (start one: bash tests/services/docker.sh)")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    env = dict(os.environ, SPEEDY_OUT=str(speedy / "bin"), SPEEDY_BUILD=str(ctx / "build"))
    out = subprocess.run(["bash", str(HERE / "rootfs.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shutil.copy(HERE / "Dockerfile", ctx)
    tag = f"tams/speedy-test:{uuid.uuid4().hex[:12]}"
    out = subprocess.run([docker, "build", "-q", "-t", tag, str(ctx)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    try:
        noise = np.random.default_rng(3).standard_normal((2, 24))
        local = run_segment(speedy, tmp_path / "local", str(speedy / "bin" / "summer_state.bin"),
                            0, 2, 1, noise)
        assert local.returncode == 0, local.stderr
        seg = tmp_path / "in-docker"
        seg.mkdir()
        (seg / "request.nml").write_text(request("/opt/speedy/bin/summer_state.bin", 0, 2, 1))
        noise.astype("<f8").tofile(seg / "noise.bin")
        res = subprocess.run([docker, "run", "--rm", "--network", "none", "-u",
                              f"{os.getuid()}:{os.getgid()}", "-v", f"{seg}:{seg}", "-w", str(seg),
                              tag, "/opt/speedy/speedy_segment.sh", "request.nml"],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        for name in ("trace.txt", "ckpt_00000001.bin", "ckpt_00000002.bin"):
            assert (seg / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
