"""Training methods, registered by name (``semisupseg methods`` lists them).

Each method lives in its own module and registers itself with :func:`register`; :func:`get_method` and
:func:`list_methods` import the built-in modules on first use.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Type

from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult

_REGISTRY: Dict[str, Type[Method]] = {}

#: built-in method modules, imported on first use of the registry
BUILTIN_MODULES = (
    "supervised", "mean_teacher", "uamt", "entropy_min", "dtc",
    "sassnet", "sbnet", "vwadv", "sgrs",
)
_loaded = False


def register(cls: Type[Method]) -> Type[Method]:
    """Class decorator: register a :class:`Method` subclass under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for mod in BUILTIN_MODULES:
        importlib.import_module(f"semisupseg.methods.{mod}")
    _loaded = True


def get_method(name: str) -> Type[Method]:
    """The method class registered as ``name``; ``KeyError`` listing the known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}") from None


def list_methods() -> List[Type[Method]]:
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


__all__ = ["Batch", "Method", "MethodParams", "StepContext", "StepResult", "register", "get_method", "list_methods"]
