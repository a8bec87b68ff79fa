"""Importing what ``module:attribute`` names, without importing the app module of Conveyor.

The CLI's ``--app`` and a worker's handler processes (``isolation="process"``) both find the
application this way, so a child process loads the very app the command line named.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _split(spec: str) -> tuple[str, str]:
    """(module or file, attribute); the last ``:`` splits, so a Windows path keeps its drive."""
    target, separator, attribute = spec.rpartition(":")
    attribute = attribute.strip()
    if not separator or (attribute and not _ATTRIBUTE.fullmatch(attribute)):
        return spec.strip(), "app"
    return target.strip(), attribute or "app"


def _module_of_file(spec: str, target: str) -> str:
    """A ``.py`` file named by --app: its directory becomes importable, its stem the module."""
    path = Path(target)
    if not path.is_file():
        raise ConfigurationError(
            f"--app {spec} names the file {target}, which does not exist; give a path to a "
            ".py file or a module name, e.g. --app ./jobs.py:app or --app myproject.jobs:app"
        )
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise ConfigurationError(
            f"--app {spec} names {target}, which is not a Python module file (name.py); "
            "e.g. --app ./jobs.py:app or --app myproject.jobs:app"
        )
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return path.stem


def import_attribute(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means ``module:app``) and return the value.

    The working directory is importable, as when running ``python -m``. A path to a ``.py``
    file (``./jobs.py:app``) is imported as its module, with its directory importable.
    """
    module_name, attribute = _split(spec)
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module_name = _module_of_file(spec, module_name)
    if not module_name:
        raise ConfigurationError(
            f"--app {spec!r} names no module; use module:attribute, e.g. --app myproject.jobs:app"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_name.startswith(".") or not all(p.isidentifier() for p in module_name.split(".")):
        raise ConfigurationError(
            f"--app {spec} does not name a module: use module:attribute or a path to a .py file, "
            "e.g. --app myproject.jobs:app or --app ./jobs.py:app"
        )
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
    return target
