"""Plug-in points (issue 10, item 6): adapters, launchers and runner kinds are entry points;
a third-party package installed with pip works without editing the project; a foreign
`adapters` package is named, not mistaken for an unknown adapter; a model's shutdown stops
its own runs only; a segfaulting model gets one line naming SIGSEGV.

No mocks: real subprocesses (`sleep`, a C program that dereferences NULL), a real
`pip install --target`, the real `tams` command in a subprocess.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, write_campaign
from orchestrator import config, registry
from orchestrator.model import ModelRunError, SegmentRequest

DEMO = REPO / "tests" / "plugins" / "tams-demo-adapter"
DW_BIN = REPO / "containers" / "doublewell2d" / "bin" / "doublewell2d"


def tams(args: list[str], cwd: Path, pythonpath: list[Path] = (), timeout: float = 300):
    """The real `tams` command in a subprocess, with ``pythonpath`` first on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    exe = Path(sys.executable).with_name("tams")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.cli"]
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def one_line(res, code: int) -> str:
    """The stderr of a failed `tams`: exactly one line, no traceback, the expected status."""
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert len(err.splitlines()) == 1, err
    return err


def pip_install(package: Path, target: Path) -> None:
    """A real install of ``package`` into ``target`` (pip builds it like any sdist), from a
    copy: setuptools builds in the source tree (build/, *.egg-info), which is not ours to
    litter."""
    src = target.parent / f"{package.name}-src"
    shutil.copytree(package, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--disable-pip-version-check", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr


# --- the registry --------------------------------------------------------------------------
def test_builtins_are_exactly_the_entry_points_of_pyproject():
    """pyproject.toml is the single list of built-ins: what the registry finds is what it
    declares, and adapters/__init__.py holds no second table."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    for group, reg in [("tams.adapters", registry.ADAPTERS), ("tams.launchers", registry.LAUNCHERS),
                       ("tams.runners", registry.RUNNERS), ("tams.algorithms", registry.ALGORITHMS)]:
        assert reg.builtin_names() == sorted(declared[group]), group
        for name in declared[group]:
            assert reg.load(name) is not None
    import adapters
    assert not hasattr(adapters, "ADAPTERS")
    assert registry.adapter_class("executable").__name__ == "ExecutableModel"
    assert registry.known_adapters() == ["executable", "python"]


def test_tams_is_registered_as_an_algorithm():
    from orchestrator.core.ensemble import Ensemble
    assert registry.algorithm("tams") is Ensemble


@pytest.mark.parametrize("reg,name", [(registry.ADAPTERS, "fortran"),
                                      (registry.LAUNCHERS, "podman"),
                                      (registry.RUNNERS, "pbs")])
def test_unknown_name_is_one_sentence_listing_the_known_ones(reg, name):
    with pytest.raises(KeyError) as info:
        reg.load(name)
    msg = str(info.value)
    assert f"unknown {reg.what} {name!r}" in msg and str(reg.names()) in msg
    assert "\n" not in msg


def test_a_group_without_built_ins_says_reinstall():
    """What a stale installation (metadata from before the entry points) looks like."""
    stale = registry.Registry("tams.no-such-group", "adapter", "python")
    with pytest.raises(registry.PluginError, match=r"declares no `tams.no-such-group` entry "
                       r"points .*; reinstall the project \(`pip install -e \.`"):
        stale.names()


# --- config: discriminated unions --------------------------------------------------------------
def test_every_example_campaign_loads_into_its_variants():
    kinds = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        loaded = config.load(path)
        data = yaml.safe_load(path.read_text())
        runner = loaded.campaign.runner
        assert runner.kind == data.get("runner", {}).get("kind", "threads")
        assert type(runner) is registry.runner_class(runner.kind)
        kinds[path.name] = runner.kind
        if loaded.model.adapter == "executable":
            assert loaded.model.launcher == data["model"].get("launcher", "local")
            if loaded.model.launcher != "local":
                assert getattr(loaded.model, loaded.model.launcher).image
            # crosses process boundaries by value, though its class is made at run time
            assert pickle.loads(pickle.dumps(loaded.model)) == loaded.model
    assert kinds["doublewell2d-slurm.yaml"] == "slurm"
    slurm = config.load(REPO / "configs" / "doublewell2d-slurm.yaml").campaign.runner
    assert slurm.slurm.walltime and slurm.workers == 2  # runner.slurm.* as before


# --- per-instance process registries -----------------------------------------------------------
def _sleeper(tmp: Path, name: str):
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    cfg = ExecutableModelConfig(adapter="executable", executable=shutil.which("sleep"),
                                command=["{executable}", "60"], dt=0.01, noise="seed",
                                observables=["x"])
    model = ExecutableModel(cfg, str(tmp))
    req = SegmentRequest(workdir=str(tmp / name), start=None, step0=0, n_steps=5, dt=0.01,
                         checkpoint_every=5, seed=1, timeout=120)
    errors: list[str] = []

    def run():
        try:
            model.run_segment(req)
        except ModelRunError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not model.launcher.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    (pid,) = model.launcher.running()
    return model, th, errors, pid


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_shutting_one_model_down_leaves_another_models_run_alive(tmp_path):
    a, th_a, err_a, pid_a = _sleeper(tmp_path, "a")
    b, th_b, _err_b, pid_b = _sleeper(tmp_path, "b")
    try:
        a.shutdown()
        th_a.join(30)
        assert not th_a.is_alive() and "killed by signal SIGKILL" in err_a[0]
        assert not alive(pid_a)
        time.sleep(0.2)
        assert alive(pid_b) and th_b.is_alive() and b.launcher.running() == [pid_b]
    finally:
        b.shutdown()
    th_b.join(30)
    assert not alive(pid_b) and not th_b.is_alive()


def test_worker_pools_are_per_executor(tmp_path):
    """Two executors in one process (two campaigns run from one program): closing one stops
    its models' runs, not the other's; shutdown_models() without a name stops all."""
    from orchestrator.runtime import worker
    exe = shutil.which("sleep")
    spec = ("executable", {"adapter": "executable", "executable": exe, "dt": 0.01,
                           "command": ["{executable}", "60"], "noise": "seed",
                           "observables": ["x"]}, str(tmp_path))
    one, two = worker.build_model(spec, "pool-one"), worker.build_model(spec, "pool-two")
    assert one is not two and worker.build_model(spec, "pool-one") is one
    threads = []
    for name in ("pool-one", "pool-two"):
        req = SegmentRequest(workdir=str(tmp_path / name), start=None, step0=0, n_steps=5,
                             dt=0.01, checkpoint_every=5, seed=1, timeout=120)
        th = threading.Thread(target=lambda r=req, p=name: pytest.raises(
            ModelRunError, worker.run_segment, spec, r, False, p), daemon=True)
        th.start()
        threads.append(th)
    deadline = time.monotonic() + 30
    while not (one.launcher.running() and two.launcher.running()) and time.monotonic() < deadline:
        time.sleep(0.02)
    (pid_one,), (pid_two,) = one.launcher.running(), two.launcher.running()
    worker.shutdown_models("pool-one")
    threads[0].join(30)
    assert not alive(pid_one) and alive(pid_two)
    with pytest.raises(ModelRunError, match="its executor was shut down"):
        worker.build_model(spec, "pool-one")  # a segment still queued for it does not start
    worker.shutdown_models()
    threads[1].join(30)
    assert not alive(pid_two)


# --- a segfaulting model -----------------------------------------------------------------------
SEGFAULT_C = r"""
#include <stdio.h>
int main(void) {
    fprintf(stderr, "segv model: about to dereference NULL\n");
    fflush(stderr);
    volatile int *p = 0;
    return *p;
}
"""


@pytest.fixture
def segfaulting_model(tmp_path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "segv.c"
    src.write_text(SEGFAULT_C)
    exe = tmp_path / "segv-model"
    subprocess.run([gcc, "-O0", "-o", str(exe), str(src)], check=True)
    return exe


def test_segfault_is_one_line_naming_sigsegv_exit_3(segfaulting_model, tmp_path):
    path = write_campaign(tmp_path, model={"adapter": "executable",
                                           "executable": str(segfaulting_model), "dt": 0.01,
                                           "noise_dim": 2, "observables": ["x", "y"]},
                          runner__retries=0, tams__trajectories=3, tams__kill_per_iteration=1,
                          replicas=1)
    res = tams(["run", "-q", str(path)], cwd=tmp_path)
    err = one_line(res, 3)
    assert err.startswith("tams: campaign stopped: ") and "killed by signal SIGSEGV" in err
    assert "Segmentation fault" in err and "segv model: about to dereference NULL" in err
    kept = [p for p in (tmp_path / "camp.run").rglob("*.failed-1")]
    assert any(str(k) in err for k in kept)  # the evidence is kept, and named
    res = tams(["check", str(path)], cwd=tmp_path)
    assert "SIGSEGV" in one_line(res, 2)


# --- a third-party plug-in package, installed for real -----------------------------------------
@pytest.fixture(scope="module")
def demo_installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install(DEMO, target)
    assert (target / "tams_demo_adapter" / "model.py").is_file()
    return target


def demo_campaign(tmp: Path, name: str, **over) -> Path:
    data = {"seed": 3, "replicas": 2,
            "model": {"adapter": "demo", "dt": 0.01, "observables": ["x"], "eps": 0.1},
            "score": {"function": "tams_demo_adapter.model:score", "target": 0.95},
            "tams": {"trajectories": 5, "kill_per_iteration": 1, "horizon": 1.0,
                     "segment_steps": 50},
            "runner": {"kind": "serial", "workers": 2}}
    for key, value in over.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def finished(db: Path) -> list[float]:
    from orchestrator.store import Database
    with Database(db) as d:
        reps = d.replicas()
        assert reps and all(v.outcome != 0 for v in reps)
        return [float(v.estimate) for v in reps]


def test_demo_adapter_and_runner_kind_run_a_campaign(demo_installed, tmp_path):
    path = demo_campaign(tmp_path, "demo")
    res = tams(["check", str(path)], cwd=tmp_path, pythonpath=[demo_installed])
    assert res.returncode == 0 and "check passed" in res.stdout, res.stderr
    res = tams(["run", "-q", str(path)], cwd=tmp_path, pythonpath=[demo_installed])
    assert res.returncode == 0, res.stderr
    estimates = finished(tmp_path / "demo.h5")
    assert len(estimates) == 2 and all(0 <= p <= 1 for p in estimates)


def test_demo_launcher_runs_the_executable_adapter(demo_installed, tmp_path):
    if not DW_BIN.exists():
        pytest.skip("build the example models: make -C containers all")
    model = {"adapter": "executable", "executable": str(DW_BIN), "launcher": "nice",
             "nice": {"level": 5}, "dt": 0.01, "noise": "file", "noise_dim": 2,
             "observables": ["x", "y"], "checkpoint_every": 10,
             "parameters": {"eps": 0.1, "x0": -1.0, "y0": 0.0}}
    path = write_campaign(tmp_path, "nice", model=model, tams__trajectories=4, tams__horizon=1.0,
                          replicas=1)
    res = tams(["run", "-q", str(path)], cwd=tmp_path, pythonpath=[demo_installed])
    assert res.returncode == 0, res.stderr
    finished(tmp_path / "nice.h5")
    from orchestrator.store import Database
    with Database(tmp_path / "nice.h5") as d:
        assert {bytes(x).decode() for x in d.table(0, "segments")["launcher"]} == {"nice"}
    # a plug-in's section is validated like a built-in's: one sentence naming its key
    bad = write_campaign(tmp_path, "bad", model={**model, "nice": {"level": 50}})
    err = one_line(tams(["check", str(bad)], cwd=tmp_path, pythonpath=[demo_installed]), 2)
    assert "key model.nice.level: must be an integer in 0..19 (got 50)" in err


def test_installed_plugins_are_listed_but_not_documented(demo_installed, tmp_path):
    path = demo_campaign(tmp_path, "typo", model__adapter="demoo")
    err = one_line(tams(["check", str(path)], cwd=tmp_path, pythonpath=[demo_installed]), 2)
    assert "key model.adapter: unknown adapter 'demoo'; use one of ['demo', 'executable', " \
           "'python']" in err
    path = demo_campaign(tmp_path, "typo2", runner__kind="seriall")
    err = one_line(tams(["check", str(path)], cwd=tmp_path, pythonpath=[demo_installed]), 2)
    assert "key runner.kind: unknown runner kind 'seriall'" in err and "'serial'" in err
    env = {**os.environ, "PYTHONPATH": str(demo_installed)}
    out = subprocess.run([sys.executable, "-m", "orchestrator.docgen"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out == (REPO / "docs" / "configuration.md").read_text()  # the built-ins only


# --- another package named `adapters` ----------------------------------------------------------
FOREIGN_INIT = '"""Another project\'s adapters (not the TAMS orchestrator\'s)."""\n'


def test_a_foreign_adapters_distribution_is_named(tmp_path):
    """The unrelated `adapters` distribution of the package index, installed and first on
    the path: one sentence that names it and how to get rid of it."""
    src = tmp_path / "foreign"
    (src / "adapters").mkdir(parents=True)
    (src / "adapters" / "__init__.py").write_text(FOREIGN_INIT)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "adapters"\nversion = "9.9"\n'
        '[tool.setuptools]\npackages = ["adapters"]\n')
    target = tmp_path / "site"
    pip_install(src, target)
    path = write_campaign(tmp_path)
    for command in ("check", "run"):
        res = tams([command, str(path)], cwd=tmp_path, pythonpath=[target])
        err = one_line(res, 2)
        assert "another installed package named `adapters` of the distribution adapters" in err
        assert "shadows this project's own `adapters` package" in err
        assert "`pip uninstall adapters`" in err and "unknown adapter" not in err
    # nothing written by tams (the campaign's database, its run directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camp.yaml", "foreign", "foreign-src",
                                                          "site"]


