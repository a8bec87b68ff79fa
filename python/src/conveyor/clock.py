"""Time comes from an injectable clock, so tests and the conformance harness control it."""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC, millisecond precision."""
        ...


def truncate_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


class SystemClock:
    """The wall clock; the only place Conveyor reads it."""

    def now(self) -> datetime:
        return truncate_ms(datetime.now(UTC))


class ManualClock:
    """A clock that moves only when told to; thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = truncate_ms(start or datetime(2026, 1, 1, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware datetime")
        with self._lock:
            self._now = truncate_ms(moment.astimezone(UTC))

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now = truncate_ms(self._now + step)
            return self._now


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MILLISECOND = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch (how the SQL store keeps time)."""
    return (moment - EPOCH) // _MILLISECOND


def duration_ms(value: timedelta | float) -> int:
    """Whole milliseconds of a timedelta or of seconds, without float truncation (1.001 s: 1001)."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
    return delta // timedelta(milliseconds=1)


@functools.lru_cache(maxsize=1024)
def from_ms(value: int) -> datetime:
    """The moment ``value`` milliseconds after the Unix epoch. Cached: the jobs of one
    claim or bulk publish share their moments (the claim's time, the lease's end, the
    publish's millisecond), and a datetime is immutable; building one costs about ten
    times a cache hit."""
    return EPOCH + timedelta(milliseconds=value)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the spec's timestamp format (always 4-digit years:
    strftime's ``%Y`` writes year 5 as ``5`` on most platforms)."""
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone; use RFC 3339 with 'Z' or an offset")
    return truncate_ms(moment.astimezone(UTC))
