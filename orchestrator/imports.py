"""Resolve ``module:function`` import paths named in a campaign YAML.

The campaign's own directory is put on ``sys.path`` first, so a user keeps their model in a
``.py`` file beside the YAML.  Failures become one clear sentence, never a traceback.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any, Callable


class ImportPathError(ValueError):
    pass


def resolve(path: str, base_dir: str | None = None) -> Callable[..., Any]:
    if not isinstance(path, str) or ":" not in path:
        raise ImportPathError(f"{path!r} is not of the form 'module:function'")
    module_name, _, attr = path.partition(":")
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportPathError(
            f"module {module_name!r} cannot be imported ({exc}); put {module_name}.py beside "
            f"the campaign YAML or install it") from None
    except Exception as exc:  # the user's module itself is broken
        raise ImportPathError(
            f"importing module {module_name!r} failed with {type(exc).__name__}: {exc}; fix "
            "that module") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items()
                           if not n.startswith("_") and inspect.isfunction(v)
                           and v.__module__ == module.__name__)
            have = f" (its functions: {', '.join(names)})" if names else ""
            raise ImportPathError(f"module {module_name!r} has no attribute {attr!r}{have}; "
                                  "check the name after the colon")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImportPathError(f"{path!r} is not callable ({type(obj).__name__}); name a function")
    return obj
