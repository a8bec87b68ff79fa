"""Fire times of cron expressions in a time zone (spec.md#cron, CRON-001 and CRON-002).

The matching of wall-clock minutes is cronsim's (a small, maintained, dependency-free parser of
classic five-field cron, with the day-of-month/day-of-week "or" rule); this module applies it to
*local* times and turns them into UTC instants itself, with the spec's DST rules, so that they
do not depend on how a parser treats time zones: a local time in a spring-forward gap fires at
the instant of the change, and a local time that occurs twice fires at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError, InvalidRequest

MINUTE = timedelta(minutes=1)


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise ConfigurationError(
            "cron schedules need the cronsim package: pip install 'conveyor[cron]'"
        ) from None
    return cronsim


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; InvalidRequest naming the fix when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"time zone {name!r} is not an IANA time zone name known here (CRON-001); use a "
            "name such as 'Europe/Paris' or 'UTC' (pip install tzdata where the system has "
            "no time zone database)"
        ) from None


def check_expression(expression: str) -> str:
    """A five-field cron expression, or InvalidRequest saying what is wrong (CRON-001)."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise InvalidRequest(
            f"cron expression {expression!r} must have five fields: minute hour day-of-month "
            "month day-of-week, such as '*/5 * * * *' (CRON-001)"
        )
    cronsim = _cronsim()
    try:
        cronsim.CronSim(expression, datetime(2000, 1, 1))
    except cronsim.CronSimError as error:
        raise InvalidRequest(
            f"cron expression {expression!r} is not valid: {error} (CRON-001)"
        ) from None
    return expression


def _instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC fire time of the naive local time ``local`` (CRON-002)."""
    first = local.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        # It exists; when it occurs twice, fold=0 is its first occurrence.
        return instant
    # In a gap: the first instant whose local time is past it (the change itself). Before the
    # gap, fold=1 reads the local time with the earlier offset; walk minute by minute.
    moment = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    moment = moment.replace(second=0, microsecond=0)
    while moment.astimezone(tz).replace(tzinfo=None) < local:
        moment += MINUTE
    while (moment - MINUTE).astimezone(tz).replace(tzinfo=None) > local:
        moment -= MINUTE
    return moment


def fire_times(expression: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after the instant ``after``, in order, as aware UTC datetimes."""
    cronsim = _cronsim()
    # Start a little before: a local time just before ``after`` may map past it (a gap).
    start = (after - timedelta(hours=3)).astimezone(tz).replace(tzinfo=None)
    last: datetime | None = None
    for local in cronsim.CronSim(expression, start.replace(second=0, microsecond=0)):
        instant = _instant(local, tz)
        if instant <= after or (last is not None and instant <= last):
            continue  # before the start, or a repeated hour's second pass, or one gap again
        last = instant
        yield instant


def next_fire(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    return next(fire_times(expression, tz, after))


def latest_fire(
    expression: str, tz: ZoneInfo, after: datetime | None, until: datetime, lookback: timedelta
) -> datetime | None:
    """The latest fire time in (after, until], looking no further back than ``lookback``
    before ``until``; None when there is none."""
    floor = until - lookback
    if after is not None and after > floor:
        floor = after
    found = None
    for instant in fire_times(expression, tz, floor):
        if instant > until:
            break
        found = instant
    return found
