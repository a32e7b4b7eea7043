"""Container launchers: `docker` (Docker SDK) and `apptainer` (the real Apptainer, `apptainer
exec` on the SIFs built from the local Docker images).

Needs a Docker engine, Apptainer and the images: `bash tests/services/docker.sh && make -C
containers images` (tests/setup_and_run.sh does both, and installs Apptainer from
../shared/tools/apptainer when it is not on PATH).  Every container these tests start carries
the label tams.test=<this session's id>; the last test checks none is left.
"""
from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, assert_same, digest, require
from orchestrator import config
from orchestrator.model import ModelRunError, SegmentRequest
from orchestrator.runtime.driver import Driver
from orchestrator.store import Database

pytestmark = pytest.mark.slow  # Docker engine, images, containers

DW_BIN = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d"
AMOC_BIN = REPO / "containers" / "amoc-box" / "bin" / "amoc-box"
AMOC_SIF = REPO / "containers" / "amoc-box" / "bin" / "amoc-box.sif"
DW_SIF = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d.sif"
DW_IMAGE = "tams/doublewell2d:1"
SESSION = uuid.uuid4().hex[:12]
LABEL = {"tams.test": SESSION}
CLI = [sys.executable, "-m", "orchestrator.cli"]


# --- services --------------------------------------------------------------------------------
def _engine():
    try:
        import docker
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="module")
def engine():
    client = _engine()
    require(client is not None, "no Docker engine (start one: bash tests/services/docker.sh)")
    try:
        client.images.get(DW_IMAGE)
        ok = True
    except Exception:
        ok = False
    require(ok, f"no image {DW_IMAGE} (build it: make -C containers images)")
    yield client
    client.close()


class _Ctr:
    def __init__(self, raw: dict):
        self.id, self.labels = raw["Id"], raw.get("Labels") or {}

    def __repr__(self) -> str:
        return f"<container {self.id[:12]} {self.labels}>"


def _ours(client, label: dict = LABEL) -> list:
    """Our containers, from one engine call (a container removing itself cannot race it)."""
    key, value = next(iter(label.items()))
    return [_Ctr(c) for c in client.api.containers(all=True, filters={"label": f"{key}={value}"})]


# --- campaigns --------------------------------------------------------------------------------
def dw_campaign(launcher: str, **model) -> dict:
    """A small campaign of the Fortran 2-D double well (about 30 segments)."""
    m = {"adapter": "executable", "launcher": launcher, "dt": 0.01, "noise": "file",
         "noise_dim": 2, "observables": ["x", "y"], "checkpoint_every": 50,
         "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}
    if launcher == "docker":
        m |= {"executable": "/usr/local/bin/doublewell2d",
              "docker": {"image": DW_IMAGE, "labels": LABEL, "cpus": 1.0, "memory": "128m"}}
    else:
        m |= {"executable": str(DW_BIN)}
    m |= model
    return {"seed": 7, "replicas": 1, "model": m,
            "score": {"function": "adapters.examples.doublewell2d:score", "target": 0.95},
            "tams": {"trajectories": 6, "kill_per_iteration": 2, "horizon": 3.0,
                     "segment_steps": 150, "max_iterations": 6},
            "runner": {"kind": "threads", "workers": 2, "retries": 0, "segment_timeout": 60}}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(path: Path, db: Path):
    Driver(config.load(path), db_path=str(db)).run()
    return digest(db)


def segments(db: Path) -> dict:
    with Database(db) as d:
        return d.table(0, "segments")


# --- docker ---------------------------------------------------------------------------------
def test_docker_is_bitwise_the_local_launcher(engine, tmp_path):
    local = run(write(tmp_path / "local.yaml", dw_campaign("local")), tmp_path / "local.h5")
    dock = run(write(tmp_path / "dock.yaml", dw_campaign("docker")), tmp_path / "dock.h5")
    assert_same(local, dock)  # observables, scores, levels, weights, estimate: bit for bit
    seg = segments(tmp_path / "dock.h5")
    image_id = engine.images.get(DW_IMAGE).id
    assert len(seg["image"]) > 5
    assert {bytes(x).decode() for x in seg["image"]} == {image_id}
    assert {bytes(x).decode() for x in seg["launcher"]} == {"docker"}
    assert not _ours(engine)


def test_docker_campaign_as_a_user_leaves_no_root_file(engine):
    uid = gid = 1000
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        docker_gid = None
    require(os.getuid() == 0, "needs root to start the driver as uid 1000")
    home = Path(tempfile.mkdtemp(prefix="tams-user-"))
    try:
        os.chmod(home, 0o755)
        os.chown(home, uid, gid)
        yml = write(home / "dw.yaml", dw_campaign("docker"))
        os.chown(yml, uid, gid)

        def drop():
            os.setgroups([docker_gid] if docker_gid is not None else [])
            os.setgid(gid)
            os.setuid(uid)

        env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        python = _python_for(drop, env)
        require(python is not None, f"no Python interpreter usable by uid {uid}")
        res = subprocess.run([python, "-m", "orchestrator.cli", "run", str(yml), "-q"], cwd=home,
                             env=env, preexec_fn=drop, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        owners = {}
        n = 0
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                st = os.lstat(os.path.join(root, name))
                n += 1
                if st.st_uid != uid:
                    owners[os.path.join(root, name)] = st.st_uid
        assert n > 50 and not owners, f"files not owned by uid {uid}: {list(owners.items())[:5]}"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert not _ours(engine)


def _python_for(drop, env: dict, probe: str = "import docker, h5py, parsl, orchestrator") -> str | None:
    """An interpreter the unprivileged user can run with this environment's packages: ours,
    or (ours lives under an unreadable home) the system's of the same version, given our
    site-packages and the repository on PYTHONPATH (updates ``env``)."""
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}",
                          path="/usr/local/bin:/usr/bin")
    for python, extra in ((sys.executable, False), (system, True)):
        if python is None:
            continue
        e = dict(env)
        if extra:
            import site
            e["PYTHONPATH"] = os.pathsep.join([*site.getsitepackages(), str(REPO)])
        try:
            ok = subprocess.run([python, "-c", probe], env=e, preexec_fn=drop, cwd="/",
                                capture_output=True).returncode == 0
        except OSError:  # not executable by that user
            ok = False
        if ok:
            env.update(e)
            return python
    return None


