"""TAMS orchestrator: trajectory-adaptive multilevel splitting over external forward models."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
