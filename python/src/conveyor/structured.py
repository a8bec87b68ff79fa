"""Structured classes: dataclasses, attrs classes and pydantic v2 models.

The payload codec carries an instance as the object of its fields, and the bus's message
serialiser also rebuilds one. They need four things of such a class: its fields (name,
annotation, whether required), an instance's field values, and how to build one from decoded
values. Each kind answers them through its own public API, found by duck typing, so neither
attrs nor pydantic is imported unless the application uses it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidPayload


@dataclass(frozen=True)
class Field:
    name: str  # the attribute, and the key in the encoded data
    hint: Any
    required: bool
    argument: str  # the constructor's keyword (attrs strips a leading underscore)


def kind(cls: object) -> str | None:
    """``"dataclass"``, ``"attrs"``, ``"pydantic"`` (v2), or None for anything else."""
    if not isinstance(cls, type):
        return None
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if hasattr(cls, "__attrs_attrs__"):
        return "attrs"
    if isinstance(getattr(cls, "model_fields", None), Mapping) and hasattr(cls, "model_validate"):
        return "pydantic"
    return None


def is_model(value: object) -> bool:
    """True for an instance of a message-able class."""
    return not isinstance(value, type) and kind(type(value)) is not None


def fields(cls: type) -> tuple[Field, ...]:
    """The fields that travel: those the constructor takes."""
    found = kind(cls)
    if found == "pydantic":
        model_fields: Mapping[str, Any] = cls.model_fields  # type: ignore[attr-defined]
        return tuple(
            Field(name, info.annotation, info.is_required(), info.alias or name)
            for name, info in model_fields.items()
        )
    hints = _hints(cls)
    if found == "attrs":
        import attrs

        return tuple(
            Field(a.name, hints.get(a.name, Any), a.default is attrs.NOTHING, a.alias or a.name)
            for a in attrs.fields(cls)
            if a.init
        )
    return tuple(
        Field(
            f.name,
            hints.get(f.name, Any),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            f.name,
        )
        for f in dataclasses.fields(cls)
        if f.init
    )


def values(instance: object) -> dict[str, Any]:
    """An instance's field values, by field name."""
    return {field.name: getattr(instance, field.name) for field in fields(type(instance))}


def build(cls: type, decoded: Mapping[str, Any]) -> Any:
    """An instance from decoded values by field name; the class's own checks apply
    (a pydantic model validates)."""
    arguments = {
        field.argument: decoded[field.name] for field in fields(cls) if field.name in decoded
    }
    if kind(cls) == "pydantic":
        return cls.model_validate(arguments)  # type: ignore[attr-defined]
    return cls(**arguments)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as error:
        raise InvalidPayload(
            f"the field annotations of {cls.__qualname__} cannot be resolved ({error}); "
            "define the message at module level and import the types it names"
        ) from None
