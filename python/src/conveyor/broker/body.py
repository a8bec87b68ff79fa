"""Decoding message bodies, which come from outside: whatever the bytes, the result is a JSON
document or the caller's named error, never another exception (spec.md#BROKER-006).

Anything a broker carries reaches a consumer, so a body may be any bytes: not UTF-8, not JSON,
nested deeper than the interpreter recurses, an integer longer than Python converts. A consumer
that died on one would die again on its redelivery, consumer after consumer.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConveyorError

# Characters of a problem kept in an error: each refused message is one log line.
PROBLEM_LIMIT = 300


def bounded(text: str, limit: int = PROBLEM_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (a body may hold megabytes)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def json_document(body: bytes, invalid: type[ConveyorError]) -> Any:
    """The JSON document of ``body``; raise ``invalid`` saying why when there is none."""
    try:
        return json.loads(body)
    except RecursionError:
        raise invalid("message body is JSON nested too deeply to decode") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid(f"message body is not JSON: {bounded(str(error), 120)}") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise invalid(f"message body is not usable JSON: {bounded(str(error), 120)}") from None


def json_type(document: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if document is None:
        return "null"
    if isinstance(document, bool):
        return "boolean"
    if isinstance(document, int | float):
        return "number"
    if isinstance(document, str):
        return "string"
    if isinstance(document, list):
        return "array"
    return "object"
