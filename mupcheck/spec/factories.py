"""A user's model and optimizer factories, written 'package.module:function': imported, and asked what they take.

    build = import_factory("mymodels:build_gpt")      # ModelError says why it cannot be
    factory_takes(build, "depth")                     # does it accept that keyword (or **kwargs)?

The grid's checks ask these questions before anything trains, so that a factory that cannot build a depth
or an output multiplier is one line naming the key, not a failure in every run.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from mupcheck.errors import ModelError
from mupcheck.spec.schema import BUILTIN_MODELS, TRAINER_MODEL, setting_default

__all__ = ["FACTORY_RE", "factory_depth", "factory_takes", "import_factory"]

FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def import_factory(spec: str) -> Callable[..., Any]:
    """Import a user model factory written 'package.module:function'; ModelError says why it cannot be."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user module may raise anything at import
        raise ModelError(f"cannot import {module_name!r} (run from the directory that holds it, or install it): "
                         f"{type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"module {module_name!r} has no callable {attr!r}")
    return factory


def factory_depth(model: str) -> int:
    """The depth a grid that sets none builds: the user's factory's own default for `depth` when it has one
    (mupcheck passes `depth` to a factory that takes it, and must not override the factory's choice unasked),
    else RunSettings' default."""
    default: int = setting_default("depth")
    if model in (*BUILTIN_MODELS, TRAINER_MODEL):
        return default
    try:
        param = inspect.signature(import_factory(model)).parameters.get("depth")
    except (ModelError, TypeError, ValueError):
        return default  # the checks below say what is wrong with the factory
    return param.default if param is not None and type(param.default) is int and param.default >= 1 else default


def factory_takes(factory: Callable[..., Any], name: str) -> bool:
    """Whether a model factory accepts the keyword `name` (or **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(q.name == name or q.kind is inspect.Parameter.VAR_KEYWORD for q in params)
