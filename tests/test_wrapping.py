"""docs/wrapping.md: every command it shows runs here, with the exit status it says, and prints
what its text blocks show ("..." stands for what varies: times, paths); every excerpt of the
wrapper, the Fortran model and the campaign is still in the file it is taken from.

The example is containers/legacy-heat: a "legacy" Fortran code (own namelist, a boundary file
opened by a relative name, leapfrog with two time levels, two sub-models, an hourly step,
`stop` with exit status 0) and its wrapper script heat_segment.py, run through
configs/legacy-heat.yaml by `tams check` (restart exact; its broken variant, which keeps one
time level only, rejected) and by a small `tams run`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require

DOC = REPO / "docs" / "wrapping.md"
SOURCES = {"python": REPO / "containers/legacy-heat/heat_segment.py",
           "fortran": REPO / "containers/legacy-heat/heat.F90",
           "yaml": REPO / "configs/legacy-heat.yaml"}


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_every_excerpt_is_in_its_file():
    seen = {k: 0 for k in SOURCES}
    for lang, body in blocks():
        if lang in SOURCES:
            assert body.rstrip("\n") in SOURCES[lang].read_text(), \
                f"this {lang} excerpt of docs/wrapping.md is not in {SOURCES[lang]}:\n{body}"
            seen[lang] += 1
    assert all(seen.values()), seen


def _pattern(text: str) -> re.Pattern:
    parts = [re.escape(p) for p in text.strip().split("...")]
    return re.compile(".*?".join(parts), re.S)


@pytest.mark.slow
def test_every_command_runs_as_shown(tmp_path):
    """Each ```sh line runs in bash from a directory holding the repository's `containers`
    and `configs` (outputs land there, not in the repository); a ```text block right after
    an ```sh block is what its last command printed."""
    require(shutil.which("gfortran") is not None and shutil.which("make") is not None,
            "gfortran and make build the example")
    for name in ("containers", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    bs = blocks()
    ran = 0
    for i, (lang, body) in enumerate(bs):
        if lang != "sh":
            continue
        res = None
        for line in body.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            expect = 2 if "# exits 2" in line else 0
            res = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, text=True,
                                 capture_output=True, timeout=900)
            assert res.returncode == expect, (line, res.stdout[-2000:], res.stderr[-2000:])
            ran += 1
        if i + 1 < len(bs) and bs[i + 1][0] == "text" and res is not None:
            shown = bs[i + 1][1]
            out = res.stdout + res.stderr
            assert _pattern(shown).search(out), f"{line!r} printed\n{out}\nnot\n{shown}"
    assert ran >= 6
