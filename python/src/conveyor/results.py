"""Results and progress of a job: their limits and their stored form (spec.md#results,
spec.md#progress).

A result is small by design (64 KiB encoded, RESULT-002): the job row is the source of truth
and every read of it carries the result. Larger output belongs in the application's own
storage, and the result names where.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from . import codec
from .errors import InvalidRequest, PayloadTooLarge

MAX_RESULT_BYTES = 65536  # RESULT-002
MAX_PROGRESS_MESSAGE = 1024  # PROGRESS-001


def check_result(encoded: Any) -> Any:
    """An encoded result that follows the payload rules and the size limit; raises
    InvalidPayload or PayloadTooLarge (RESULT-002) naming the fix."""
    codec.check_json(encoded, "result")
    size = len(codec.dumps(encoded).encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        raise PayloadTooLarge(
            f"the result is {size} bytes encoded, above the {MAX_RESULT_BYTES} byte limit of a "
            "result (RESULT-002); store large output elsewhere (a file, a table) and return a "
            "reference to it"
        )
    return encoded


def encode_result(value: Any) -> Any:
    """A handler's return value in its stored form: codec-encoded JSON, checked."""
    return check_result(codec.encode(value, "result"))


def progress_document(percent: Any, message: Any, now: datetime) -> dict[str, Any]:
    """The stored progress (PROGRESS-001); InvalidRequest for a value outside its limits."""
    if percent is not None and (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
    ):
        raise InvalidRequest(
            f"progress percent is {percent!r}; pass a number from 0 to 100, or None"
        )
    if message is not None:
        if not isinstance(message, str):
            raise InvalidRequest(
                f"progress message is a {type(message).__name__}; pass a string, or None"
            )
        if len(message) > MAX_PROGRESS_MESSAGE or "\x00" in message:
            raise InvalidRequest(
                f"progress message has {len(message)} characters; pass at most "
                f"{MAX_PROGRESS_MESSAGE}, without NUL (PROGRESS-001)"
            )
        codec.check_text(message, "progress message", InvalidRequest)
    return {"percent": percent, "message": message, "at": now}
