"""Resolve an adapter name from the campaign to its class.

The orchestrator never imports a concrete adapter by name: the table lives in
``adapters/__init__.py`` (``ADAPTERS``, name -> "module:Class"), and third-party packages
may add their own through the ``tams.adapters`` entry-point group.
"""
from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from orchestrator.model import ForwardModel


@cache
def _table() -> dict[str, str]:
    table: dict[str, str] = {}
    for ep in entry_points(group="tams.adapters"):
        table[ep.name] = ep.value
    adapters = importlib.import_module("adapters")
    table.update(getattr(adapters, "ADAPTERS", {}))
    return table


def known_adapters() -> list[str]:
    return sorted(_table())


@cache
def adapter_class(name: str) -> type[ForwardModel]:
    target = _table()[name]
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
