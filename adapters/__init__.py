"""ForwardModel implementations.  ``ADAPTERS`` maps the `model.adapter` name of a campaign
to the class implementing it; the orchestrator resolves names through this table only."""

ADAPTERS = {
    "python": "adapters.python:PythonModel",
    "executable": "adapters.executable:ExecutableModel",
}