def _model(tmp_path, **model):
    from adapters.executable import ExecutableModel
    cfg = config.load(write(tmp_path / "c.yaml", dw_campaign("docker", **model))).model
    return ExecutableModel(cfg, str(tmp_path))


def _request(tmp_path, name="seg", timeout=30.0, n=20):
    return SegmentRequest(workdir=str(tmp_path / name), start=None, step0=0, n_steps=n, dt=0.01,
                          checkpoint_every=10, noise=np.zeros((n, 2)), parameters={},
                          timeout=timeout)


def test_docker_timeout_kills_and_removes_the_container(engine, tmp_path):
    # the model opens a FIFO nobody writes to: it blocks until the timeout
    m = _model(tmp_path, command=["{executable}", "{workdir}/fifo"])
    req = _request(tmp_path, timeout=1.5)
    argv = m.prepare(req)
    os.mkfifo(os.path.join(req.workdir, "fifo"))
    t0 = time.monotonic()
    with pytest.raises(ModelRunError, match=r"timed out after 1.5 s; its container .* was killed"):
        m.launcher.run(argv, req.workdir, m.env, req.timeout)
    assert time.monotonic() - t0 < 20
    assert not _ours(engine)


def test_docker_crash_reports_exit_code_and_log_tail(engine, tmp_path):
    m = _model(tmp_path, command=["{executable}", "/no/such/request.nml"])
    with pytest.raises(ModelRunError) as err:
        m.run_segment(_request(tmp_path))
    msg = str(err.value)
    assert f"the model failed in Docker image {DW_IMAGE} (exit code 1)" in msg
    assert "stderr ends:" in msg and "Error termination" in msg and "\n" not in msg
    kept = Path(err.value.workdir)
    assert kept.name == "seg.failed-1"  # the container's log, kept for inspection
    assert "cannot open request /no/such/request.nml" in (kept / "stderr.txt").read_text()
    assert not _ours(engine)


