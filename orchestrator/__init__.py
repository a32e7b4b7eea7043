"""TAMS orchestrator: trajectory-adaptive multilevel splitting over external forward models.

The Python API (:mod:`orchestrator.api`) is importable from here: ``orchestrator.run``,
``orchestrator.load_campaign``.  It is loaded on first use, so ``import orchestrator`` stays
cheap (no Parsl, no h5py) for the command line and for workers.
"""

__version__ = "0.2.0.dev0"
SCHEMA_VERSION = 2

__all__ = ["run", "load_campaign", "RunResult", "__version__", "SCHEMA_VERSION"]


def __getattr__(name: str):
    if name in ("run", "load_campaign", "RunResult", "ReplicaResult"):
        from orchestrator import api
        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
