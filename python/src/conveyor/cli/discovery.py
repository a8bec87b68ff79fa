"""Finding the application: ``--app module:attribute``, or a bare app over ``--url``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ..app import Conveyor
from ..errors import ConfigurationError


def load_app(spec: str) -> Conveyor:
    """Import ``module:attribute`` and return the Conveyor app it names.

    The attribute may be a :class:`~conveyor.Conveyor` or a zero-argument factory returning
    one; ``module`` alone means ``module:app``. The working directory is importable, as
    when running ``python -m``.
    """
    module_name, _, attribute = spec.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip() or "app"
    if not module_name:
        raise ConfigurationError(
            f"--app {spec!r} names no module; use module:attribute, e.g. --app myproject.jobs:app"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigurationError(
                f"cannot import module {module_name!r} named by --app {spec}: {error}; run from "
                "the project directory or add it to PYTHONPATH"
            ) from None
        raise
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attribute!r} (from --app {spec}); "
                "name the Conveyor instance, e.g. --app myproject.jobs:app"
            ) from None
    if isinstance(target, Conveyor):
        return target
    if callable(target):
        try:
            made = target()
        except TypeError as error:
            raise ConfigurationError(
                f"--app {spec} is callable but could not be called without arguments ({error}); "
                "name a Conveyor instance or a zero-argument factory"
            ) from None
        if isinstance(made, Conveyor):
            return made
        raise ConfigurationError(
            f"--app {spec} is a factory that returned {type(made).__name__}, not a "
            "conveyor.Conveyor"
        )
    raise ConfigurationError(
        f"--app {spec} names a value of type {type(target).__name__}, not a conveyor.Conveyor "
        "or a factory of one"
    )
