"""Cron schedules declared in code, run by every worker without a leader (spec.md#cron).

Each process keeps the next fire time of each schedule in memory and, when it comes (and once at
start), evaluates the schedule in one store transaction: it reads the latest recorded run of the
name, picks the fire time due by the missed-run policy (CRON-004), records it under the store's
uniqueness rule and publishes its job by the overlap policy (CRON-005). Processes that lose the
race to record a fire time publish nothing (CRON-003), so deploying more workers or restarting
them never doubles a schedule.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from . import cron
from .clock import format_timestamp
from .errors import ConfigurationError, InvalidRequest
from .lifecycle import Lifecycle, Outcome
from .model import Job
from .publishing import Call, JobFactory, PublishOptions
from .store.base import ScheduleRun, Store

log = logging.getLogger("conveyor.schedules")

OVERLAP_POLICIES = ("allow", "skip", "queue")
MISSED_POLICIES = ("skip", "run_once")
GRACE = timedelta(seconds=60)  # CRON-004: how late a fire time may be handled as on time
# How far back run_once looks for the latest missed fire time after a downtime.
LOOKBACK = timedelta(days=400)


@dataclass(frozen=True)
class Schedule:
    """A cron schedule: the job ``type(payload)`` with ``options`` at each fire time."""

    name: str
    expression: str
    tz: ZoneInfo
    type: str
    payload: Any
    options: PublishOptions
    overlap: str = "allow"
    missed: str = "skip"

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (CRON-002): to preview a schedule."""
        return cron.next_fire(self.expression, self.tz, after)


@dataclass(frozen=True)
class ScheduledRun:
    """A fire time this process handled: the job it published, or None when the overlap
    policy ``skip`` found the previous run still going."""

    name: str
    fire_at: datetime
    job: Job | None


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule as ``conveyor schedules`` shows it: its next fire time after now and the
    latest run recorded for its name (by any process)."""

    schedule: Schedule
    next_fire: datetime
    last_run: ScheduleRun | None

    def to_dict(self) -> dict[str, Any]:
        schedule, last = self.schedule, self.last_run
        return {
            "name": schedule.name,
            "cron": schedule.expression,
            "tz": schedule.tz.key,
            "type": schedule.type,
            "overlap": schedule.overlap,
            "missed": schedule.missed,
            "next_fire": format_timestamp(self.next_fire),
            "last_fire": format_timestamp(last.fire_at) if last else None,
            "last_job": last.job_id if last else None,
        }


class SchedulerHost(Protocol):
    """What the scheduler needs from the app."""

    @property
    def store(self) -> Store: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    @property
    def factory(self) -> JobFactory: ...

    def now(self) -> datetime: ...


def make_schedule(
    name: str,
    expression: str,
    type: str,
    payload: Any,
    tz: str,
    overlap: str,
    missed: str,
    options: Mapping[str, Any],
) -> Schedule:
    """A checked schedule; InvalidRequest or ConfigurationError naming the fix."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidRequest(f"schedule name {name!r} must be a string of 1 to 200 characters")
    if overlap not in OVERLAP_POLICIES:
        raise InvalidRequest(
            f"overlap={overlap!r} is not a policy; use one of {', '.join(OVERLAP_POLICIES)}"
        )
    if missed not in MISSED_POLICIES:
        raise InvalidRequest(
            f"missed={missed!r} is not a policy; use one of {', '.join(MISSED_POLICIES)}"
        )
    if overlap == "queue" and options.get("serial_group") is not None:
        raise InvalidRequest(
            "overlap='queue' puts the runs in the serial group 'schedule:<name>'; drop "
            "serial_group, or use overlap='allow' with your own group"
        )
    for refused in ("delay", "available_at", "recurring", "batch"):
        if options.get(refused) is not None:
            raise InvalidRequest(
                f"a schedule's job cannot take {refused}=: the schedule decides when it runs"
            )
    return Schedule(
        name=name,
        expression=cron.check_expression(expression),
        tz=cron.zone(tz),
        type=type,
        payload=payload,
        options=PublishOptions.of(options),
        overlap=overlap,
        missed=missed,
    )


