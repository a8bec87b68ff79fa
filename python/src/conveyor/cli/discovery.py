"""Finding the application: ``--app module:attribute``, or a bare app over ``--url``."""

from __future__ import annotations

from typing import Any

from ..app import Conveyor
from ..appref import import_attribute
from ..errors import ConfigurationError


def load_app(spec: str) -> Conveyor:
    """Import ``module:attribute`` and return the Conveyor app it names.

    The attribute may be a :class:`~conveyor.Conveyor` or a zero-argument factory returning
    one; ``module`` alone means ``module:app``. The working directory is importable, as
    when running ``python -m``. A path to a ``.py`` file (``./jobs.py:app``) is imported as
    its module, with its directory importable.
    """
    target: Any = import_attribute(spec)
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
