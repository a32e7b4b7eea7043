"""Every bad input gets one clear sentence and changes nothing on disk (DESIGN §10).

Each case derives a malformed campaign from a small valid one, runs ``tams run`` on it and
asserts: exit status 2, exactly one stderr line starting with ``tams: error:`` that names the
file and (where there is one) the key, no traceback, and an unchanged directory.  Most cases
call ``orchestrator.cli.main`` in-process for speed; a handful run the real entry point in a
subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli

NAME = "bad-campaign.yaml"

BASE_YAML = """\
seed: 2026
replicas: 2
model:
  adapter: python
  step: adapters.examples.doublewell2d:step
  initial_state: [-1.0, 0.0]
  dt: 0.01
  noise_dim: 2
  observables: [x, y]
  parameters: {eps: 0.1}
score:
  function: adapters.examples.doublewell2d:score
  target: 0.95
tams:
  trajectories: 4
  kill_per_iteration: 1
  horizon: 0.5
  segment_steps: 25
runner:
  kind: threads
  workers: 1
"""


def base() -> dict:
    return yaml.safe_load(BASE_YAML)


def setkey(dotted: str, value):
    """A mutation that sets ``a.b.c`` to value (creating missing sections on the way)."""
    def mutate(d):
        *parents, last = dotted.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
        return d
    return mutate


def delkey(dotted: str):
    def mutate(d):
        *parents, last = dotted.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[last]
        return d
    return mutate


def raw(text: str):
    """A mutation that replaces the whole file with text."""
    return text


# (id, mutation, key the message must name or None, extra files to create beside the YAML)
CASES = [
    # --- the file itself -------------------------------------------------------------------
    ("yaml-bad-indentation", raw(BASE_YAML.replace("  dt: 0.01", "     dt: 0.01")), None),
    ("yaml-unclosed-bracket", raw(BASE_YAML.replace("[x, y]", "[x, y")), None),
    ("yaml-tab", raw(BASE_YAML.replace("  dt: 0.01", "\tdt: 0.01")), None),
    ("empty-file", raw(""), None),
    ("only-comments", raw("# nothing here\n"), None),
    ("top-level-list", raw("- seed: 1\n- replicas: 2\n"), None),
    ("top-level-scalar", raw("just a string\n"), None),
    # --- unknown keys ----------------------------------------------------------------------
    ("unknown-top-level-key", setkey("replica", 2), "replica"),
    ("unknown-nested-key-tams", setkey("tams.trajectorys", 4), "tams.trajectorys"),
    ("unknown-nested-key-runner", setkey("runner.worker", 2), "runner.worker"),
    ("unknown-model-key", setkey("model.stepp", "x:y"), "model.stepp"),
    # --- missing keys ----------------------------------------------------------------------
    ("missing-seed", delkey("seed"), "seed"),
    ("missing-tams", delkey("tams"), "tams"),
    ("missing-trajectories", delkey("tams.trajectories"), "tams.trajectories"),
    ("missing-adapter", delkey("model.adapter"), "model.adapter"),
    ("missing-dt", delkey("model.dt"), "model.dt"),
    ("missing-score-function", delkey("score.function"), "score.function"),
    ("missing-step", delkey("model.step"), "model.step"),
    # --- wrong types -----------------------------------------------------------------------
    ("trajectories-string", setkey("tams.trajectories", "many"), "tams.trajectories"),
    ("trajectories-float", setkey("tams.trajectories", 4.5), "tams.trajectories"),
    ("dt-list", setkey("model.dt", [1]), "model.dt"),
    ("dt-string", setkey("model.dt", "0.01"), "model.dt"),
    ("seed-float", setkey("seed", 1.5), "seed"),
    ("model-not-mapping", setkey("model", 5), "model"),
    ("tams-not-mapping", setkey("tams", [1, 2]), "tams"),
    ("observables-not-list", setkey("model.observables", "x"), "model.observables"),
    ("observable-bad-item", setkey("model.observables", [1, "y"]), "model.observables[0]"),
    ("observable-mapping-missing-name", setkey("model.observables", [{"units": "m"}, "y"]),
     "model.observables[0].name"),
    ("initial-state-number", setkey("model.initial_state", 5), "model.initial_state"),
    ("initial-state-bad-item", setkey("model.initial_state", [-1.0, "a"]),
     "model.initial_state"),
    ("parameters-not-mapping", setkey("model.parameters", [1]), "model.parameters"),
    # --- values out of range ---------------------------------------------------------------
    ("trajectories-negative", setkey("tams.trajectories", -4), "tams.trajectories"),
    ("trajectories-one", setkey("tams.trajectories", 1), "tams.trajectories"),
    ("k-equals-n", setkey("tams.kill_per_iteration", 4), "kill_per_iteration"),
    ("k-greater-n", setkey("tams.kill_per_iteration", 9), "kill_per_iteration"),
    ("k-zero", setkey("tams.kill_per_iteration", 0), "tams.kill_per_iteration"),
    ("dt-zero", setkey("model.dt", 0.0), "model.dt"),
    ("dt-negative", setkey("model.dt", -0.01), "model.dt"),
    ("dt-nan", setkey("model.dt", float("nan")), "model.dt"),
    ("dt-inf", setkey("model.dt", float("inf")), "model.dt"),
    ("horizon-zero", setkey("tams.horizon", 0.0), "tams.horizon"),
    ("horizon-negative", setkey("tams.horizon", -1.0), "tams.horizon"),
    ("horizon-below-one-step", setkey("tams.horizon", 0.001), "tams.horizon"),
    ("horizon-not-whole-steps", setkey("tams.horizon", 0.505), "tams.horizon"),
    ("segment-steps-zero", setkey("tams.segment_steps", 0), "tams.segment_steps"),
    ("max-iterations-zero", setkey("tams.max_iterations", 0), "tams.max_iterations"),
    ("seed-negative", setkey("seed", -1), "seed"),
    ("seed-too-large", setkey("seed", 2**64), "seed"),
    ("replicas-zero", setkey("replicas", 0), "replicas"),
    ("noise-dim-zero", setkey("model.noise_dim", 0), "model.noise_dim"),
    ("checkpoint-every-zero", setkey("model.checkpoint_every", 0), "model.checkpoint_every"),
    ("runner-kind-unknown", setkey("runner.kind", "cluster"), "runner.kind"),
    ("workers-zero", setkey("runner.workers", 0), "runner.workers"),
    ("retries-negative", setkey("runner.retries", -1), "runner.retries"),
    ("segment-timeout-zero", setkey("runner.segment_timeout", 0), "runner.segment_timeout"),
    ("keep-states-unknown", setkey("database.keep_states", "some"), "database.keep_states"),
    ("noise-mode-unknown", setkey("model.noise", "gaussian"), "model.noise"),
    ("observables-empty", setkey("model.observables", []), "model.observables"),
    ("observables-duplicate", setkey("model.observables", ["x", "x"]), "model.observables"),
    # --- adapters and import paths ---------------------------------------------------------
    ("adapter-unknown", setkey("model.adapter", "fortran"), "model.adapter"),
    ("adapter-not-string", setkey("model.adapter", 3), "model.adapter"),
    ("score-function-no-colon", setkey("score.function", "mymodel.score"), "score.function"),
    ("score-function-empty-attr", setkey("score.function", "mymodel:"), "score.function"),
    ("score-module-missing", setkey("score.function", "nosuchmod:score"), "score.function"),
    ("score-function-missing", setkey("score.function", "adapters.examples.doublewell2d:nosuch"),
     "score.function"),
    ("score-not-callable", setkey("score.function", "adapters.examples.doublewell2d:math"),
     "score.function"),
    ("step-no-colon", setkey("model.step", "adapters.examples.doublewell2d.step"), "model.step"),
    ("step-module-missing", setkey("model.step", "nosuchmod:step"), "model.step"),
    ("step-function-missing", setkey("model.step", "adapters.examples.doublewell2d:stepp"),
     "model.step"),
    ("observe-module-missing", setkey("model.observe", "nosuchmod:observe"), "model.observe"),
    ("step-module-broken", setkey("model.step", "brokenmodel:step"), "model.step",
     {"brokenmodel.py": "def step(state, t, dt, noise:\n    return state\n"}),
    ("initial-state-file-missing", setkey("model.initial_state", "nosuch.npy"),
     "model.initial_state"),
    ("initial-state-file-garbage", setkey("model.initial_state", "state.npy"),
     "model.initial_state", {"state.npy": "not a numpy file\n"}),
    # --- several problems: the first is reported, the others counted -----------------------
    ("two-problems", lambda d: setkey("runner.workers", 0)(setkey("tams.trajectories", "many")(d)),
     "tams.trajectories"),
]


def _case(c):
    ident, mutation, key, *extra = c
    return pytest.param(mutation, key, extra[0] if extra else {}, id=ident)


def write_campaign(tmp: Path, mutation, extra_files: dict) -> Path:
    text = mutation if isinstance(mutation, str) else yaml.safe_dump(mutation(base()),
                                                                   sort_keys=False)
    path = tmp / NAME
    path.write_text(text)
    for name, content in extra_files.items():
        (tmp / name).write_text(content)
    return path


def listing(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))


def assert_one_clear_line(code: int, out: str, err: str, file_name: str | None, key: str | None):
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("tams: error: "), line
    if file_name is not None:
        assert file_name in line, f"the message does not name the file {file_name}: {line}"
    if key is not None:
        assert key in line, f"the message does not name the key {key}: {line}"
    # one sentence: ends with a period, and says what to do (or what is allowed)
    assert line.endswith("."), line


@pytest.fixture
def in_tmp(tmp_path):
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def run_inprocess(capsys, argv):
    code = cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_subprocess(cwd: Path, argv):
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=cwd,
                       capture_output=True, text=True, timeout=120, env=env)
    return p.returncode, p.stdout, p.stderr


def test_base_campaign_is_valid(in_tmp):
    """The cases below are wrong only by their mutation."""
    from orchestrator.config import load
    path = write_campaign(in_tmp, lambda d: d, {})
    loaded = load(path)
    assert loaded.n_steps == 50


@pytest.mark.parametrize("mutation,key,extra", [_case(c) for c in CASES])
def test_run_rejects_bad_campaign(in_tmp, capsys, mutation, key, extra):
    path = write_campaign(in_tmp, mutation, extra)
    before = listing(in_tmp)
    code, out, err = run_inprocess(capsys, ["run", "-q", path.name])
    assert_one_clear_line(code, out, err, NAME, key)
    assert listing(in_tmp) == before, "a rejected campaign wrote to disk"


SUBPROCESS_CASES = ["yaml-tab", "unknown-nested-key-tams", "k-equals-n", "score-module-missing",
                    "initial-state-file-missing", "missing-adapter"]


@pytest.mark.parametrize("mutation,key,extra",
                         [_case(c) for c in CASES if c[0] in SUBPROCESS_CASES])
def test_run_rejects_bad_campaign_subprocess(tmp_path, mutation, key, extra):
    path = write_campaign(tmp_path, mutation, extra)
    before = listing(tmp_path)
    code, out, err = run_subprocess(tmp_path, ["run", path.name])
    assert_one_clear_line(code, out, err, NAME, key)
    assert listing(tmp_path) == before


def test_run_missing_file(in_tmp, capsys):
    code, out, err = run_inprocess(capsys, ["run", "nosuch.yaml"])
    assert_one_clear_line(code, out, err, "nosuch.yaml", None)
    assert listing(in_tmp) == []


def test_run_directory_instead_of_file(in_tmp, capsys):
    (in_tmp / "adir").mkdir()
    code, out, err = run_inprocess(capsys, ["run", "adir"])
    assert_one_clear_line(code, out, err, "adir", None)
    assert listing(in_tmp) == ["adir"]


def test_run_missing_file_subprocess(tmp_path):
    code, out, err = run_subprocess(tmp_path, ["run", "nosuch.yaml"])
    assert_one_clear_line(code, out, err, "nosuch.yaml", None)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("kind", ["not-hdf5", "foreign-hdf5"])
def test_run_on_a_file_that_is_not_its_database(in_tmp, capsys, kind):
    """database.path names an existing file tams did not make: the message names that file."""
    if kind == "not-hdf5":
        (in_tmp / "other.h5").write_text("not an HDF5 file\n")
    else:
        import h5py
        with h5py.File(in_tmp / "other.h5", "w") as f:
            f["x"] = [1, 2, 3]
    path = write_campaign(in_tmp, setkey("database.path", "other.h5"), {})
    before = listing(in_tmp)
    code, out, err = run_inprocess(capsys, ["run", "-q", path.name])
    assert_one_clear_line(code, out, err, "other.h5", None)
    assert listing(in_tmp) == before


def test_two_problems_are_counted(in_tmp, capsys):
    mutate = lambda d: setkey("runner.workers", 0)(setkey("tams.trajectories", "many")(d))
    path = write_campaign(in_tmp, mutate, {})
    code, out, err = run_inprocess(capsys, ["run", path.name])
    assert "1 more problem" in err


def test_union_alternatives_are_one_problem(in_tmp, capsys):
    path = write_campaign(in_tmp, setkey("model.initial_state", 5), {})
    code, out, err = run_inprocess(capsys, ["run", path.name])
    assert "more problem" not in err and "list[float]" not in err


def test_database_in_a_new_directory(in_tmp, capsys):
    """Not bad input: an output path in a directory that does not exist yet is made."""
    path = write_campaign(in_tmp, setkey("database.path", "out/sub/c.h5"), {})
    code, out, err = run_inprocess(capsys, ["run", "-q", path.name])
    assert code == 0, err
    assert (in_tmp / "out" / "sub" / "c.h5").is_file()


def test_message_names_line_of_yaml_error(in_tmp, capsys):
    path = write_campaign(in_tmp, raw(BASE_YAML.replace("[x, y]", "[x, y")), {})
    code, out, err = run_inprocess(capsys, ["run", path.name])
    assert "line " in err


def test_unknown_key_suggests_spelling(in_tmp, capsys):
    path = write_campaign(in_tmp, setkey("tams.trajectorys", 4), {})
    code, out, err = run_inprocess(capsys, ["run", path.name])
    assert "trajectories" in err.replace("tams.trajectorys", "")


# --- tams check ----------------------------------------------------------------------------
CHECK_CASES = ["empty-file", "unknown-nested-key-tams", "score-module-missing",
               "step-function-missing", "initial-state-file-missing", "horizon-not-whole-steps"]


@pytest.mark.parametrize("mutation,key,extra", [_case(c) for c in CASES if c[0] in CHECK_CASES])
def test_check_rejects_bad_campaign(in_tmp, capsys, mutation, key, extra):
    path = write_campaign(in_tmp, mutation, extra)
    before = listing(in_tmp)
    code, out, err = run_inprocess(capsys, ["check", path.name])
    assert_one_clear_line(code, out, err, NAME, key)
    assert listing(in_tmp) == before


def test_check_missing_file_subprocess(tmp_path):
    code, out, err = run_subprocess(tmp_path, ["check", "nosuch.yaml"])
    assert_one_clear_line(code, out, err, "nosuch.yaml", None)
    assert listing(tmp_path) == []


def test_check_step_function_raises(in_tmp, capsys):
    """A model that fails its test segment is bad input too: one line, nothing written."""
    extra = {"failing.py": "def step(state, t, dt, noise, eps=0.1):\n"
                           "    raise RuntimeError('boom\\nsecond line')\n"}
    path = write_campaign(in_tmp, setkey("model.step", "failing:step"), extra)
    before = [p for p in listing(in_tmp) if "__pycache__" not in p]
    code, out, err = run_inprocess(capsys, ["check", path.name])
    assert_one_clear_line(code, out, err, NAME, None)
    assert "boom" in err
    # importing failing.py may leave Python's own bytecode cache; tams itself writes nothing
    assert [p for p in listing(in_tmp) if "__pycache__" not in p] == before


# --- tams status / report on something that is not a database -------------------------------
DB_CASES = [
    ("missing", None),
    ("not-hdf5", b"this is not an HDF5 file\n"),
    ("empty", b""),
]


@pytest.mark.parametrize("command", ["status", "report"])
@pytest.mark.parametrize("name,content", DB_CASES, ids=[c[0] for c in DB_CASES])
def test_status_report_reject_non_database(in_tmp, capsys, command, name, content):
    db = in_tmp / "camp.h5"
    if content is not None:
        db.write_bytes(content)
    before = listing(in_tmp)
    code, out, err = run_inprocess(capsys, [command, db.name])
    assert_one_clear_line(code, out, err, "camp.h5", None)
    assert listing(in_tmp) == before


@pytest.mark.parametrize("command", ["status", "report"])
def test_status_report_reject_foreign_hdf5(in_tmp, capsys, command):
    """A valid HDF5 file that tams did not write."""
    import h5py
    with h5py.File(in_tmp / "other.h5", "w") as f:
        f["x"] = [1, 2, 3]
    before = listing(in_tmp)
    code, out, err = run_inprocess(capsys, [command, "other.h5"])
    assert_one_clear_line(code, out, err, "other.h5", None)
    assert listing(in_tmp) == before


@pytest.mark.parametrize("command", ["status", "report"])
def test_status_report_subprocess(tmp_path, command):
    (tmp_path / "camp.h5").write_text("garbage")
    code, out, err = run_subprocess(tmp_path, [command, "camp.h5"])
    assert_one_clear_line(code, out, err, "camp.h5", None)