class Scheduler:
    """The schedules of one app and when each is next due in this process."""

    def __init__(
        self,
        host: SchedulerHost,
        deliver: Callable[[Outcome], object],
        grace: timedelta = GRACE,
    ) -> None:
        self.host = host
        self.deliver = deliver
        self.grace = grace
        self.schedules: dict[str, Schedule] = {}
        self._next: dict[str, datetime] = {}

    def add(self, schedule: Schedule) -> Schedule:
        if schedule.name in self.schedules:
            raise ConfigurationError(
                f"a schedule named {schedule.name!r} is already declared; names identify "
                "schedules across processes, so give each its own"
            )
        now = self.host.now()
        self._build(schedule, now, now)  # a job the schedule cannot publish fails here, at once
        self.schedules[schedule.name] = schedule
        return schedule

    def status(self) -> list[ScheduleStatus]:
        """Every schedule of the app, by name, with what the store recorded of it."""
        now = self.host.now()
        with self.host.store.transaction() as tx:
            last = {name: tx.last_schedule_run(name) for name in self.schedules}
        return [
            ScheduleStatus(schedule, schedule.next_fire(now), last[name])
            for name, schedule in sorted(self.schedules.items())
        ]

    def next_due(self) -> datetime | None:
        """When this process next has a schedule to evaluate (None: no schedule)."""
        if not self.schedules:
            return None
        if len(self._next) < len(self.schedules):
            return self.host.now()  # never evaluated: at once (at start)
        return min(self._next.values())

    def run_due(self, names: Collection[str] = ()) -> list[ScheduledRun]:
        """Evaluate every schedule (or those named) whose fire time has come, and those never
        evaluated in this process; returns the runs this process published or skipped."""
        now = self.host.now()
        handled = []
        for name, schedule in self.schedules.items():
            if names and name not in names:
                continue
            due = self._next.get(name)
            if due is not None and now < due:
                continue
            run = self.evaluate(schedule, now)
            if run is not None:
                handled.append(run)
            self._next[name] = schedule.next_fire(now)
        return handled

    def evaluate(self, schedule: Schedule, now: datetime) -> ScheduledRun | None:
        """CRON-004 and CRON-005 at ``now``, in one transaction; None when nothing was due
        or another process recorded the fire time first."""
        host = self.host
        terminal = host.lifecycle.states.terminal
        with host.store.transaction() as tx:
            last = tx.last_schedule_run(schedule.name)
            catch_up = schedule.missed == "run_once" and last is not None
            fire_at = cron.latest_fire(
                schedule.expression,
                schedule.tz,
                last.fire_at if last is not None else None,
                now,
                LOOKBACK if catch_up else self.grace,
            )
            if fire_at is None:
                return None
            if now - fire_at >= self.grace and not catch_up:
                return None  # missed, and the policy skips it
            if not tx.insert_schedule_run(schedule.name, fire_at, now):
                return None  # another process handles this fire time
            serial_group = None
            if schedule.overlap != "allow":
                previous = tx.last_schedule_run(schedule.name, with_job=True)
                before = tx.get_job(previous.job_id) if previous and previous.job_id else None
                if schedule.overlap == "skip" and before and before.state not in terminal:
                    log.info(
                        "schedule %s: run of %s skipped, job %s is still %s",
                        schedule.name,
                        format_timestamp(fire_at),
                        before.id,
                        before.state,
                    )
                    return ScheduledRun(schedule.name, fire_at, None)
                if schedule.overlap == "queue":
                    serial_group = f"schedule:{schedule.name}"
            job = self._build(schedule, now, fire_at, serial_group)
            outcome = host.lifecycle.publish(tx, [job], now)
            stored = outcome.jobs[0]
            tx.set_schedule_run_job(schedule.name, fire_at, stored.id)
        self.deliver(outcome)
        return ScheduledRun(schedule.name, fire_at, stored)

    def _build(
        self, schedule: Schedule, now: datetime, fire_at: datetime, serial_group: str | None = None
    ) -> Job:
        """The run's job, with the schedule's name and fire time in its metadata (CRON-005)."""
        options = schedule.options
        metadata = {
            **options.metadata,
            "schedule": schedule.name,
            "scheduled_for": format_timestamp(fire_at),
        }
        changes: dict[str, Any] = {"metadata": metadata}
        if serial_group is not None:
            changes["serial_group"] = serial_group
        return self.host.factory.build(
            [Call(schedule.type, schedule.payload)], dataclasses.replace(options, **changes), now
        )
