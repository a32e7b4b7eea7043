"""The import rules of DESIGN §3 and docs/architecture.md, enforced on the source itself.

Parsed with ``ast`` (no import side effects): a rule broken in any module, even in an import
inside a function, fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "orchestrator"

# modules that start processes, threads of their own, or touch the network
PROCESS_MODULES = {"subprocess", "multiprocessing", "concurrent", "threading", "signal", "socket",
                   "shutil", "docker", "pty"}


def _imports(path: Path) -> set[str]:
    """Top-level module names imported anywhere in a file (absolute imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _modules() -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def _users(prefix: str) -> set[str]:
    return {m for m, imps in _modules().items()
            if any(i == prefix or i.startswith(prefix + ".") for i in imps)}


def test_only_the_hdf5_store_imports_h5py():
    assert _users("h5py") == {"orchestrator/store/hdf5.py"}


def test_only_the_executor_imports_parsl():
    assert _users("parsl") == {"orchestrator/runtime/executor.py"}


def test_core_does_no_io_and_starts_nothing():
    bad = {}
    for mod, imps in _modules().items():
        if not mod.startswith("orchestrator/core/"):
            continue
        roots = {i.split(".")[0] for i in imps}
        wrong = roots & (PROCESS_MODULES | {"h5py", "parsl", "yaml"})
        wrong |= {i for i in imps if i.startswith(("orchestrator.store", "orchestrator.runtime",
                                                   "orchestrator.cli", "adapters"))}
        if wrong:
            bad[mod] = sorted(wrong)
    assert not bad, f"core modules importing I/O, processes or outer layers: {bad}"


def test_orchestrator_never_imports_a_concrete_adapter():
    assert _users("adapters") == set()


@pytest.mark.parametrize("layer,forbidden", [
    ("orchestrator/store/", ("orchestrator.runtime", "orchestrator.cli")),
    ("orchestrator/runtime/", ("orchestrator.cli",)),
])
def test_layers_point_inwards(layer, forbidden):
    bad = {m: sorted(i for i in imps if i.startswith(forbidden))
           for m, imps in _modules().items() if m.startswith(layer)}
    assert not {m: v for m, v in bad.items() if v}


def test_the_rules_can_fail(tmp_path):
    """The scanner sees imports inside functions (the test above would catch one)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import h5py\n    from parsl import python_app\n")
    assert {"h5py", "parsl", "parsl.python_app"} <= _imports(f)


def test_architecture_doc_names_every_module():
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [m for m in _modules() if not m.endswith("__init__.py")
               and m.removeprefix("orchestrator/") not in doc]
    assert not missing, f"docs/architecture.md does not describe {missing}"
