"""Cron fire times as spec.md#cron states them (CRON-001, CRON-002), for the model.

Written from the prose, independently of any implementation: an instant ``u`` (a whole UTC
minute) is a fire time when a matching local time maps to it. The local time ``local(u)`` maps
to ``u`` unless it is the second occurrence of a repeated local time; and when ``u`` is the
instant the clocks move forward, every local time skipped by the gap maps to it too. The
latest fire time at or before an instant is found by walking back minute by minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .machine import Refusal

FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MINUTE = timedelta(minutes=1)


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(part)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = int(first), int(last)
        else:
            start = int(base)
            end = high if step_text else start
        if not low <= start <= end <= high:
            raise ValueError(part)
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Cron:
    def __init__(self, expression: str, tz: str) -> None:
        fields = expression.split() if isinstance(expression, str) else []
        if len(fields) != 5:
            raise Refusal("invalid_request", "CRON-001", f"{expression!r} has not five fields")
        try:
            parsed = [_field(f, low, high) for f, (low, high) in zip(fields, FIELDS, strict=True)]
        except ValueError:
            raise Refusal("invalid_request", "CRON-001", f"{expression!r} is not valid") from None
        self.minutes, self.hours, self.days, self.months, weekdays = parsed
        self.weekdays = frozenset(7 if d == 0 else d for d in weekdays)  # ISO: Sunday is 7
        self.day_restricted = fields[2] != "*"
        self.weekday_restricted = fields[4] != "*"
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise Refusal("invalid_request", "CRON-001", f"unknown time zone {tz!r}") from None

    def matches(self, local: datetime) -> bool:
        if (
            local.minute not in self.minutes
            or local.hour not in self.hours
            or local.month not in self.months
        ):
            return False
        day = local.day in self.days
        weekday = local.isoweekday() in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day or weekday
        return day and weekday

    def _local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz)

    def is_fire_time(self, instant: datetime) -> bool:
        local = self._local(instant)
        if local.fold == 0 and self.matches(local.replace(tzinfo=None)):
            return True
        before = self._local(instant - MINUTE).replace(tzinfo=None)
        skipped = before + MINUTE
        now_local = local.replace(tzinfo=None)
        while skipped < now_local:  # a gap ends at this instant: its local times map here
            if self.matches(skipped):
                return True
            skipped += MINUTE
        return False

    def latest(self, floor_ms: int, until_ms: int) -> int | None:
        """The latest fire time in (floor, until], in epoch milliseconds."""
        instant = datetime.fromtimestamp(until_ms // 60000 * 60, UTC)
        floor = datetime.fromtimestamp(floor_ms / 1000, UTC)
        while instant > floor:
            if self.is_fire_time(instant):
                return int(instant.timestamp() * 1000)
            instant -= MINUTE
        return None
