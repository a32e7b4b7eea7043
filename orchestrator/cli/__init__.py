"""The ``tams`` command line (``orchestrator.cli.main``)."""
from orchestrator.cli.main import main

__all__ = ["main"]
