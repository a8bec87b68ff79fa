"""Applies events to jobs through the job and request machines.

Every state change of a job goes through :meth:`JobEngine.fire`. The transition comes from
``machines/job.json``; this module only implements the named effects. System effects (those
reaching other jobs, batches or the notifier) are returned for the lifecycle to carry out.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .errors import SpecError
from .machine import Environment, Machine, Transition
from .model import Job, JobError, Lease, Request, replace
from .specfiles import machine_document

JobEffect = Callable[[Job, "Firing"], dict[str, Any]]  # the fields it changes


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
    # The job fields the transition's effects may have written (with ``state`` and
    # ``updated_at``): a store writes the columns computed from them, and no others. Empty:
    # not known, the store compares the two versions of the job.
    fields: frozenset[str] = frozenset()


# The fields of a job each job effect writes. The effects are this implementation's; which
# of them a transition runs is the machine file's, so a transition's fields are derived from
# the file at load (:class:`JobEngine`), and a store never has to diff two jobs to know what
# to write. Effects that fire request events write ``requests``; system effects, no field.
EFFECT_FIELDS: dict[str, frozenset[str]] = {
    "count_attempt": frozenset({"attempts"}),
    "refund_attempt": frozenset({"attempts"}),
    "reset_attempts": frozenset({"attempts", "available_at"}),
    "grant_lease": frozenset({"lease", "lease_token"}),
    "extend_lease": frozenset({"lease"}),
    "release_lease": frozenset({"lease"}),
    "record_error": frozenset({"last_error", "errors"}),
    "record_lease_error": frozenset({"last_error", "errors"}),
    "schedule_retry": frozenset({"available_at"}),
    "schedule_wait": frozenset({"available_at"}),
    "make_due": frozenset({"available_at"}),
    "stamp_finished": frozenset({"finished_at"}),
    "clear_finished_stamp": frozenset({"finished_at"}),
    "request_cancel": frozenset({"cancel_requested_at"}),
    "clear_cancel_request": frozenset({"cancel_requested_at"}),
}
ALWAYS_WRITTEN = frozenset({"state", "updated_at"})


@dataclass(frozen=True)
class _Compiled:
    """One transition of a machine file, turned once into the calls its effects make."""

    steps: tuple[JobEffect, ...]
    system: tuple[str, ...] = ()
    fields: frozenset[str] = ALWAYS_WRITTEN


def _after(now: datetime, ms: int) -> datetime:
    return now + timedelta(milliseconds=ms)


class RequestEngine:
    """The request machine; requests only move through job effects.

    Each effect returns the fields it changes, applied to one private copy per event.
    """

    def __init__(self, machine: Machine | None = None) -> None:
        self.machine = machine or Machine(machine_document("request"))
        self._effects: dict[str, Callable[[Request, Firing], dict[str, Any]]] = {
            "count_attempt": lambda r, f: {"attempts": r.attempts + 1},
            "refund_attempt": lambda r, f: {"attempts": max(r.attempts - 1, 0)},
            "record_error": lambda r, f: {"error": _error_of(f, r.attempts, r.index)},
            "clear_error": lambda r, f: {"error": None},
        }
        self.machine.require_effects(set(self._effects))
        self._compiled = {
            t.id: tuple(self._effects[name] for name in t.effects) for t in self.machine.transitions
        }
        # A machine without refusals or guards (the request machine) selects without reading
        # anything: no environment is built for it.
        self._needs_env = bool(self.machine.refusals) or any(
            t.guard is not None for t in self.machine.transitions
        )

    def fire(self, request: Request, event: str, firing: Firing) -> Request:
        env = (
            Environment({"now": firing.now, "job": request, "event": firing.params, "ctx": {}})
            if self._needs_env
            else None
        )
        transition = self.machine.select(request.state, event, env)
        changed = _copy(request)
        values = changed.__dict__
        for effect in self._compiled[transition.id]:
            values.update(effect(changed, firing))
        values["state"] = transition.target
        return changed


Record = TypeVar("Record")
_JOB_FIELDS = frozenset(field.name for field in dataclasses.fields(Job))


def _copy(record: Record) -> Record:
    """A private copy of a frozen record, to be completed before anyone else sees it."""
    copy: Record = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    return copy


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
    """The job machine plus this implementation's effects.

    A job effect returns the fields it changes (a dict), read from the job as the previous
    effects left it. The generic path (:meth:`fire_by_name`) copies the job once per effect;
    the compiled one (:meth:`fire`) copies it once per event and applies each effect's
    changes to that private copy.
    """

    def __init__(self, machine: Machine | None = None, requests: RequestEngine | None = None):
        self.machine = machine or Machine(machine_document("job"))
        self.requests = requests or RequestEngine()
        self._job_effects: dict[str, JobEffect] = {
            "count_attempt": lambda j, f: {"attempts": j.attempts + 1},
            "refund_attempt": lambda j, f: {"attempts": max(j.attempts - 1, 0)},
            "reset_attempts": lambda j, f: {"attempts": 0, "available_at": f.now},
            "grant_lease": self._grant_lease,
            "extend_lease": self._extend_lease,
            "release_lease": lambda j, f: {"lease": None},
            "record_error": self._record_error,
            "record_lease_error": self._record_lease_error,
            "schedule_retry": self._schedule_retry,
            "schedule_wait": self._schedule_wait,
            "make_due": lambda j, f: {"available_at": f.now},
            "stamp_finished": lambda j, f: {"finished_at": f.now},
            "clear_finished_stamp": lambda j, f: {"finished_at": None},
            # CANCEL-001: a further cancel keeps the first request's time.
            "request_cancel": lambda j, f: {"cancel_requested_at": j.cancel_requested_at or f.now},
            "clear_cancel_request": lambda j, f: {"cancel_requested_at": None},
        }
        request_effects = {
            name for name, effect in self.machine.effects.items() if effect.request_event
        }
        system_effects = {
            name for name, effect in self.machine.effects.items() if effect.scope == "system"
        }
        self.machine.require_effects(set(self._job_effects) | request_effects | system_effects)
        self.system_effect_names = frozenset(system_effects)
        missing = set(self._job_effects) - set(EFFECT_FIELDS)
        if missing:  # a programming error, caught by any test that builds an engine
            raise SpecError(f"EFFECT_FIELDS lacks the fields of job effects {sorted(missing)}")
        self._compiled = {t.id: self._compile(t) for t in self.machine.transitions}
        self._transitions = {t.id: t for t in self.machine.transitions}

    def _compile(self, transition: Transition) -> _Compiled:
        steps: list[JobEffect] = []
        system: list[str] = []
        fields = set(ALWAYS_WRITTEN)
        for name in transition.effects:
            effect = self.machine.effects[name]
            if effect.scope == "system":
                system.append(name)
            elif effect.request_event == "abandon":
                steps.append(functools.partial(self._abandon_step, effect.scope))
                fields.add("requests")
            elif effect.request_event:
                steps.append(
                    functools.partial(self._requests_step, effect.scope, effect.request_event)
                )
                fields.add("requests")
            else:
                steps.append(self._job_effects[name])
                fields.update(EFFECT_FIELDS[name])
        return _Compiled(tuple(steps), tuple(system), frozenset(fields))

    def _requests_step(self, scope: str, event: str, job: Job, firing: Firing) -> dict[str, Any]:
        return self._fire_requests(job, scope, event, firing)

    def _abandon_step(self, scope: str, job: Job, firing: Firing) -> dict[str, Any]:
        """LEASE-009: the abandoned request records the job's lease_expired error."""
        lease_error = replace(firing, params={"error": self._lease_error(job)})
        return self._fire_requests(job, scope, "abandon", lease_error)

    def fire(self, job: Job, firing: Firing, update: Mapping[str, Any] | None = None) -> Fired:
        """Apply one event, or raise the refusal the machine demands (nothing changes).

        The machine selects the transition; its effects run as compiled at load (the same
        effects, in the file's order, without looking each one up by name), on one copy.
        ``update`` then sets plain fields (a worker's execution record and metadata); a value
        that is the very object the job holds is no change, and adds no field to write.
        """
        env = Environment(
            {"now": firing.now, "job": job, "event": firing.params, "ctx": firing.facts}
        )
        transition = self.machine.select(job.state, firing.event, env)
        return self._apply(job, transition, firing, update)

    def apply(
        self,
        job: Job,
        transition_id: str,
        firing: Firing,
        update: Mapping[str, Any] | None = None,
    ) -> Fired:
        """:meth:`fire` with the transition already chosen: a store's planned write checked
        the guard on the row (finishplan.py), and this gives the job it wrote."""
        return self._apply(job, self._transitions[transition_id], firing, update)

    def _apply(
        self,
        job: Job,
        transition: Transition,
        firing: Firing,
        update: Mapping[str, Any] | None,
    ) -> Fired:
        compiled = self._compiled[transition.id]
        changed = _copy(job)  # private until returned
        values = changed.__dict__
        for step in compiled.steps:
            values.update(step(changed, firing))
        values["state"] = transition.target
        values["updated_at"] = firing.now
        fields = compiled.fields
        if update:
            if not _JOB_FIELDS.issuperset(update):
                raise TypeError(f"Job has no field(s) {sorted(set(update) - _JOB_FIELDS)}")
            fields = fields.union(
                name for name, value in update.items() if values[name] is not value
            )
            values.update(update)
        return Fired(job, changed, transition, compiled.system, fields)

    def fire_by_name(self, job: Job, firing: Firing) -> Fired:
        """:meth:`fire` looking each effect up by name as it goes, a new job per effect: the
        reference the compiled form is tested against (tests/test_compiled_transitions.py).
        Its ``fields`` are empty: which fields it wrote is found by comparing."""
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
                changed = replace(changed, **self._abandon_step(effect.scope, changed, firing))
            elif effect.request_event:
                changes = self._fire_requests(changed, effect.scope, effect.request_event, firing)
                changed = replace(changed, **changes)
            else:
                changed = replace(changed, **self._job_effects[name](changed, firing))
        changed = replace(changed, state=transition.target, updated_at=firing.now)
        return Fired(job, changed, transition, tuple(system))

    def _fire_requests(self, job: Job, scope: str, event: str, firing: Firing) -> dict[str, Any]:
        if scope == "all_unfinished":
            requests = list(job.requests)
            for request in job.requests:
                if self.requests.machine.allows(request.state, event):
                    requests[request.index] = self.requests.fire(request, event, firing)
            return {"requests": tuple(requests)}
        index = job.current_index
        if index is None:
            return {}
        requests = list(job.requests)
        requests[index] = self.requests.fire(job.requests[index], event, firing)
        return {"requests": tuple(requests)}

    @staticmethod
    def _grant_lease(job: Job, firing: Firing) -> dict[str, Any]:
        token = job.lease_token + 1
        lease = Lease(
            token=token,
            worker_id=str(firing.params["worker_id"]),
            expires_at=_after(firing.now, int(firing.params["lease_ms"])),
        )
        return {"lease": lease, "lease_token": token}

    @staticmethod
    def _extend_lease(job: Job, firing: Firing) -> dict[str, Any]:
        assert job.lease is not None  # guarded by lease_holder
        expires = _after(firing.now, int(firing.params["lease_ms"]))
        return {"lease": replace(job.lease, expires_at=expires)}

    @staticmethod
    def _record_error(job: Job, firing: Firing) -> dict[str, Any]:
        error = _error_of(firing, job.attempts, job.current_index)
        if error is None:
            return {}
        return {"last_error": error, "errors": (*job.errors, error)}

    @staticmethod
    def _lease_error(job: Job) -> dict[str, Any]:
        holder = job.lease.worker_id if job.lease else "unknown"
        return {
            "kind": "lease_expired",
            "message": f"the lease of worker {holder} expired; the worker is presumed dead",
        }

    def _record_lease_error(self, job: Job, firing: Firing) -> dict[str, Any]:
        return self._record_error(job, replace(firing, params={"error": self._lease_error(job)}))

    @staticmethod
    def _schedule_retry(job: Job, firing: Firing) -> dict[str, Any]:
        override = firing.params.get("retry_after_ms")
        delay = int(override) if override is not None else job.retry_policy.delay_ms(job.attempts)
        return {"available_at": _after(firing.now, delay)}

    @staticmethod
    def _schedule_wait(job: Job, firing: Firing) -> dict[str, Any]:
        override = firing.params.get("delay_ms")
        delay = int(override) if override is not None else firing.waiting_delay_ms
        return {"available_at": _after(firing.now, delay)}