def test_docker_shutdown_removes_running_containers(engine, tmp_path):
    m = _model(tmp_path, command=["{executable}", "{workdir}/fifo"])
    req = _request(tmp_path, timeout=120)
    argv = m.prepare(req)
    os.mkfifo(os.path.join(req.workdir, "fifo"))
    errors = []

    def target():
        try:
            m.launcher.run(argv, req.workdir, m.env, req.timeout)
        except ModelRunError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=target)
    th.start()
    deadline = time.monotonic() + 30
    while not _ours(engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ours(engine), "the container never started"
    m.shutdown()  # what the driver calls on Ctrl-C / SIGTERM
    th.join(30)
    assert not th.is_alive() and errors and "stopped (driver shutdown)" in errors[0]
    assert not _ours(engine)


@pytest.mark.parametrize("case", ["image", "daemon"])
def test_docker_missing_image_or_daemon_exit_2_before_writing(engine, tmp_path, case):
    data = dw_campaign("docker")
    env = dict(os.environ)
    if case == "image":
        data["model"]["docker"]["image"] = "tams/no-such-model:1"
        expect = ("key model.docker.image: the Docker image tams/no-such-model:1 does not exist "
                  "on this engine; build it with `make -C containers images`")
    else:
        env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
        expect = ("key model.launcher: the Docker engine is unreachable (")
    yml = write(tmp_path / "c.yaml", data)
    for cmd in ("check", "run"):
        res = subprocess.run(CLI + [cmd, str(yml)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip()
        assert expect in err and len(err.splitlines()) == 1, err
        if case == "daemon":
            assert "bash tests/services/docker.sh" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


# --- apptainer -------------------------------------------------------------------------------
def test_apptainer_argv_is_the_documented_one(tmp_path):
    from adapters.apptainer_launcher import ApptainerConfig, ApptainerLauncher
    (tmp_path / "forcing").mkdir()
    cfg = ApptainerConfig(image="m.sif", binds=["forcing", "forcing:/data:ro", "out:/scratch:rw"],
                          args=["--nv"], executable="/opt/apptainer/bin/apptainer")
    la = ApptainerLauncher(cfg, str(tmp_path))
    seg = "/runs/c.run/r0000/t0000003/s00000150"
    state = "/runs/c.run/r0000/t0000001/s00000000/ckpt_00000150.bin"
    assert la.argv(["model", f"{seg}/request.nml"], seg, [state]) == [
        "/opt/apptainer/bin/apptainer", "exec", "--containall", "--cleanenv", "--no-home",
        "--bind", f"{seg}:{seg}",
        "--bind", "/runs/c.run/r0000/t0000001/s00000000:/runs/c.run/r0000/t0000001/s00000000:ro",
        "--bind", f"{tmp_path}/forcing:{tmp_path}/forcing:ro",
        "--bind", f"{tmp_path}/forcing:/data:ro",
        "--bind", f"{tmp_path}/out:/scratch:rw",
        "--pwd", seg, "--nv", f"{tmp_path}/m.sif", "model", f"{seg}/request.nml"]
    # no input state (step 0): no state bind; a state above the segment directory: the file
    plain = ApptainerLauncher(ApptainerConfig(image="/i.sif", executable="/a"), str(tmp_path))
    assert plain.argv(["m"], seg, []) == ["/a", "exec", "--containall", "--cleanenv", "--no-home",
                                          "--bind", f"{seg}:{seg}", "--pwd", seg, "/i.sif", "m"]
    up = "/runs/c.run/initial.bin"
    assert plain.argv(["m"], seg, [up])[7:9] == ["--bind", f"{up}:{up}:ro"]
    assert ApptainerLauncher.environment({"OMP_NUM_THREADS": "1"})["APPTAINERENV_OMP_NUM_THREADS"] == "1"


def test_documented_argv_matches_docs():
    text = (REPO / "docs" / "containers.md").read_text()
    assert ("apptainer exec --containall --cleanenv --no-home --bind SEG:SEG --bind STATE_DIR:STATE_DIR:ro "
            "[--bind SRC:DST[:ro|rw] ...] --pwd SEG [ARGS ...] IMAGE CMD ...") in " ".join(text.split())


def amoc_campaign(launcher: str, **apptainer) -> dict:
    """configs/amoc-box-apptainer.yaml made small (about 30 segments)."""
    data = yaml.safe_load((REPO / "configs" / "amoc-box-apptainer.yaml").read_text())
    m = data["model"]
    m["parameters"]["sigma"] = 0.3
    m["checkpoint_every"] = 50
    if launcher == "local":
        m.pop("apptainer")
        m |= {"launcher": "local", "executable": str(AMOC_BIN)}
    else:
        m["apptainer"] = {"image": str(AMOC_SIF), **apptainer}
    data |= {"seed": 5, "replicas": 1}
    data["tams"] = {"trajectories": 6, "kill_per_iteration": 2, "horizon": 4.0,
                    "segment_steps": 200, "max_iterations": 6}
    data["runner"] = {"kind": "threads", "workers": 2, "retries": 0, "segment_timeout": 120}
    return data


@pytest.fixture(scope="module")
def apptainer():
    prog = shutil.which("apptainer")
    require(prog is not None, "no apptainer on PATH (as root: bash ../shared/tools/apptainer/"
            "install.sh; on a cluster: its module)")
    require(AMOC_SIF.exists() and DW_SIF.exists(), "no SIF images (make -C containers images)")
    return prog


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """tests/probe/probe.c as a static binary, in a directory of its own (bound into images)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    require(cc is not None, "no C compiler for the probe (apt-get install gcc libc6-dev)")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run([cc, "-static", "-O2", "-o", str(out), str(REPO / "tests" / "probe" / "probe.c")],
                   check=True, capture_output=True)
    os.chmod(out.parent, 0o755)
    return out


def _launcher(tmp_path, probe: Path, **cfg):
    from adapters.apptainer_launcher import ApptainerConfig, ApptainerLauncher
    binds = [f"{probe.parent}:/probe:ro", *cfg.pop("binds", [])]
    return ApptainerLauncher(ApptainerConfig(image=str(DW_SIF), binds=binds, **cfg), str(tmp_path))


def _seg(tmp_path, name="seg") -> str:
    seg = tmp_path / "run" / name
    seg.mkdir(parents=True)
    return str(seg)


def test_apptainer_campaign_is_bitwise_the_local_launcher(apptainer, tmp_path):
    local = run(write(tmp_path / "local.yaml", amoc_campaign("local")), tmp_path / "local.h5")
    app = run(write(tmp_path / "app.yaml", amoc_campaign("apptainer")), tmp_path / "app.h5")
    assert_same(local, app)
    seg = segments(tmp_path / "app.h5")
    assert len(seg["launcher"]) > 10
    assert {bytes(x).decode() for x in seg["launcher"]} == {"apptainer"}
    assert {bytes(x).decode() for x in seg["image"]} == {ApptainerDigest.of(AMOC_SIF)}


def test_apptainer_hides_the_host_environment_and_home(apptainer, probe, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "marker").write_text("host home")
    host_tmp = Path(tempfile.mkdtemp(prefix="tams-probe-"))  # the host's /tmp
    (host_tmp / "marker").write_text("host tmp")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TAMS_HOST_SECRET", "leak")
    la = _launcher(tmp_path, probe)
    try:
        seg = _seg(tmp_path)
        code, pv = la.run(["/probe/probe", "env"], seg, {"MODEL_VAR": "42"}, 60)
        assert code == 0 and pv.launcher == "apptainer", Path(seg, "stderr.txt").read_text()
        env = dict(ln.split("=", 1) for ln in Path(seg, "stdout.txt").read_text().splitlines())
        assert env["MODEL_VAR"] == "42"  # model.env gets in (APPTAINERENV_)...
        assert "TAMS_HOST_SECRET" not in env  # ...the host's environment does not
        assert not [k for k, v in env.items() if str(home) in v], env  # nor the host's home
        assert env["PWD"] == seg
        seg2 = _seg(tmp_path, "seg2")
        la.run(["/probe/probe", "exists", str(home / "marker"), str(home),
                str(host_tmp / "marker"), str(REPO / "README.md"), seg2], seg2, {}, 60)
        seen = Path(seg2, "stdout.txt").read_text().split("\n")
        assert seen[:5] == [f"no {home / 'marker'}", f"no {home}", f"no {host_tmp / 'marker'}",
                            f"no {REPO / 'README.md'}", f"yes {seg2}"], seen
    finally:
        shutil.rmtree(host_tmp, ignore_errors=True)
    assert "--no-home" in la.argv(["m"], seg, [])


def test_apptainer_binds_segment_dir_and_extra_inputs(apptainer, probe, tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "forcing.txt").write_text("forcing data")
    (tmp_path / "scratch").mkdir()
    la = _launcher(tmp_path, probe, binds=["inputs:/data:ro", "inputs", "scratch:/scratch:rw"])
    seg = _seg(tmp_path)
    assert la.run(["/probe/probe", "read", "/data/forcing.txt"], seg, {}, 60)[0] == 0
    assert Path(seg, "stdout.txt").read_text() == "forcing data"
    seg = _seg(tmp_path, "s2")  # the same input at its host path
    assert la.run(["/probe/probe", "read", str(tmp_path / "inputs" / "forcing.txt")], seg, {},
                  60)[0] == 0
    assert Path(seg, "stdout.txt").read_text() == "forcing data"
    seg = _seg(tmp_path, "s3")  # read-only stays read-only
    assert la.run(["/probe/probe", "write", "/data/new.txt", "x"], seg, {}, 60)[0] == 1
    assert not (tmp_path / "inputs" / "new.txt").exists()
    seg = _seg(tmp_path, "s4")  # the segment directory and a :rw bind are writable
    assert la.run(["/probe/probe", "write", f"{seg}/out.txt", "out"], seg, {}, 60)[0] == 0
    assert la.run(["/probe/probe", "write", "/scratch/s.txt", "s"], seg, {}, 60)[0] == 0
    for p in (Path(seg, "out.txt"), tmp_path / "scratch" / "s.txt"):
        assert p.read_text() in ("out", "s")
        assert (p.stat().st_uid, p.stat().st_gid) == (os.getuid(), os.getgid())
    # the input state's directory, read-only, at its host path
    state_dir = tmp_path / "run" / "t1"
    state_dir.mkdir()
    (state_dir / "ckpt.bin").write_text("state")
    seg = _seg(tmp_path, "s5")
    assert la.run(["/probe/probe", "read", str(state_dir / "ckpt.bin")], seg, {}, 60,
                  [str(state_dir / "ckpt.bin")])[0] == 0
    assert Path(seg, "stdout.txt").read_text() == "state"
    seg = _seg(tmp_path, "s6")
    assert la.run(["/probe/probe", "write", str(state_dir / "x"), "x"], seg, {}, 60,
                  [str(state_dir / "ckpt.bin")])[0] == 1


def _processes_with(token: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if token.encode() in Path("/proc", d, "cmdline").read_bytes():
                    found.append(int(d))
            except OSError:
                pass
    return found


def test_apptainer_timeout_kills_everything_it_started(apptainer, probe, tmp_path):
    la = _launcher(tmp_path, probe)
    seg = _seg(tmp_path)
    token = f"tams-token-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    with pytest.raises(ModelRunError, match=r"timed out after 3.0 s; its apptainer process group"):
        la.run(["/probe/probe", "spawn", token], seg, {}, 3.0)
    assert time.monotonic() - t0 < 20
    assert len(Path(seg, "stdout.txt").read_text().split()) == 2  # parent and child had started
    deadline = time.monotonic() + 10
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(token) == []


@pytest.mark.parametrize("case", ["missing", "foreign", "truncated"])
def test_apptainer_bad_image_is_one_sentence_before_writing(apptainer, tmp_path, case):
    data = amoc_campaign("apptainer")
    image = tmp_path / "img" / "model.sif"
    image.parent.mkdir()
    if case == "foreign":
        image.write_bytes(os.urandom(4096))
        expect = f"{image} is not a SIF image (no SIF header)"
    elif case == "truncated":
        image.write_bytes(AMOC_SIF.read_bytes()[:100_000])
        expect = f"{image} is truncated (100000 bytes, its header promises"
    else:
        expect = f"{image} does not exist"
    data["model"]["apptainer"]["image"] = str(image)
    yml = write(tmp_path / "c.yaml", data)
    for cmd in ("check", "run"):
        res = subprocess.run(CLI + [cmd, str(yml)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"key model.apptainer.image: {expect}" in err and "make -C containers images" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "img"]


def test_apptainer_image_it_cannot_mount_fails_the_segment_at_once(apptainer, tmp_path):
    from adapters.executable import ExecutableModel
    blob = bytearray(AMOC_SIF.read_bytes())
    fs = blob.find(b"hsqs")  # the squashfs superblock: zero it, keep the SIF header intact
    assert fs > 0
    blob[fs:fs + 4096] = bytes(4096)
    image = tmp_path / "broken.sif"
    image.write_bytes(bytes(blob))
    cfg = config.load(write(tmp_path / "c.yaml", amoc_campaign("apptainer", image=str(image))))
    m = ExecutableModel(cfg.model, str(tmp_path))
    assert m.check() == []  # the header is fine: only Apptainer can tell
    req = SegmentRequest(workdir=str(tmp_path / "seg"), start=None, step0=0, n_steps=20, dt=0.01,
                         checkpoint_every=10, noise=np.zeros((20, 1)), parameters={}, timeout=60)
    with pytest.raises(ModelRunError) as err:
        m.run_segment(req)
    msg = str(err.value)
    assert f"apptainer could not run the image {image}: " in msg and "\n" not in msg
    assert not err.value.transient and "rebuild it" in msg


def test_apptainer_campaign_as_a_user_leaves_only_their_files(apptainer, tmp_path):
    uid = gid = 1000
    require(os.getuid() == 0, "needs root to start the driver as uid 1000")
    home = Path(tempfile.mkdtemp(prefix="tams-user-"))
    try:
        os.chmod(home, 0o755)
        shutil.copy(AMOC_SIF, home / "amoc-box.sif")
        data = amoc_campaign("apptainer", image=str(home / "amoc-box.sif"))
        write(home / "amoc.yaml", data)
        for p in (home, home / "amoc.yaml", home / "amoc-box.sif"):
            os.chown(p, uid, gid)

        def drop():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        python = _python_for(drop, env, probe="import h5py, parsl, orchestrator")
        require(python is not None, f"no Python interpreter usable by uid {uid}")
        res = subprocess.run([python, "-m", "orchestrator.cli", "run", str(home / "amoc.yaml"),
                              "-q"], cwd=home, env=env, preexec_fn=drop, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        n, owners = 0, {}
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                st = os.lstat(os.path.join(root, name))
                n += 1
                if st.st_uid != uid:
                    owners[os.path.join(root, name)] = st.st_uid
        assert n > 50 and not owners, f"files not owned by uid {uid}: {list(owners.items())[:5]}"
        with Database(home / "amoc.h5") as d:
            assert d.replica(0).segments > 10
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- persistent containers (docker and apptainer, `persistent: true`) --------------------------
def _instances(prefix: str = "tams-") -> list[str]:
    res = subprocess.run(["apptainer", "instance", "list", "--json"], capture_output=True,
                         text=True, timeout=60)
    return [i["instance"] for i in json.loads(res.stdout or "{}").get("instances", [])
            if i["instance"].startswith(prefix)]


def _label_prefix(yml: Path) -> str:
    """The instance-name prefix of a campaign's persistent apptainer instances."""
    from adapters.executable import ExecutableModel
    m = ExecutableModel(config.load(yml).model, str(yml.parent))
    return f"tams-{m.launcher._label}-"


def _short_campaign(launcher: str) -> dict:
    """Many short segments: a driver can be signalled while segments still run."""
    data = dw_campaign(launcher) if launcher == "docker" else amoc_campaign(launcher)
    data["tams"] |= {"segment_steps": 10, "max_iterations": 20}
    data["database"] = {"commit_interval": 0.5}
    return data


def _persistent(data: dict, launcher: str) -> dict:
    data["model"][launcher]["persistent"] = True
    return data


def test_docker_persistent_is_bitwise_a_container_per_segment(engine, tmp_path):
    per = run(write(tmp_path / "per.yaml", dw_campaign("docker")), tmp_path / "per.h5")
    pers = run(write(tmp_path / "pers.yaml", _persistent(dw_campaign("docker"), "docker")),
               tmp_path / "pers.h5")
    assert_same(per, pers)
    seg = segments(tmp_path / "pers.h5")
    assert len(seg["image"]) > 10
    assert {bytes(x).decode() for x in seg["image"]} == {engine.images.get(DW_IMAGE).id}
    assert not _ours(engine)  # every container removed when the driver ended


def test_apptainer_persistent_is_bitwise_exec_per_segment(apptainer, tmp_path):
    per = run(write(tmp_path / "per.yaml", amoc_campaign("apptainer")), tmp_path / "per.h5")
    yml = write(tmp_path / "pers.yaml", amoc_campaign("apptainer", persistent=True))
    pers = run(yml, tmp_path / "pers.h5")
    assert_same(per, pers)
    seg = segments(tmp_path / "pers.h5")
    assert {bytes(x).decode() for x in seg["image"]} == {ApptainerDigest.of(AMOC_SIF)}
    assert set(seg["pid"].tolist()) == {0}  # through the runner, not an `apptainer exec`
    assert _instances(_label_prefix(yml)) == []  # every instance stopped when the driver ended


def _persistent_model(tmp_path, launcher: str, probe: Path | None = None):
    from adapters.executable import ExecutableModel
    if launcher == "docker":
        data = _persistent(dw_campaign("docker"), "docker")
    else:
        data = amoc_campaign("apptainer", persistent=True,
                             binds=[f"{probe.parent}:/probe:ro"] if probe else [])
    cfg = config.load(write(tmp_path / "c.yaml", data)).model
    return ExecutableModel(cfg, str(tmp_path))


def _segment(tmp_path, i: int, n: int = 20, dim: int = 2) -> SegmentRequest:
    return SegmentRequest(workdir=str(tmp_path / "run" / "r0000" / "t0000000" / f"s{i:08d}"),
                          start=None, step0=0, n_steps=n, dt=0.01, checkpoint_every=10,
                          noise=np.zeros((n, dim)), parameters={}, timeout=60)


def test_docker_persistent_one_container_per_worker_replaced_when_it_dies(engine, tmp_path):
    m = _persistent_model(tmp_path, "docker")
    try:
        m.run_segment(_segment(tmp_path, 0))
        first = m.launcher.running_slots()
        for i in range(1, 4):  # fresh segment directories, one container
            res = m.run_segment(_segment(tmp_path, i))
            assert res.observables.shape == (20, 2)
            assert Path(_segment(tmp_path, i).workdir, "stdout.txt").exists()
        assert m.launcher.running_slots() == first and len(first) == 1
        assert [c.id for c in _ours(engine)] == first
        engine.containers.get(first[0]).remove(force=True)  # it dies between segments
        m.run_segment(_segment(tmp_path, 4))
        second = m.launcher.running_slots()
        assert len(second) == 1 and second != first
    finally:
        m.shutdown()
    assert not _ours(engine)


def test_docker_persistent_timeout_kills_the_segment_and_replaces_the_container(engine, tmp_path):
    from adapters.executable import ExecutableModel
    data = _persistent(dw_campaign("docker", command=["{executable}", "{workdir}/fifo"]), "docker")
    m = ExecutableModel(config.load(write(tmp_path / "c.yaml", data)).model, str(tmp_path))
    good = _persistent_model(tmp_path / "good", "docker") if (tmp_path / "good").mkdir() is None else None
    try:
        req = _segment(tmp_path, 0)
        argv = m.prepare(req)
        os.mkfifo(os.path.join(req.workdir, "fifo"))  # the model blocks until killed
        t0 = time.monotonic()
        with pytest.raises(ModelRunError, match=r"timed out after 1.5 s; its process group in "
                           r"the persistent container \(removed\)"):
            m.launcher.run(argv, req.workdir, m.env, 1.5)
        assert time.monotonic() - t0 < 20 and m.launcher.running_slots() == []
        deadline = time.monotonic() + 20
        while _ours(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _ours(engine)
        assert good is not None
        good.run_segment(_segment(tmp_path / "good", 1))  # the next segment: a new container
        assert len(good.launcher.running_slots()) == 1
    finally:
        m.shutdown()
        if good is not None:
            good.shutdown()
    assert not _ours(engine)


def test_apptainer_persistent_timeout_kills_everything_and_replaces_the_instance(
        apptainer, probe, tmp_path):
    m = _persistent_model(tmp_path, "apptainer", probe)
    la = m.launcher
    prefix = f"tams-{la._label}-"
    try:
        m.run_segment(_segment(tmp_path, 0, dim=1))
        first = la.running_slots()
        assert len(first) == 1 and _instances(prefix) == first
        token = f"tams-token-{uuid.uuid4().hex}"
        seg = _segment(tmp_path, 1, dim=1).workdir
        os.makedirs(seg)
        with pytest.raises(ModelRunError, match=r"timed out after 2.0 s; its process group in "
                           r"the persistent instance \(removed\)"):
            la.run(["/probe/probe", "spawn", token], seg, {}, 2.0)
        assert len(Path(seg, "stdout.txt").read_text().split()) == 2  # both had started
        deadline = time.monotonic() + 10
        while _processes_with(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(token) == []
        assert _instances(prefix) == [] and la.running_slots() == []
        m.run_segment(_segment(tmp_path, 2, dim=1))  # a new instance
        second = la.running_slots()
        assert len(second) == 1 and second != first
        subprocess.run(["apptainer", "instance", "stop", "--force", second[0]],
                       capture_output=True, check=True)  # it dies between segments
        m.run_segment(_segment(tmp_path, 3, dim=1))
        third = la.running_slots()
        assert len(third) == 1 and third[0] not in (first + second)
    finally:
        m.shutdown()
    assert _instances(prefix) == []


def _wait_segments(db: Path, proc, n: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if db.exists():
            try:
                with Database(db) as d:
                    if sum(v.segments for v in d.replicas()) >= n:
                        return
            except Exception:  # between commits
                pass
        time.sleep(0.05)
    pytest.fail(f"the driver did not ingest {n} segments (exit status {proc.poll()})")


@pytest.mark.parametrize("launcher", ["docker", "apptainer"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_persistent_containers_gone_after_signal_and_resume_identical(request, tmp_path,
                                                                      launcher, sig):
    client = request.getfixturevalue("engine") if launcher == "docker" else None
    if launcher == "apptainer":
        request.getfixturevalue("apptainer")
    ref = run(write(tmp_path / "ref.yaml", _persistent(_short_campaign(launcher), launcher)),
              tmp_path / "ref.h5")
    run_dir = tmp_path / "camp"
    run_dir.mkdir()
    yml = write(run_dir / "camp.yaml", _persistent(_short_campaign(launcher), launcher))
    prefix = _label_prefix(yml) if launcher == "apptainer" else ""

    def ours():
        return _ours(client) if client is not None else _instances(prefix)

    db = run_dir / "camp.h5"
    proc = subprocess.Popen(CLI + ["run", str(yml), "-q"], cwd=run_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_segments(db, proc, 10)
        assert proc.poll() is None and len(ours()) >= 1, "no persistent container was running"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert ours() == []  # removed before the driver exited
    else:  # docker: the runner saw its connection close; apptainer: the instance's watchdog
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while ours() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ours() == []
    with Database(db) as d:
        assert not all(v.outcome != 0 for v in d.replicas()), "the run ended before the signal"
    res = subprocess.run(CLI + ["run", str(yml), "-q"], cwd=run_dir, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same(ref, digest(db))
    assert ours() == []


def _dead_owner() -> str:
    p = subprocess.Popen(["true"])
    p.wait()
    return f"{socket.gethostname()}.{p.pid}.1"


@pytest.mark.parametrize("launcher", ["docker", "apptainer"])
def test_next_run_removes_what_a_dead_driver_left(request, tmp_path, launcher):
    """The backstop: containers/instances of this campaign whose owner process is dead (as a
    SIGKILLed driver leaves them when nothing else could stop them) are removed by the next
    `tams check` / `tams run`; another campaign's and live owners' are left alone."""
    from adapters.executable import ExecutableModel
    from adapters.persistent import runner_binary
    client = request.getfixturevalue("engine") if launcher == "docker" else None
    if launcher == "apptainer":
        request.getfixturevalue("apptainer")
    data = _persistent(dw_campaign("docker"), "docker") if launcher == "docker" else \
        amoc_campaign("apptainer", persistent=True)
    yml = write(tmp_path / "camp.yaml", data)
    la = ExecutableModel(config.load(yml).model, str(tmp_path)).launcher
    ctl = tmp_path / "ctl"  # a runner nobody connects to: it waits (2 minutes)
    ctl.mkdir()
    shutil.copy(runner_binary(), ctl / "tams-runner")
    left = []
    for owner in (_dead_owner(), la._owner):  # a dead owner's, and a live one's
        la._owner = owner
        if launcher == "apptainer":
            own = ctl / f"c{len(left)}"
            own.mkdir()
            shutil.copy(runner_binary(), own / "tams-runner")
            left.append(la._start([], str(own), ""))
            dog = la._watchdogs.pop(left[-1])  # as if its owner had been SIGKILLed
            os.killpg(dog.pid, signal.SIGKILL)
            dog.wait()
        else:
            from adapters.docker_launcher import OWNER_LABEL, PERSISTENT_LABEL
            left.append("")
            ctr = client.containers.run(
                DW_IMAGE, entrypoint=["/.tams/tams-runner"], command=[f"/.tams/s{len(left)}"],
                volumes={str(ctl): {"bind": "/.tams", "mode": "rw"}}, detach=True,
                auto_remove=True, labels={**LABEL, PERSISTENT_LABEL: la._label,
                                          OWNER_LABEL: owner})
            left[-1] = ctr.id
    try:
        now = _ours(client) if client else _instances(f"tams-{la._label}-")
        assert sorted(left) == sorted(c.id if client else c for c in now)
        res = subprocess.run(CLI + ["check", str(yml)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        # the dead owner's container is gone; the check's own Apptainer instance is stopped
        # by its watchdog when `tams check` exits, which takes a moment: wait up to 15 s
        deadline = time.monotonic() + 15
        while True:
            now = _ours(client) if client else _instances(f"tams-{la._label}-")
            if [c.id if client else c for c in now] == [left[1]] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [c.id if client else c for c in now] == [left[1]]  # the live owner's stays
    finally:
        for h in left:
            la._stop(h)
    assert (_ours(client) if client else _instances(f"tams-{la._label}-")) == []


class ApptainerDigest:
    @staticmethod
    def of(path: Path) -> str:
        import hashlib
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# --- last: nothing left behind ----------------------------------------------------------------
def test_zz_no_container_left_behind():
    client = _engine()
    require(client is not None, "no Docker engine")
    assert not _ours(client)
    left = [
        _Ctr(c) for c in client.api.containers(all=True, filters={"label": "tams.segment"})]
    assert not [c for c in left if c.labels.get("tams.test") == SESSION]
