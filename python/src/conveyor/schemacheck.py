"""Validators for the spec's schemas, with the ECMA-262 meaning of ``pattern``.

JSON Schema patterns are ECMA-262 regular expressions. Python's ``re`` reads most of them
the same way, with one dangerous difference: ``$`` also matches before a final newline, so
the stock validator accepts ``"9\\n"`` as a job id or ``"mail\\n"`` as a queue name. Every
schema check of the library goes through :func:`validator`, whose ``pattern`` keyword
matches ``$`` at the end of the input only, and which asserts ``format: date-time`` (a
timestamp names an instant that exists: no 30 February, spec.md#TIME-004), as ajv with
ajv-formats does (spec.md#VER-008).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from .specfiles import schema_id, schema_registry


@functools.cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema (ECMA-262) pattern compiled for ``re.search``.

    Every ``$`` outside a character class becomes ``\\Z`` (end of input, as in ECMA-262
    without the multiline flag). ``re.ASCII`` gives ``\\d`` and ``\\w`` their ECMA-262
    meaning (ASCII digits and word characters, not every Unicode digit).
    """
    translated: list[str] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            translated.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        translated.append(char)
        index += 1
    return re.compile("".join(translated), re.ASCII)


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    """RFC 3339 date-time of an instant that exists; other types pass (JSON Schema)."""
    if not isinstance(instance, str):
        return True
    if _DATE_TIME.fullmatch(instance) is None:
        return False
    datetime.fromisoformat(instance.upper())  # Python 3.11 reads "Z"
    return True


_EcmaValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern_keyword}
)


def _without_dialect(contents: Any) -> Any:
    return {key: value for key, value in contents.items() if key != "$schema"}


@functools.cache
def _registry() -> Registry[Any]:
    # Without "$schema" in the resources, $ref keeps this validator class instead of
    # switching to the stock 2020-12 one (whose pattern uses Python's "$").
    return Registry().with_resources(
        (uri, DRAFT202012.create_resource(_without_dialect(schema_registry()[uri].contents)))
        for uri in schema_registry()
    )


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator of ``schemas/<name>.schema.json`` (built once per schema)."""
    return _EcmaValidator(  # type: ignore[no-any-return]
        {"$ref": schema_id(name)}, registry=_registry(), format_checker=_FORMATS
    )
