"""JSON payload codec: plain JSON plus tagged single-key objects for typed values.

``{"$bytes": ...}``, ``{"$datetime": ...}``, ``{"$date": ...}``, ``{"$decimal": ...}`` and
``{"$uuid": ...}`` carry values JSON lacks, so any language can decode them. A dataclass,
attrs or pydantic instance travels as the object of its fields (a handler receives that
object). No pickle: a payload can never make a worker construct arbitrary objects.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from . import structured
from .errors import InvalidPayload, PayloadTooLarge, Refused

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_DEPTH = 64  # LIMIT-006: arrays and objects nest at most this deep
TAGS = frozenset({"$bytes", "$datetime", "$date", "$decimal", "$uuid"})
_SURROGATE = re.compile("[\ud800-\udfff]")
# Values encoded as an array or an object (typed values are objects), so one level deeper.
_CONTAINERS = (bytes, bytearray, memoryview, date, Decimal, uuid.UUID, Mapping, list, tuple)


def check_text(value: str, path: str, error: type[Refused] = InvalidPayload) -> None:
    """LIMIT-003 / LIMIT-007: no U+0000 and no lone surrogate, which UTF-8 cannot carry.

    In a Python string every surrogate code point is unpaired (a pair is one code point).
    """
    if "\x00" in value:
        raise error(
            f"{path} contains U+0000, which some databases cannot store; "
            "remove it or send the data as bytes"
        )
    if not value.isascii() and _SURROGATE.search(value):
        raise error(
            f"{path} contains a lone surrogate (U+D800 to U+DFFF), which is no Unicode "
            "character and cannot be written as UTF-8; decode the text it came from properly "
            "(for example bytes.decode('utf-8', errors='replace')) before publishing"
        )


def _too_deep(path: str) -> InvalidPayload:
    return InvalidPayload(
        f"{path} nests arrays and objects more than {MAX_DEPTH} deep, the limit every "
        "implementation reads (LIMIT-006); flatten it, or store the data elsewhere and pass a "
        "reference"
    )


def encode(value: Any, path: str = "payload", depth: int = 0) -> Any:
    """Turn a Python value into the JSON value stored with a request.

    ``depth`` is how many arrays and objects enclose ``value``; one whose encoding would
    nest deeper than :data:`MAX_DEPTH` is refused before any recursion gets deep.
    """
    if isinstance(value, str):
        check_text(value, path)
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{path} is {value!r}; JSON has no NaN or infinity")
        return value
    if depth >= MAX_DEPTH and isinstance(value, _CONTAINERS):
        raise _too_deep(path)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidPayload(f"{path} is a naive datetime; attach a timezone")
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidPayload(f"{path} is {value}; only finite decimals travel")
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in TAGS:
            raise InvalidPayload(
                f"{path} is an object whose only key is {next(iter(value))!r}, a name the "
                "codec reserves for typed values; rename the key or add another one"
            )
        encoded: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"{path} has a non-string key {key!r}; JSON keys are strings")
            check_text(key, f"{path} key")
            encoded[key] = encode(item, f"{path}.{key}", depth + 1)
        return encoded
    if isinstance(value, list | tuple):
        return [encode(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if structured.is_model(value):  # a dataclass, attrs or pydantic instance: its fields
        return encode(structured.values(value), path, depth)
    raise InvalidPayload(
        f"{path} is a {type(value).__name__}, which the JSON codec cannot carry; "
        "send plain JSON types, bytes, date/datetime, Decimal, UUID, or dataclass, attrs or "
        "pydantic instances"
    )


def check_json(value: Any, path: str = "payload", depth: int = 0) -> None:
    """The rules of :func:`encode` that an already-encoded JSON value must follow:
    LIMIT-003 (strings, member names), LIMIT-006 (depth) and LIMIT-007 (surrogates)."""
    if isinstance(value, str):
        check_text(value, path)
    elif isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            raise _too_deep(path)
        if isinstance(value, list):
            for index, item in enumerate(value):
                check_json(item, f"{path}[{index}]", depth + 1)
            return
        for key, item in value.items():
            check_text(key, f"{path} key")
            check_json(item, f"{path}.{key}", depth + 1)


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, raw),) = value.items()
            if tag == "$bytes":
                return base64.b64decode(raw)
            if tag == "$datetime":
                return datetime.fromisoformat(raw)
            if tag == "$date":
                return date.fromisoformat(raw)
            if tag == "$decimal":
                return _decimal(raw)
            if tag == "$uuid":
                return uuid.UUID(raw)
        return {key: decode(item) for key, item in value.items()}
    return value


_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _decimal(raw: Any) -> Decimal:
    """spec.md#CODEC-006: ``1.``, ``.5``, `` 1`` and ``Infinity`` are malformed, although
    Python's Decimal reads them; a malformed typed value never reaches a handler."""
    if not isinstance(raw, str) or _DECIMAL.fullmatch(raw) is None:
        raise ValueError(f"{str(raw)[:40]!r} is not a decimal of the form spec.md#CODEC-006 states")
    return Decimal(raw)


# One encoder for every call: json.dumps with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text of an already-encoded value."""
    return _ENCODER.encode(value)


def check_size(encoded: Any, path: str = "payload") -> None:
    size = len(dumps(encoded).encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"{path} is {size} bytes encoded, above the {MAX_PAYLOAD_BYTES} byte limit; "
            "store large data elsewhere and pass a reference"
        )
