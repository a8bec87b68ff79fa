"""A python-jsonschema validator that reads the spec's schemas as JavaScript validators do.

JSON Schema says that ``pattern`` is an ECMA-262 regular expression and that a validator may
assert ``format``. Two differences between Python and JavaScript validators matter here:

* Python's ``$`` also matches before a final newline, so the stock validator accepts ``"9\\n"``
  where ajv refuses it. :func:`ecma_pattern` rewrites every ``$`` outside a character class as
  ``\\Z`` and compiles with ``re.ASCII`` (``\\d`` is ASCII digits only, as in ECMA-262).
* ``format: date-time`` is asserted (the spec's timestamps are real instants: no 30 February),
  as ajv-formats asserts it.

The suite does not import the reference library (which applies the same two rules in
``conveyor/schemacheck.py``), so that a bug shared with it cannot hide;
``spec/tools/cross_validate.py`` checks these rules against ajv.
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


@functools.cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema (ECMA-262, no flags) pattern compiled for ``re.search``."""
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


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def is_date_time(instance: object) -> bool:
    """RFC 3339 date-time naming an instant that exists (a real day, hour 0 to 23, no leap
    second); other types pass, as JSON Schema says for formats."""
    if not isinstance(instance, str):
        return True
    if DATE_TIME.fullmatch(instance) is None:
        return False
    datetime.fromisoformat(instance.upper())  # Python 3.11 reads "Z"
    return True


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def registry_without_dialect(schemas: dict[str, Any]) -> Registry:
    """Schemas keyed by ``$id``, without ``$schema``: so that ``$ref`` keeps this validator
    class instead of switching to the stock 2020-12 one."""
    resources = []
    for contents in schemas.values():
        if isinstance(contents, dict) and isinstance(contents.get("$id"), str):
            bare = {key: value for key, value in contents.items() if key != "$schema"}
            resources.append((contents["$id"], DRAFT202012.create_resource(bare)))
    return Registry().with_resources(resources)


def validator(target_uri: str, registry: Registry) -> Any:
    """The validator of the schema at ``target_uri`` (an ``$id``, optionally with a pointer)."""
    return EcmaValidator({"$ref": target_uri}, registry=registry, format_checker=FORMATS)
