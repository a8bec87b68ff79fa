"""JSON payload codec: plain JSON plus tagged single-key objects for typed values.

``{"$bytes": ...}``, ``{"$datetime": ...}``, ``{"$date": ...}``, ``{"$decimal": ...}`` and
``{"$uuid": ...}`` carry values JSON lacks, so any language can decode them. No pickle: a
payload can never make a worker construct arbitrary objects.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .errors import InvalidPayload, PayloadTooLarge

MAX_PAYLOAD_BYTES = 1024 * 1024
TAGS = frozenset({"$bytes", "$datetime", "$date", "$decimal", "$uuid"})


def encode(value: Any, path: str = "payload") -> Any:
    """Turn a Python value into the JSON value stored with a request."""
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and "\x00" in value:
            raise InvalidPayload(
                f"{path} contains U+0000, which some databases cannot store; "
                "remove it or send the data as bytes"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{path} is {value!r}; JSON has no NaN or infinity")
        return value
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
            encode(key, f"{path} key")
            encoded[key] = encode(item, f"{path}.{key}")
        return encoded
    if isinstance(value, list | tuple):
        return [encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise InvalidPayload(
        f"{path} is a {type(value).__name__}, which the JSON codec cannot carry; "
        "send plain JSON types, bytes, date/datetime, Decimal or UUID"
    )


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
                return Decimal(raw)
            if tag == "$uuid":
                return uuid.UUID(raw)
        return {key: decode(item) for key, item in value.items()}
    return value


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
