"""Issue #11, item 7: what got in the way of a newcomer wrapping a legacy code.

1. `tams export` failed after the README's set-up (`pip install -e .`): xarray and h5netcdf
   were an extra; every module export imports must now be a plain dependency;
2. `executable: NAME` for a file beside the YAML was "not found on PATH" with no hint: now
   "did you mean `executable: ./NAME`";
3. a missing executable suggested `make -C <the executable's grandparent>` whatever it was:
   now the nearest folder that holds a Makefile, or no make command at all.
"""
from __future__ import annotations

import ast
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, write_campaign
from test_cli_fixes import tams

_STDLIB = set(sys.stdlib_module_names)


def _third_party_imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in _STDLIB and m not in ("orchestrator", "adapters")}


def test_export_needs_only_the_plain_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    needed = _third_party_imports(REPO / "orchestrator/store/export.py") | {"h5netcdf"}
    assert needed <= deps, f"`tams export` needs {sorted(needed - deps)}, not in dependencies"


@pytest.mark.slow
def test_export_runs_after_the_plain_setup(tmp_path):
    """The CLI end to end: a finished campaign exported to netCDF (this venv has exactly the
    plain dependencies plus the test tools, none of which export uses)."""
    path = write_campaign(tmp_path, tams__segment_steps=400, replicas=1)
    assert tams(tmp_path, "run", "-q", path.name).returncode == 0
    res = tams(tmp_path, "export", "camp.h5")
    assert res.returncode == 0 and (tmp_path / "camp.nc").stat().st_size > 0, res


def _exe_campaign(tmp_path: Path, executable: str) -> Path:
    return write_campaign(tmp_path, model={"adapter": "executable", "executable": executable,
                                           "dt": 0.01, "noise_dim": 2,
                                           "observables": ["x", "y"]})


def test_a_bare_name_beside_the_yaml_gets_did_you_mean(tmp_path):
    exe = tmp_path / "speedy_segment.sh"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    path = _exe_campaign(tmp_path, "speedy_segment.sh")
    res = tams(tmp_path, "check", path.name)
    assert res.returncode == 2, res
    assert "did you mean `executable: ./speedy_segment.sh`?" in res.stderr, res.stderr
    # a bare name that is nowhere keeps the plain PATH message
    path = _exe_campaign(tmp_path, "no_such_model_x")
    res = tams(tmp_path, "check", path.name)
    assert "not found on PATH" in res.stderr and "did you mean" not in res.stderr, res.stderr


def test_the_build_hint_names_the_folder_of_the_makefile(tmp_path):
    model = tmp_path / "models" / "mymodel"
    model.mkdir(parents=True)
    (model / "Makefile").write_text("all:\n\ttrue\n")
    cfg = tmp_path / "configs"
    cfg.mkdir()
    # bin/ not built yet: the Makefile is one level up from the executable's folder
    res = tams(cfg, "check", _exe_campaign(cfg, "../models/mymodel/bin/mymodel").name)
    assert res.returncode == 2 and "`make -C ../models/mymodel`" in res.stderr, res.stderr
    # a script beside the YAML with no Makefile near it: no make command (the old hint said
    # `make -C <tmp_path>`, the YAML folder's unrelated parent)
    res = tams(cfg, "check", _exe_campaign(cfg, "./wrapper.sh").name)
    assert res.returncode == 2 and "does not exist; build the model or fix the path" \
        in res.stderr and "make -C" not in res.stderr, res.stderr
