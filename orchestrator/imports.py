"""Resolve ``module:function`` import paths named in a campaign YAML.

The campaign's own directory is put on ``sys.path`` first, so a user keeps their model in a
``.py`` file beside the YAML.  Failures become one clear sentence, never a traceback.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any


class ImportPathError(ValueError):
    pass


# callables given to the Python API that no import path names (lambdas, closures): resolved
# in this process only
_REGISTERED: dict[str, Callable[..., Any]] = {}
REGISTERED_PREFIX = "tams-registered"


def register(fn: Callable[..., Any]) -> str:
    """A pseudo import path for ``fn``, valid in this process (threads, in-process runs).

    The path is made of the function's module and name, not its address, so the same
    notebook cell run in a new session gives the same campaign identity (and can resume);
    a different function with a name already taken gets a numbered one."""
    name = (f"{getattr(fn, '__module__', '') or ''}.{getattr(fn, '__qualname__', type(fn).__name__)}"
            .replace("<", "").replace(">", "").strip("."))
    path, i = f"{REGISTERED_PREFIX}:{name}", 1
    while _REGISTERED.get(path, fn) is not fn:
        i += 1
        path = f"{REGISTERED_PREFIX}:{name}-{i}"
    _REGISTERED[path] = fn
    return path


def path_of_callable(fn: Callable[..., Any]) -> str:
    """``module:qualname`` when that import path gives back ``fn`` itself (workers in other
    processes can then import it), else a registered pseudo path (:func:`register`)."""
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and qual and "<" not in qual:
        try:
            obj: Any = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
            if obj is fn:
                return f"{module}:{qual}"
        except (ImportError, AttributeError):
            pass
    return register(fn)


def is_registered(path: str) -> bool:
    return path.startswith(REGISTERED_PREFIX + ":")


def resolve(path: str, base_dir: str | None = None) -> Callable[..., Any]:
    if isinstance(path, str) and is_registered(path):
        try:
            return _REGISTERED[path]
        except KeyError:
            raise ImportPathError(f"{path!r} names a Python function given to tams.run in another "
                                  "process; give an import path 'module:function' for runners "
                                  "that start other processes (processes, slurm)") from None
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
        if not hasattr(obj, part) and module_name == "__main__":
            raise ImportPathError(f"{path!r} is a function of a notebook or script, which this "
                                  "process does not have; such functions run with the threads "
                                  "runner only: put it in a module for processes or slurm")
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
