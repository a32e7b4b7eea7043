"""ForwardModel implementations (``python``, ``executable``) and the launchers of the
executable adapter (``local``, ``docker``, ``apptainer``).

They are found by name through the entry points declared in ``pyproject.toml``
(orchestrator/registry.py), never through a table here.  ``__tams_distribution__`` marks this
package as the project's own: an unrelated distribution on the package index also installs a
top-level ``adapters``, and the registry uses the marker to say so when that one shadows ours.
"""

__tams_distribution__ = "tams-orchestrator"
