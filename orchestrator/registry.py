"""Resolve the names a campaign uses (adapter, launcher, runner kind, algorithm) to code.

The orchestrator never imports a concrete adapter, launcher or runner kind by name
(DESIGN §3): every one is an *entry point* of an installed distribution, in one of the
groups below, and this module is the only place that reads them.  The project declares its
own built-ins the same way, in ``pyproject.toml`` (``[project.entry-points."tams.adapters"]``
...), so a third-party package plugs in by declaring entry points of its own: no table in
this project lists them, and no edit of this project is needed (docs/plugins.md).

Every way a name can fail to resolve is one sentence the CLI prints as is: an unknown name
(listing the known ones), two distributions claiming one name, a plug-in that fails to
import, a stale installation of this project, or another installed package named
``adapters`` shadowing ours.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

#: this project's distribution: its entry points are the built-ins (documented by docgen)
DISTRIBUTION = "tams-orchestrator"
#: the value of ``adapters.__tams_distribution__`` when ``adapters`` is ours
MARKER = "__tams_distribution__"

REINSTALL = ("reinstall the project (`pip install -e .` in its directory, or `pip install` of "
             "its package)")


class PluginError(UserError):
    """A plug-in that cannot be loaded: one sentence naming it and the fix (exit status 2)."""


class UnknownName(KeyError):
    """A name no installed distribution registers.  A ``KeyError`` (``adapter_class`` always
    raised one for an unknown name) whose ``str`` is the one-sentence message."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Plugin:
    """One entry point: the name users write, where it points, who registers it."""

    name: str
    value: str  # "module:attribute"
    distribution: str

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()


def _distribution_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else ""


_EVERY_ENTRY_POINT: Any = None
_SCAN_LOCK = threading.Lock()


def _installed_entry_points() -> Any:
    """The entry points of every installed distribution, read once per process.
    ``entry_points(group=...)`` reads every distribution's metadata again for each group:
    four groups cost 13 ms here against 3 ms for one pass, in every ``tams`` command."""
    global _EVERY_ENTRY_POINT
    with _SCAN_LOCK:
        if _EVERY_ENTRY_POINT is None:
            _EVERY_ENTRY_POINT = entry_points()
        return _EVERY_ENTRY_POINT


class Registry:
    """The plug-ins of one entry-point group, read once per process, loaded on first use."""

    def __init__(self, group: str, what: str, example: str):
        self.group = group
        self.what = what  # "adapter", "launcher", ... as said in messages
        self.example = example  # a built-in name, for messages
        self._lock = threading.Lock()
        self._plugins: dict[str, list[Plugin]] | None = None
        self._loaded: dict[str, Any] = {}

    def _all(self) -> dict[str, list[Plugin]]:
        with self._lock:
            if self._plugins is None:
                found: dict[str, list[Plugin]] = {}
                for ep in _installed_entry_points().select(group=self.group):
                    plugin = Plugin(ep.name, ep.value, _distribution_of(ep))
                    same = found.setdefault(ep.name, [])
                    if all(p.value != plugin.value for p in same):
                        same.append(plugin)
                self._plugins = found
            return self._plugins

    def _require_builtins(self) -> None:
        if not any(p.distribution == DISTRIBUTION for ps in self._all().values() for p in ps):
            raise PluginError(
                f"the installed metadata of {DISTRIBUTION} declares no `{self.group}` entry "
                f"points (it was installed before they existed, or the project is run from a "
                f"source tree that is not installed), so no {self.what} can be found; "
                f"{REINSTALL}.")

    def names(self) -> list[str]:
        """Every registered name, sorted (built-ins and plug-ins)."""
        self._require_builtins()
        return sorted(self._all())

    def builtin_names(self) -> list[str]:
        """The names this project registers itself (what its reference documents)."""
        self._require_builtins()
        return sorted(n for n, ps in self._all().items()
                      if any(p.distribution == DISTRIBUTION for p in ps))

    def unknown(self, name: Any) -> str:
        """The sentence for a name nobody registers (without the file and key)."""
        return (f"unknown {self.what} {name!r}; use one of {self.names()} (a plug-in "
                f"{self.what} is found once its package is installed)")

    def load(self, name: str) -> Any:
        """The object registered as ``name``; :class:`UnknownName` if there is none."""
        if name in self._loaded:
            return self._loaded[name]
        plugins = self._all().get(name) if isinstance(name, str) else None
        if not plugins:
            check_own_adapters_package()  # a shadowed `adapters` also hides our names
            raise UnknownName(self.unknown(name))
        if len(plugins) > 1:
            who = ", ".join(f"{p.distribution or '?'} ({p.value})" for p in plugins)
            raise PluginError(f"the {self.what} name {name!r} is registered by several "
                              f"installed distributions: {who}; uninstall all but one.")
        plugin = plugins[0]
        obj = _import(plugin, self)
        with self._lock:
            self._loaded[name] = obj
        return obj