def test_a_foreign_adapters_directory_is_named(tmp_path):
    fake = tmp_path / "elsewhere"
    (fake / "adapters").mkdir(parents=True)
    (fake / "adapters" / "__init__.py").write_text(FOREIGN_INIT)
    path = write_campaign(tmp_path)
    err = one_line(tams(["run", str(path)], cwd=tmp_path, pythonpath=[fake]), 2)
    assert f"({fake / 'adapters' / '__init__.py'}) shadows this project's own" in err
    assert "remove it from PYTHONPATH" in err


# --- the signal names of a failure ---------------------------------------------------------------
def test_failure_message_names_the_signal(tmp_path):
    """The adapter's message for a model killed by a signal (here SIGABRT, as an assert() in C
    gives), through a real process."""
    from adapters.executable import ExecutableModel, ExecutableModelConfig
    script = tmp_path / "abort.sh"
    script.write_text("#!/bin/sh\necho 'abort model: giving up' >&2\nkill -ABRT $$\n")
    script.chmod(0o755)
    m = ExecutableModel(ExecutableModelConfig(adapter="executable", executable=str(script),
                                              dt=0.01, noise="seed", observables=["x"]),
                        str(tmp_path))
    req = SegmentRequest(workdir=str(tmp_path / "seg"), start=None, step0=0, n_steps=3, dt=0.01,
                         checkpoint_every=3, seed=1, noise=np.zeros((3, 1)))
    with pytest.raises(ModelRunError) as info:
        m.run_segment(req)
    assert f"killed by signal SIGABRT (Aborted), exit code -{int(signal.SIGABRT)}" in str(info.value)
    assert "abort model: giving up" in str(info.value)
