"""Example plug-ins for the TAMS orchestrator (docs/plugins.md).

- ``demo`` (``tams.adapters``): a forward model in pure numpy, the 1-D double well
  dx = (x - x^3) dt + sqrt(eps) dW, states saved as ``.npy`` files;
- ``nice`` (``tams.launchers``): the executable adapter's command run under ``nice -n LEVEL``,
  with its own section ``model.nice``;
- ``serial`` (``tams.runners``): one segment at a time in a Parsl ThreadPoolExecutor.

Each is found by the orchestrator through this distribution's entry points alone.
"""