def _import(plugin: Plugin, registry: Registry) -> Any:
    if plugin.module.partition(".")[0] == "adapters":
        check_own_adapters_package()
    module_name, _, attr = plugin.value.partition(":")
    by = f"registered by {plugin.distribution}" if plugin.distribution else "registered"
    try:
        obj: Any = importlib.import_module(module_name.strip())
        for part in attr.strip().split(".") if attr.strip() else ():
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - a broken plug-in must not become a traceback
        what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        fix = REINSTALL if plugin.distribution == DISTRIBUTION else (
            f"fix or reinstall {plugin.distribution or 'the package that provides it'}")
        raise PluginError(f"the {registry.what} {plugin.name!r} ({by}, entry point "
                          f"{plugin.value} in `{registry.group}`) cannot be loaded ({what}); "
                          f"{fix}.") from None
    return obj


# --- the `adapters` package must be ours -----------------------------------------------------
_OURS = Path(__file__).resolve().parent.parent  # the directory holding orchestrator/ and adapters/


def check_own_adapters_package() -> None:
    """Raise :class:`PluginError` when ``import adapters`` finds another project's package.

    An unrelated distribution on the package index also installs a top-level ``adapters``;
    installed beside this project (or put first on ``sys.path``) it hides ours, and every
    built-in adapter and launcher would otherwise look like an 'unknown adapter' or fail
    with an ImportError.  Ours sits beside ``orchestrator/`` and carries :data:`MARKER`."""
    spec = importlib.util.find_spec("adapters")
    origin = getattr(spec, "origin", None) if spec is not None else None
    where = Path(origin).resolve() if origin else None
    beside = where is not None and where.parent.parent == _OURS
    marked = False
    if beside:
        try:
            marked = getattr(importlib.import_module("adapters"), MARKER, None) == DISTRIBUTION
        except Exception:  # noqa: BLE001 - its __init__ is not ours (or broken): reported below
            marked = False
    if beside and marked:
        return
    if spec is None:
        raise PluginError(f"this project's `adapters` package cannot be found (expected in "
                          f"{_OURS / 'adapters'}); {REINSTALL}.")
    others = [d for d in dict.fromkeys(packages_distributions().get("adapters", []))
              if d != DISTRIBUTION]
    dist = f" of the distribution {', '.join(others)}" if others else ""
    fix = (f"uninstall it (`pip uninstall {others[0]}`)" if others else
           "remove it from PYTHONPATH (or leave the directory that holds it)")
    raise PluginError(f"another installed package named `adapters`{dist} "
                      f"({where or 'a namespace package'}) shadows this project's own "
                      f"`adapters` package, so its adapters and launchers cannot be loaded; "
                      f"{fix}, or run tams in a virtual environment without it.")


# --- the groups --------------------------------------------------------------------------------
ADAPTERS = Registry("tams.adapters", "adapter", "python")
LAUNCHERS = Registry("tams.launchers", "launcher", "local")
RUNNERS = Registry("tams.runners", "runner kind", "threads")
ALGORITHMS = Registry("tams.algorithms", "algorithm", "tams")


def known_adapters() -> list[str]:
    return ADAPTERS.names()


def adapter_class(name: str):
    """The ForwardModel class registered as ``name`` (raises :class:`UnknownName`)."""
    return ADAPTERS.load(name)


def launcher_class(name: str):
    """The launcher class registered as ``name`` (``local``, ``docker``, ``apptainer``...)."""
    return LAUNCHERS.load(name)


def runner_class(name: str):
    """The runner-kind class registered as ``name`` (``threads``, ``processes``, ``slurm``...)."""
    return RUNNERS.load(name)


def algorithm(name: str):
    """The algorithm registered as ``name`` (``tams``; see docs/plugins.md)."""
    return ALGORITHMS.load(name)
