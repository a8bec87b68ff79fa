"""Applies events to jobs through the job and request machines.

Every state change of a job goes through :meth:`JobEngine.fire`. The transition comes from
``machines/job.json``; this module only implements the named effects. System effects (those
reaching other jobs, batches or the notifier) are returned for the lifecycle to carry out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .machine import Environment, Machine, Transition
from .model import Job, JobError, Lease, Request, replace
from .specfiles import machine_document

JobEffect = Callable[[Job, "Firing"], Job]


@dataclass
class Firing:
    """Everything one event needs: its parameters, the time and the claimer's facts."""

    event: str
    now: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    waiting_delay_ms: int = 1000


@dataclass(frozen=True)
class Fired:
    before: Job
    job: Job
    transition: Transition
    system_effects: tuple[str, ...]


def _after(now: datetime, ms: int) -> datetime:
    return now + timedelta(milliseconds=ms)


class RequestEngine:
    """The request machine; requests only move through job effects."""

    def __init__(self, machine: Machine | None = None) -> None:
        self.machine = machine or Machine(machine_document("request"))
        self._effects: dict[str, Callable[[Request, Firing], Request]] = {
            "count_attempt": lambda r, f: replace(r, attempts=r.attempts + 1),
            "refund_attempt": lambda r, f: replace(r, attempts=max(r.attempts - 1, 0)),
            "record_error": lambda r, f: replace(r, error=_error_of(f, r.attempts, r.index)),
            "clear_error": lambda r, f: replace(r, error=None),
        }
        self.machine.require_effects(set(self._effects))

    def fire(self, request: Request, event: str, firing: Firing) -> Request:
        env = Environment({"now": firing.now, "job": request, "event": firing.params, "ctx": {}})
        transition = self.machine.select(request.state, event, env)
        for name in transition.effects:
            request = self._effects[name](request, firing)
        return replace(request, state=transition.target)


def _error_of(firing: Firing, attempt: int, request: int | None) -> JobError | None:
    error = firing.params.get("error")
    if error is None:
        return None
    if isinstance(error, JobError):
        return replace(error, attempt=attempt, request=request, at=firing.now)
    return JobError(
        kind=error["kind"],
        message=error["message"],
        type=error.get("type"),
        attempt=attempt,
        request=request,
        at=firing.now,
        traceback=error.get("traceback"),
    )


class JobEngine:
    """The job machine plus this implementation's effects."""

    def __init__(self, machine: Machine | None = None, requests: RequestEngine | None = None):
        self.machine = machine or Machine(machine_document("job"))
        self.requests = requests or RequestEngine()
        self._job_effects: dict[str, JobEffect] = {
            "count_attempt": lambda j, f: replace(j, attempts=j.attempts + 1),
            "refund_attempt": lambda j, f: replace(j, attempts=max(j.attempts - 1, 0)),
            "reset_attempts": lambda j, f: replace(j, attempts=0, available_at=f.now),
            "grant_lease": self._grant_lease,
            "extend_lease": self._extend_lease,
            "release_lease": lambda j, f: replace(j, lease=None),
            "record_error": self._record_error,
            "record_lease_error": self._record_lease_error,
            "schedule_retry": self._schedule_retry,
            "schedule_wait": self._schedule_wait,
            "make_due": lambda j, f: replace(j, available_at=f.now),
            "stamp_finished": lambda j, f: replace(j, finished_at=f.now),
            "clear_finished_stamp": lambda j, f: replace(j, finished_at=None),
        }
        request_effects = {
            name for name, effect in self.machine.effects.items() if effect.request_event
        }
        system_effects = {
            name for name, effect in self.machine.effects.items() if effect.scope == "system"
        }
        self.machine.require_effects(set(self._job_effects) | request_effects | system_effects)
        self.system_effect_names = frozenset(system_effects)

    def fire(self, job: Job, firing: Firing) -> Fired:
        """Apply one event, or raise the refusal the machine demands (nothing changes)."""
        env = Environment(
            {"now": firing.now, "job": job, "event": firing.params, "ctx": firing.facts}
        )
        transition = self.machine.select(job.state, firing.event, env)
        changed = job
        system: list[str] = []
        for name in transition.effects:
            effect = self.machine.effects[name]
            if effect.scope == "system":
                system.append(name)
            elif effect.request_event == "abandon":
                # LEASE-009: the abandoned request records the job's lease_expired error.
                lease_error = replace(firing, params={"error": self._lease_error(changed)})
                changed = self._fire_requests(changed, effect.scope, "abandon", lease_error)
            elif effect.request_event:
                changed = self._fire_requests(changed, effect.scope, effect.request_event, firing)
            else:
                changed = self._job_effects[name](changed, firing)
        changed = replace(changed, state=transition.target, updated_at=firing.now)
        return Fired(job, changed, transition, tuple(system))

    def _fire_requests(self, job: Job, scope: str, event: str, firing: Firing) -> Job:
        if scope == "all_unfinished":
            for request in job.requests:
                if self.requests.machine.allows(request.state, event):
                    job = job.with_request(self.requests.fire(request, event, firing))
            return job
        index = job.current_index
        if index is None:
            return job
        return job.with_request(self.requests.fire(job.requests[index], event, firing))

    @staticmethod
    def _grant_lease(job: Job, firing: Firing) -> Job:
        token = job.lease_token + 1
        lease = Lease(
            token=token,
            worker_id=str(firing.params["worker_id"]),
            expires_at=_after(firing.now, int(firing.params["lease_ms"])),
        )
        return replace(job, lease=lease, lease_token=token)

    @staticmethod
    def _extend_lease(job: Job, firing: Firing) -> Job:
        assert job.lease is not None  # guarded by lease_holder
        expires = _after(firing.now, int(firing.params["lease_ms"]))
        return replace(job, lease=replace(job.lease, expires_at=expires))

    @staticmethod
    def _record_error(job: Job, firing: Firing) -> Job:
        error = _error_of(firing, job.attempts, job.current_index)
        if error is None:
            return job
        return replace(job, last_error=error, errors=(*job.errors, error))

    @staticmethod
    def _lease_error(job: Job) -> dict[str, Any]:
        holder = job.lease.worker_id if job.lease else "unknown"
        return {
            "kind": "lease_expired",
            "message": f"the lease of worker {holder} expired; the worker is presumed dead",
        }

    def _record_lease_error(self, job: Job, firing: Firing) -> Job:
        lease_error = replace(firing, params={"error": self._lease_error(job)})
        return self._record_error(job, lease_error)

    @staticmethod
    def _schedule_retry(job: Job, firing: Firing) -> Job:
        override = firing.params.get("retry_after_ms")
        delay = int(override) if override is not None else job.retry_policy.delay_ms(job.attempts)
        return replace(job, available_at=_after(firing.now, delay))

    @staticmethod
    def _schedule_wait(job: Job, firing: Firing) -> Job:
        override = firing.params.get("delay_ms")
        delay = int(override) if override is not None else firing.waiting_delay_ms
        return replace(job, available_at=_after(firing.now, delay))
