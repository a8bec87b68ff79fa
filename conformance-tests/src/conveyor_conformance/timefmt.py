"""Timestamps as the spec writes them (TIME-003) and as the model counts them (ms since epoch)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STRICT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

#: The instant every vector and every stateful example starts at, unless it says otherwise.
DEFAULT_START = "2026-01-01T00:00:00.000Z"


class Instant(int):
    """Milliseconds since the epoch, kept apart from plain numbers in guard expressions."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Instant({format_ms(self)})"


def parse(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return (moment - EPOCH) // timedelta(milliseconds=1)


def format_ms(ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=int(ms))
    # strftime's %Y gives "5", not "0005", for years before 1000 on most platforms.
    return (
        f"{moment.year:04d}-"
        + moment.strftime("%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


def is_strict(text: object) -> bool:
    """Whether ``text`` has exactly the form TIME-003 requires."""
    return isinstance(text, str) and bool(STRICT.fullmatch(text))
