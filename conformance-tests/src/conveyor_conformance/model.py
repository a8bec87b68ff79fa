"""An executable model of the spec, at the level of the harness protocol's commands.

The model reads the machine files, the schemas and the retry presets, and implements the effects,
context facts and operations from the prose of spec.md. It imports nothing from the reference
library, so a bug that both share cannot hide. Given a command, it predicts the result (or the
refusal) that any conforming implementation returns, and it remembers which requirement decided
each field, so that a difference is reported against the rule it breaks.

Ids: the model stores jobs under the ids the implementation returned (``new_ids``); jobs the
implementation creates on its own (recurring copies, completion jobs) get placeholder ids until
:meth:`Model.rename` binds them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from . import timefmt
from .cron import Cron
from .machine import Env, MachineModel, Refusal, Transition
from .matching import is_matcher
from .spec import Spec
from .timefmt import Instant

ANY: dict[str, Any] = {"$any": True}
WAITING_DELAY_MS = 1000  # OUT-004: the default when the implementation is not configured
DEFAULT_LIST_LIMIT = 1000

# Which job fields each effect writes, to name the requirement behind a wrong field.
EFFECT_FIELDS: dict[str, tuple[str, ...]] = {
    "count_attempt": ("attempts",),
    "refund_attempt": ("attempts",),
    "reset_attempts": ("attempts", "available_at"),
    "grant_lease": ("lease", "lease_token"),
    "extend_lease": ("lease",),
    "release_lease": ("lease",),
    "record_error": ("last_error", "errors"),
    "record_lease_error": ("last_error", "errors"),
    "schedule_retry": ("available_at",),
    "schedule_wait": ("available_at",),
    "make_due": ("available_at",),
    "stamp_finished": ("finished_at",),
    "clear_finished_stamp": ("finished_at",),
    "request_cancel": ("cancel_requested_at",),
    "clear_cancel_request": ("cancel_requested_at",),
}
FIXED_FIELDS = {
    "queue": "JOB-008",
    "priority": "JOB-008",
    "serial_group": "JOB-008",
    "identifier": "IDENT-001",
    "unique": "JOB-008",
    "recurring": "JOB-008",
    "depends_on": "JOB-008",
    "batch_id": "JOB-008",
    "tags": "TAG-001",
    "retry_policy": "JOB-003",
    "max_attempts": "JOB-003",
    "metadata": "JOB-008",
    "created_at": "JOB-001",
    "timeout_ms": "TIMEOUT-001",
    "result_ttl_ms": "RESULT-003",
}
PRECEDENCE = {
    "invalid_request": 0,
    "invalid_payload": 0,
    "payload_too_large": 0,
    "unknown_type": 1,
    "priority_not_allowed": 1,
    "unknown_dependency": 2,
    "not_found": 2,
    "batch_closed": 2,
}
PRIORITY_RANGE = re.compile(r"(?:([0-9]+)|([0-9]+)-([0-9]+)|([0-9]+)-|-([0-9]+))")
MAX_PRIORITY = 32767
FEATURE_OF_FIELD = {
    "serial_group": "serial_groups",
    "recurring": "recurring",
    "batch_id": "batches",
}


# -- retry policies ------------------------------------------------------------------------------


POLICY_DEFAULTS = {
    "multiplier": 2,
    "increment_ms": 0,
    "max_attempts": None,
    "notify_after": None,
    "jitter": 0,
}


def full_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """RETRY-002: omitted members take the schema's defaults."""
    return {**POLICY_DEFAULTS, **policy}


def capped_delay(policy: dict[str, Any], attempt: int) -> int:
    """c(n) of RETRY-002, computed exactly and without overflow."""
    policy = full_policy(policy)
    initial = Fraction(policy["initial_delay_ms"])
    cap = Fraction(policy["max_delay_ms"])
    backoff = policy["backoff"]
    if backoff == "constant":
        delay = initial
    elif backoff == "linear":
        delay = initial + Fraction(policy["increment_ms"]) * (attempt - 1)
    else:
        multiplier = Fraction(repr(policy["multiplier"]))
        delay = initial
        if initial > 0 and multiplier > 1:
            for _ in range(attempt - 1):
                delay *= multiplier
                if delay > cap:
                    break
    return math.floor(min(delay, cap))


def delay_bounds(policy: dict[str, Any], attempt: int) -> tuple[int, int]:
    """RETRY-003: the inclusive range a delay with jitter falls in.

    RETRY-008: computed exactly, with the jitter's decimal value.
    """
    capped = capped_delay(policy, attempt)
    jitter = full_policy(policy)["jitter"]
    if not jitter:
        return capped, capped
    exact = Fraction(repr(jitter))
    return math.floor(capped * (1 - exact)), math.floor(capped * (1 + exact))


def _decimal_places(number: float) -> int:
    """Digits after the point of the number as JSON wrote it (its shortest repr)."""
    if isinstance(number, int) or not math.isfinite(number):
        return 0
    exponent = Decimal(repr(number)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_priority_range(text: str | None) -> tuple[int, int]:
    """ORDER-004: ``N``, ``A-B``, ``A-`` or ``-B``; anything else is refused."""
    if text is None:
        return 0, MAX_PRIORITY
    match = PRIORITY_RANGE.fullmatch(text)  # ORDER-006: ASCII digits, nothing around them
    if not match:
        raise Refusal("invalid_request", "ORDER-004", f"priority range {text!r} is malformed")
    exact, low, high, from_, to = (_range_bound(group) for group in match.groups())
    if exact is not None:
        bounds = (int(exact), int(exact))
    elif low is not None:
        bounds = (int(low), int(high))
    elif from_ is not None:
        bounds = (int(from_), MAX_PRIORITY)
    else:
        bounds = (0, int(to))
    if bounds[0] > bounds[1] or bounds[1] > MAX_PRIORITY:
        raise Refusal("invalid_request", "ORDER-004", f"priority range {text!r} is empty")
    return bounds


def _range_bound(digits: str | None) -> str | None:
    """ORDER-006: leading zeros do not count; a bound too long for any priority stays too big."""
    if digits is None:
        return None
    significant = digits.lstrip("0") or "0"
    return significant if len(significant) <= 5 else str(MAX_PRIORITY + 1)


# -- records --------------------------------------------------------------------------------------


@dataclass
class MRequest:
    index: int
    type: str
    payload: Any
    state: str
    attempts: int = 0
    error: Any = None

    def view(self) -> dict[str, Any]:
        return {"index": self.index, "state": self.state, "attempts": self.attempts}


@dataclass
class MJob:
    id: str
    order: int  # the model's publish order; the implementation's sequence must follow it
    queue: str
    priority: int
    state: str
    available_at: int
    created_at: int
    retry_policy: dict[str, Any]
    requests: list[MRequest]
    attempts: int = 0
    finished_at: int | None = None
    serial_group: str | None = None
    identifier: str | None = None
    unique: bool = False
    recurring: dict[str, Any] | None = None
    depends_on: list[str] = field(default_factory=list)
    batch_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: Any = None  # None: unknown (a copy of a document the model did not build)
    timeout_ms: int | None = None
    result: Any = None
    result_ttl_ms: int | None = None
    progress: dict[str, Any] | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_slot: int | None = None  # CONC-002: held while leased
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    cancel_requested_at: int | None = None  # CANCEL-001
    uniqueness: dict[str, Any] | None = None  # UKEY-001: resolved
    unique_key: str | None = None  # UKEY-002
    lease_token: int = 0
    lease: dict[str, Any] | None = None
    last_error: Any = None
    errors: list[Any] = field(default_factory=list)
    available_range: tuple[int, int] | None = None  # set while a jittered delay is unconfirmed

    def clone(self) -> MJob:
        twin = copy.copy(self)
        twin.requests = [copy.copy(r) for r in self.requests]
        twin.depends_on = list(self.depends_on)
        twin.tags = list(self.tags)
        twin.lease = dict(self.lease) if self.lease is not None else None
        twin.errors = list(self.errors)
        return twin

    def view(self) -> dict[str, Any]:
        lease = None
        if self.lease is not None:
            lease = {
                "token": self.lease["token"],
                "worker_id": self.lease["worker_id"],
                "expires_at": Instant(self.lease["expires_at"]),
            }
        return {
            "id": self.id,
            "state": self.state,
            "queue": self.queue,
            "priority": self.priority,
            "available_at": Instant(self.available_at),
            "created_at": Instant(self.created_at),
            "finished_at": Instant(self.finished_at) if self.finished_at is not None else None,
            "attempts": self.attempts,
            "max_attempts": self.retry_policy.get("max_attempts"),
            "serial_group": self.serial_group,
            "identifier": self.identifier,
            "unique": self.unique,
            "lease_token": self.lease_token,
            "lease": lease,
            "requests_remaining": sum(1 for r in self.requests if r.state != "succeeded"),
            "cancel_requested_at": (
                Instant(self.cancel_requested_at) if self.cancel_requested_at is not None else None
            ),
        }


@dataclass
class MBatch:
    id: str
    state: str
    total: int
    created_at: int
    completion: dict[str, Any] | None
    finished_at: int | None = None


@dataclass
class Prediction:
    """What a conforming implementation answers to one command."""

    result: dict[str, Any] | None = None
    error: Refusal | None = None
    #: the requirement behind each (job id, field) the command set
    why: dict[tuple[str, str], str] = field(default_factory=dict)
    #: the requirement the command as a whole checks
    req: str = ""
    created: list[str] = field(default_factory=list)


class Model:
    def __init__(
        self,
        spec: Spec,
        features: frozenset[str] | set[str] = frozenset(),
        *,
        start: str = timefmt.DEFAULT_START,
    ) -> None:
        self.spec = spec
        self.features = frozenset(features)
        self.jobs_machine = MachineModel(spec.machines["job"])
        self.requests_machine = MachineModel(spec.machines["request"])
        self.batch_machine = MachineModel(spec.machines["batch"])
        self.presets: dict[str, Any] = spec.presets["presets"]
        self.default_preset: str = spec.presets["default"]
        self.tags = {
            tag: self.jobs_machine.tagged(tag)
            for tag in (
                "claimable",
                "active",
                "leased",
                "terminal",
                "succeeded",
                "failed",
                "prunable",
                "unfinished",
            )
        }
        self.request_succeeded = self.requests_machine.tagged("succeeded")
        self._check_effects()
        self.reset([], start)

    # -- state ------------------------------------------------------------------------------

    def reset(
        self,
        handlers: list[dict[str, Any]],
        now: str = timefmt.DEFAULT_START,
        priorities: list[int] | None = None,
    ) -> None:
        self.now = timefmt.parse(now)
        self.handlers = {h["type"]: h for h in handlers}
        self.priorities = frozenset(priorities) if priorities is not None else None
        self.jobs: dict[str, MJob] = {}
        self.batches: dict[str, MBatch] = {}
        self.order = 0
        self.placeholders = 0
        self.used_ids: set[str] = set()
        self.notifications: list[dict[str, Any]] = []
        self.paused: dict[str, int] = {}  # paused queue -> when it was paused (PAUSE-001)
        self._why: dict[tuple[str, str], str] = {}
        self._created: list[str] = []
        self._new_ids: list[str] = []
        # CRON-003: the fire times handled, by schedule name: (fire time, job id or None)
        self.schedule_runs: dict[str, list[tuple[int, str | None]]] = {}
        # RATE-002: claims granted per (rate key, window start)
        self.rate_claims: dict[tuple[str, int], int] = {}
        # UKEY-003: unique key -> (holder id, expiry or None, covered states)
        self.unique_claims: dict[str, tuple[str, int | None, frozenset[str]]] = {}
        # UKEY-004: per job of the latest publish, the holder it conflicted with, or None
        self._conflicts: list[str | None] = []

    def snapshot(self) -> Model:
        """A copy of the records and counters; the spec and machines are shared."""
        clone = copy.copy(self)
        clone.jobs = {key: job.clone() for key, job in self.jobs.items()}
        clone.batches = {key: copy.copy(batch) for key, batch in self.batches.items()}
        clone.notifications = [dict(n) for n in self.notifications]
        clone.used_ids = set(self.used_ids)
        clone.paused = dict(self.paused)
        clone.handlers = dict(self.handlers)
        clone.schedule_runs = {name: list(runs) for name, runs in self.schedule_runs.items()}
        clone.rate_claims = dict(self.rate_claims)
        clone.unique_claims = dict(self.unique_claims)
        return clone

    def _check_effects(self) -> None:
        """MACH-001 applied to the model itself: it must know every effect a machine names."""
        job_known = set(EFFECT_FIELDS) | set(self._system_effects())
        for name, info in self.jobs_machine.effects.items():
            if name not in job_known and info.request_event is None:
                raise RuntimeError(f"the model does not implement job effect {name!r}")
        for name in self.requests_machine.effects:
            if name not in ("count_attempt", "refund_attempt", "record_error", "clear_error"):
                raise RuntimeError(f"the model does not implement request effect {name!r}")
        for name in self.batch_machine.effects:
            if name not in ("count_jobs", "stamp_finished", "publish_completion"):
                raise RuntimeError(f"the model does not implement batch effect {name!r}")

    def _system_effects(self) -> dict[str, Any]:
        return {
            "notify_threshold": self._notify_threshold,
            "notify_failure": self._notify_failure,
            "cancel_dependents": self._cancel_dependents,
            "republish_recurring": self._republish_recurring,
            "settle_batch": self._settle_batch,
            "recheck_dependencies": self._recheck_dependencies,
        }

    def job(self, job_id: str) -> MJob:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise Refusal("not_found", "OPS-002", f"job {job_id} is not stored") from None

    def sorted_jobs(self) -> list[MJob]:
        return sorted(self.jobs.values(), key=lambda j: j.order)

    def rename(self, old: str, new: str) -> None:
        """Bind a placeholder id to the id the implementation gave the job."""
        if old == new:
            return
        job = self.jobs.pop(old)
        job.id = new
        self.jobs[new] = job
        self.used_ids.add(new)
        for other in self.jobs.values():
            other.depends_on = [new if d == old else d for d in other.depends_on]
        for note in self.notifications:
            if note["job"] == old:
                note["job"] = new

    def is_placeholder(self, job_id: str) -> bool:
        return job_id.startswith("~")

    def adopt_available_at(self, job_id: str, value: str) -> bool:
        """Accept a jittered available_at the implementation chose, when it is in range."""
        job = self.jobs.get(job_id)
        if job is None or job.available_range is None:
            return False
        moment = timefmt.parse(value)
        low, high = job.available_range
        if low <= moment <= high:
            job.available_at = moment
            job.available_range = None
            return True
        return False

    # -- documents --------------------------------------------------------------------------

    def doc(self, job: MJob) -> dict[str, Any]:
        """The job as an implementation returns it, with matchers where the spec leaves room."""
        fmt = timefmt.format_ms
        available: Any = fmt(job.available_at)
        if job.available_range is not None:
            available = {"$time_range": [fmt(job.available_range[0]), fmt(job.available_range[1])]}
        lease = None
        if job.lease is not None:
            lease = {
                "token": job.lease["token"],
                "worker_id": job.lease["worker_id"],
                "expires_at": fmt(job.lease["expires_at"]),
            }
        document: dict[str, Any] = {
            "id": job.id,
            "queue": job.queue,
            "priority": job.priority,
            "state": job.state,
            "available_at": available,
            "created_at": fmt(job.created_at),
            "finished_at": fmt(job.finished_at) if job.finished_at is not None else None,
            "attempts": job.attempts,
            "max_attempts": job.retry_policy.get("max_attempts"),
            "retry_policy": job.retry_policy,
            "serial_group": job.serial_group,
            "identifier": job.identifier,
            "unique": job.unique,
            "recurring": job.recurring,
            "depends_on": list(job.depends_on),
            "batch_id": job.batch_id,
            "tags": list(job.tags),
            "requests": [
                {
                    "index": r.index,
                    "type": r.type,
                    "payload": r.payload,
                    "state": r.state,
                    "attempts": r.attempts,
                    "error": _error_doc(r.error, brief=True),
                }
                for r in job.requests
            ],
            "lease_token": job.lease_token,
            "lease": lease,
            "last_error": _error_doc(job.last_error),
            "errors": [_error_doc(e) for e in job.errors],
        }
        if job.metadata is not None:
            document["metadata"] = job.metadata
        if job.timeout_ms is not None:
            document["timeout_ms"] = job.timeout_ms
        document.update(self._result_members(job))
        if job.concurrency_key is not None:
            document["concurrency_key"] = job.concurrency_key
            document["concurrency_limit"] = job.concurrency_limit
        if job.rate_key is not None:
            document["rate_key"] = job.rate_key
            document["rate_limit"] = job.rate_limit
            document["rate_period_ms"] = job.rate_period_ms
        if job.unique_key is not None:
            document["uniqueness"] = job.uniqueness
            document["unique_key"] = job.unique_key
        if job.progress is not None:
            document["progress"] = {**job.progress, "at": fmt(job.progress["at"])}
        if job.cancel_requested_at is not None:
            document["cancel_requested_at"] = fmt(job.cancel_requested_at)
        return document

    def _result_members(self, job: MJob) -> dict[str, Any]:
        """RESULT-001 and RESULT-003: the result, null from its expiry on."""
        members: dict[str, Any] = {}
        if job.result_ttl_ms is not None:
            members["result_ttl_ms"] = job.result_ttl_ms
        if job.result is None:
            return members
        expires = None
        if job.result_ttl_ms is not None and job.finished_at is not None:
            expires = job.finished_at + job.result_ttl_ms
            members["result_expires_at"] = timefmt.format_ms(expires)
        members["result"] = job.result if expires is None or self.now < expires else None
        return members

    def batch_doc(self, batch: MBatch) -> dict[str, Any]:
        return {
            "id": batch.id,
            "state": batch.state,
            "total": batch.total,
            "unsettled": self._unsettled(batch.id),
            "completion": ANY if batch.completion is not None else None,
            "created_at": timefmt.format_ms(batch.created_at),
            "finished_at": (
                timefmt.format_ms(batch.finished_at) if batch.finished_at is not None else None
            ),
        }

    # -- command dispatch -------------------------------------------------------------------

    def execute(
        self, cmd: str, args: dict[str, Any], new_ids: list[str] | None = None
    ) -> Prediction:
        """Apply one protocol command; on a refusal nothing changes (ERR-002)."""
        self._why = {}
        self._created = []
        self._new_ids = list(new_ids or [])
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            raise ValueError(f"the model has no command {cmd!r}")
        # Every command checks what can refuse it before it changes anything, and _fire
        # undoes its own partial work, so a refusal leaves the model as it was.
        counters = (self.order, self.placeholders)
        try:
            result, req = handler(**args)
        except Refusal as refusal:
            self.order, self.placeholders = counters
            return Prediction(error=refusal, req=refusal.req)
        return Prediction(result=result, why=dict(self._why), req=req, created=list(self._created))

    # -- clock and lifecycle ----------------------------------------------------------------

    def cmd_reset(
        self,
        handlers: list[dict[str, Any]],
        now: str,
        priorities: list[int] | None = None,
        **_: Any,
    ) -> Any:
        if priorities is not None:
            outside = [h["type"] for h in handlers if h["priority"] not in priorities]
            if outside:
                raise Refusal("invalid_request", "ORDER-003", f"handlers {outside} outside the set")
        self.reset(handlers, now, priorities)
        return {}, "PROTO-005"

    def cmd_clock_set(self, now: str) -> Any:
        self.now = timefmt.parse(now)
        return {"now": timefmt.format_ms(self.now)}, "TIME-001"

    def cmd_clock_advance(self, ms: int) -> Any:
        self.now += ms
        return {"now": timefmt.format_ms(self.now)}, "TIME-001"

    def cmd_barrier(self) -> Any:
        return {}, "PROTO-001"

    # -- publishing -------------------------------------------------------------------------

    def cmd_publish(self, job: dict[str, Any]) -> Any:
        built = self._build(job)
        stored = self._store_new([built])
        holder = self._conflicts[0]
        if holder is None:
            return {"job": self.doc(stored[0])}, "JOB-001"
        result: dict[str, Any] = {"conflict": True, "holder_id": holder}
        if stored[0].id in self.jobs:  # the holder, or the new job with keep (UKEY-008)
            result["job"] = self.doc(stored[0])
        return result, "UKEY-004"

    def cmd_publish_bulk(self, jobs: list[dict[str, Any]]) -> Any:
        built = []
        refusals = []
        for document in jobs:
            try:
                built.append(self._build(document))
            except Refusal as refusal:
                refusals.append(refusal)
        if refusals:
            # ERR-001 orders the codes of one request only as a SHOULD: accept any of them.
            first = min(refusals, key=lambda r: PRECEDENCE.get(r.code, 9))
            codes = frozenset(r.code for r in refusals)
            raise Refusal(first.code, first.req, first.message, codes)
        stored = self._store_new(built)
        result: dict[str, Any] = {"jobs": [self.doc(j) for j in stored]}
        if any(holder is not None for holder in self._conflicts):
            result["conflicts"] = [holder is not None for holder in self._conflicts]
            return result, "UKEY-006"
        return result, "JOB-006"

    def _validate_publish(self, document: dict[str, Any]) -> None:
        errors = list(self.spec.validator("publish").iter_errors(document))
        if errors:
            error = min(errors, key=lambda e: (len(list(e.absolute_path)), str(e.message)))
            location = list(error.absolute_path)
            raise _publish_refusal(location, error.validator, list(error.absolute_schema_path))

    def _build(self, document: dict[str, Any]) -> MJob:
        """Validate a publish request (JOB-002 and the rules it cites) and build the job."""
        if not isinstance(document, dict):
            raise Refusal("invalid_request", "JOB-002", "a publish request is an object")
        self._validate_publish(document)
        _check_strings_and_depth(document)
        self._check_features(document)
        if document.get("unique") and document.get("recurring") is not None:
            raise Refusal("invalid_request", "UNIQ-001", "a unique job cannot be recurring")
        if document.get("uniqueness") is not None and document.get("recurring") is not None:
            raise Refusal("invalid_request", "UKEY-001", "a job with a unique key cannot recur")
        keep = (document.get("uniqueness") or {}).get("conflict") == "keep"
        if keep and not document.get("unique"):
            raise Refusal("invalid_request", "UKEY-001", "keep needs unique mode")
        requests = document["requests"]
        defaults = self.handlers.get(requests[0]["type"], {})
        policy_given = document.get("retry_policy", defaults.get("retry_policy"))
        policy = self._resolve_policy(policy_given)
        priority = document.get("priority", defaults.get("priority"))
        if self.priorities is not None and priority not in self.priorities:
            raise Refusal(
                "priority_not_allowed",
                "ORDER-003",
                f"priority {priority} is not in the configured set {sorted(self.priorities)}",
            )
        depends_on = list(document.get("depends_on", []))
        unknown = [d for d in depends_on if d not in self.jobs]
        if unknown:
            raise Refusal("unknown_dependency", "DEP-001", f"unknown dependencies {unknown}")
        batch_id = document.get("batch_id")
        if batch_id is not None:
            batch = self.batches.get(batch_id)
            if batch is None:
                raise Refusal("not_found", "BATCH-002", f"batch {batch_id} is not stored")
            if not self.batch_machine.has_transition(batch.state, "add"):
                raise Refusal("batch_closed", "BATCH-002", f"batch {batch_id} is {batch.state}")
        if "available_at" in document:
            available = timefmt.parse(document["available_at"])
        else:
            available = self.now + int(document.get("delay_ms", 0))
        return MJob(
            id="",
            order=0,
            queue=document.get("queue", defaults.get("queue")),
            priority=priority,
            state=self.jobs_machine.initial_state,
            available_at=available,
            created_at=self.now,
            retry_policy=policy,
            requests=[
                MRequest(i, r["type"], r.get("payload"), self.requests_machine.initial_state)
                for i, r in enumerate(requests)
            ],
            serial_group=document.get("serial_group"),
            identifier=document.get("identifier"),
            unique=bool(document.get("unique", False)),
            recurring=document.get("recurring"),
            depends_on=depends_on,
            batch_id=batch_id,
            tags=list(document.get("tags", [])),
            metadata=document.get("metadata", {}),  # JOB-011
            timeout_ms=document.get("timeout_ms", defaults.get("timeout_ms")),
            result_ttl_ms=document.get("result_ttl_ms", defaults.get("result_ttl_ms")),
            concurrency_key=document.get("concurrency_key"),
            concurrency_limit=document.get("concurrency_limit"),
            rate_key=document.get("rate_key"),
            rate_limit=document.get("rate_limit"),
            rate_period_ms=document.get("rate_period_ms"),
            **self._unique_members(document, document.get("queue", defaults.get("queue"))),
        )

    def _unique_members(self, document: dict[str, Any], queue: str) -> dict[str, Any]:
        """UKEY-001, UKEY-002: the resolved uniqueness and the digest of its key."""
        member = document.get("uniqueness")
        if member is None:
            return {}
        key = member.get("key")
        fields = member.get("fields", ["type", "payload"] if key is None else [])
        resolved = {
            "key": key,
            "fields": fields,
            "period_ms": member.get("period_ms"),
            "states": member.get(
                "states",
                [
                    s
                    for s in self.jobs_machine.states
                    if s not in ("permanently_failed", "cancelled")
                ],
            ),
            "conflict": member.get("conflict", "discard"),
        }
        first = document["requests"][0]
        stored = {**document, "queue": queue}
        values = [_field_value(path, stored, first) for path in fields]
        text = json.dumps(
            [key, fields, values], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return {"uniqueness": resolved, "unique_key": hashlib.sha256(text.encode()).hexdigest()}

    def _unique_holder(self, job: MJob) -> str | None:
        """UKEY-003: the holder of the job's key while its claim is held, else None."""
        claim = self.unique_claims.get(job.unique_key or "")
        if claim is None:
            return None
        holder_id, expires, states = claim
        holder = self.jobs.get(holder_id)
        state = holder.state if holder is not None else "finished"
        if (expires is not None and self.now >= expires) or state not in states:
            return None
        return holder_id

    def _replace_holder(self, job: MJob, holder_id: str) -> None:
        """UKEY-005: a replace conflict with a holder that has not started."""
        holder = self.jobs.get(holder_id)
        if (
            holder is None
            or (job.uniqueness or {}).get("conflict") != "replace"
            or holder.state != self.jobs_machine.initial_state
            or holder.attempts != 0
        ):
            return
        holder.requests = job.requests
        holder.priority = job.priority
        holder.available_at = job.available_at
        holder.available_range = job.available_range
        self._note(holder.id, "requests", "UKEY-005")

    def _check_features(self, document: dict[str, Any]) -> None:
        """VER-001: a request that uses a feature the implementation does not claim."""
        uses = {
            "serial_groups": document.get("serial_group") is not None,
            "unique": bool(document.get("unique")),
            "recurring": document.get("recurring") is not None,
            "dependencies": bool(document.get("depends_on")),
            "multi_request": len(document.get("requests", [])) > 1,
            "batches": document.get("batch_id") is not None,
            "tags": bool(document.get("tags")),
            "timeouts": document.get("timeout_ms") is not None,
            "results": document.get("result_ttl_ms") is not None,
            "concurrency": document.get("concurrency_key") is not None,
            "rate_limits": document.get("rate_key") is not None,
            "unique_keys": document.get("uniqueness") is not None,
        }
        for feature, used in uses.items():
            if used and feature not in self.features:
                rule = {
                    "timeouts": "VER-004",
                    "results": "VER-009",
                    "concurrency": "VER-010",
                    "rate_limits": "VER-011",
                    "unique_keys": "VER-013",
                }.get(feature, "VER-001")
                raise Refusal("invalid_request", rule, f"feature {feature} is not claimed")

    def _resolve_policy(self, given: Any) -> dict[str, Any]:
        if given is None:
            given = self.default_preset
        if isinstance(given, str):
            if given not in self.presets:
                raise Refusal("invalid_request", "JOB-003", f"unknown retry preset {given!r}")
            return full_policy(dict(self.presets[given]))
        multiplier = given.get("multiplier") if isinstance(given, dict) else None
        if isinstance(multiplier, int | float) and _decimal_places(multiplier) > 3:
            raise Refusal(
                "invalid_request", "RETRY-008", f"multiplier {multiplier} has over three decimals"
            )
        return full_policy(dict(given))

    def _next_id(self) -> str:
        if self._new_ids:
            new = self._new_ids.pop(0)
        else:
            self.placeholders += 1
            new = f"~{self.placeholders}"
        self.used_ids.add(new)
        return new

    def _store_new(self, jobs: list[MJob], *, system: bool = False) -> list[MJob]:
        """Insert validated jobs, then apply the publish-time rules that involve other records.
        A job whose unique key is held is not stored: its holder stands in its place
        (UKEY-004), and ``_conflicts`` names it."""
        stored = []
        self._conflicts = []
        fresh = []
        for job in jobs:
            holder = self._unique_holder(job) if job.unique_key is not None else None
            self._conflicts.append(holder)
            kept = holder is not None and (job.uniqueness or {}).get("conflict") == "keep"
            if holder is not None and not kept:
                self._replace_holder(job, holder)
                stored.append(self.jobs.get(holder, job))
                continue
            self.order += 1
            job.order = self.order
            job.id = self._next_id() if not system else self._placeholder()
            self.jobs[job.id] = job
            self._created.append(job.id)
            stored.append(job)
            fresh.append(job)
            if job.unique_key is not None and job.uniqueness is not None and not kept:
                period = job.uniqueness["period_ms"]
                expires = None if period is None else job.created_at + period
                states = frozenset(job.uniqueness["states"])
                self.unique_claims[job.unique_key] = (job.id, expires, states)
        counts: dict[str, int] = {}
        for job in fresh:
            if job.batch_id is not None:
                counts[job.batch_id] = counts.get(job.batch_id, 0) + 1
        for batch_id, count in counts.items():
            self._fire_batch(self.batches[batch_id], "add", {"count": count})
        for job in fresh:
            failed = [d for d in job.depends_on if self.jobs[d].state in self.tags["failed"]]
            if failed:
                self._fire(job, "dependency_failed", self._dependency_error(failed[0]))
        return stored

    def _placeholder(self) -> str:
        self.placeholders += 1
        return f"~{self.placeholders}"

    # -- claiming ---------------------------------------------------------------------------

    def facts(self, job: MJob) -> dict[str, bool]:
        """The context facts of spec.md#context-facts, from the current state."""
        tags = self.tags
        dependencies = [self.jobs[d] for d in job.depends_on if d in self.jobs]
        group = (
            [j for j in self.jobs.values() if j.serial_group == job.serial_group]
            if job.serial_group is not None
            else []
        )
        siblings = (
            [
                j
                for j in self.jobs.values()
                if j.unique and j.identifier == job.identifier and j.id != job.id
            ]
            if job.unique
            else []
        )
        key = (job.priority, job.order)
        return {
            "dependencies_succeeded": all(d.state in tags["succeeded"] for d in dependencies),
            "serial_group_idle": not any(
                j.state in tags["leased"] for j in group if j.id != job.id
            ),
            "serial_group_head": all(
                (j.priority, j.order) >= key for j in group if j.state in tags["active"]
            ),
            "unique_sibling_processing": any(s.state in tags["leased"] for s in siblings),
            "unique_sibling_succeeded": any(s.state == "finished" for s in siblings),
        }

    def claim_candidates(
        self,
        queues: list[str] | None,
        low: int,
        high: int,
        job: str | None,
    ) -> list[MJob]:
        """Jobs a claim meets, in ORDER-002 order: claimable, matching and due."""
        return sorted(
            (
                j
                for j in self.jobs.values()
                if j.state in self.tags["claimable"]
                and (not queues or j.queue in queues)
                and j.queue not in self.paused
                and low <= j.priority <= high
                and (job is None or j.id == job)
                and j.available_at <= self.now
            ),
            key=lambda j: (j.priority, j.order),
        )

    def cmd_claim(
        self,
        worker_id: str,
        lease_ms: int,
        queues: list[str] | None = None,
        priorities: str | None = None,
        limit: int = 1,
        job: str | None = None,
    ) -> Any:
        low, high = parse_priority_range(priorities)
        claimed: list[MJob] = []
        params = {"worker_id": worker_id, "lease_ms": lease_ms}
        # A discarded redundant job takes no place in the limit and may unblock others
        # (a dependent, the next job of its group), so the claim looks again after one.
        discarded = True
        while discarded and len(claimed) < limit:
            discarded = False
            for candidate in self.claim_candidates(queues, low, high, job):
                if len(claimed) >= limit:
                    break
                if candidate.state not in self.tags["claimable"]:
                    continue
                facts = self.facts(candidate)
                try:
                    self._fire(candidate, "discard_redundant", {}, facts)
                    discarded = True
                    continue
                except Refusal:
                    pass
                slot = self._free_slot(candidate)
                if slot is None or not self._rate_free(candidate):  # CONC-002, RATE-002
                    continue
                try:
                    self._fire(candidate, "claim", params, facts)
                except Refusal:
                    continue
                if candidate.concurrency_key is not None and candidate.state in self.tags["leased"]:
                    candidate.concurrency_slot = slot
                    self._note(candidate.id, "state", "CONC-002")
                if candidate.rate_key is not None and candidate.state in self.tags["leased"]:
                    window = self._rate_window(candidate)
                    self.rate_claims[window] = self.rate_claims.get(window, 0) + 1
                    self._note(candidate.id, "state", "RATE-002")
                claimed.append(candidate)
        return {"jobs": [self.doc(j) for j in claimed]}, "CLAIM-001"

    def _rate_window(self, job: MJob) -> tuple[str, int]:
        period = job.rate_period_ms or 1
        return (job.rate_key or "", self.now - self.now % period)

    def _rate_free(self, job: MJob) -> bool:
        """RATE-002: fewer claims of the key than its limit in the window of now."""
        if job.rate_key is None:
            return True
        return self.rate_claims.get(self._rate_window(job), 0) < (job.rate_limit or 0)

    def _free_slot(self, job: MJob) -> int | None:
        """CONC-002: the lowest slot of the job's key below its limit no leased job holds;
        -1 for a job without a key."""
        if job.concurrency_key is None:
            return -1
        held = {
            j.concurrency_slot
            for j in self.jobs.values()
            if j.concurrency_key == job.concurrency_key and j.state in self.tags["leased"]
        }
        free = [slot for slot in range(job.concurrency_limit or 0) if slot not in held]
        return free[0] if free else None

    # -- reports and operations -------------------------------------------------------------

    def cmd_report(self, job: str, lease_token: int, outcome: dict[str, Any]) -> Any:
        target = self.job(job)
        kind = outcome["kind"]
        params: dict[str, Any] = {"lease_token": lease_token}
        result = outcome.get("result")
        if result is not None:
            self._check_result(target, result, lease_token, kind)
        if kind == "success":
            event = "succeed"
        elif kind == "waiting":
            event = "wait"
            if outcome.get("delay_ms") is not None:
                params["delay_ms"] = outcome["delay_ms"]
        elif kind == "cancelled":  # CANCEL-003: the handler stopped at a cancel request
            event = "confirm_cancel"
        elif kind == "timeout":  # TIMEOUT-002: a temporary error of its own kind
            event = "fail_temporarily"
            params["error"] = outcome.get("error") or {"kind": "timeout", "message": ANY}
        else:
            cause = kind if kind != "die" else outcome.get("cause", "permanent")
            event = "fail_temporarily" if cause == "temporary" else "fail_permanently"
            params["error"] = outcome.get("error") or {"kind": cause, "message": ANY}
            if event == "fail_temporarily" and outcome.get("retry_after_ms") is not None:
                params["retry_after_ms"] = outcome["retry_after_ms"]
        transition = self._lease_holder_event(target, event, params)
        if result is not None:
            target.result = result
            self._note(target.id, "result", "RESULT-001")
        return {"job": self.doc(target)}, transition.req

    def _check_result(self, job: MJob, result: Any, lease_token: int, kind: str) -> None:
        """VER-009, RESULT-001 and RESULT-002, before anything changes."""
        if "results" not in self.features:
            raise Refusal("invalid_request", "VER-009", "feature results is not claimed")
        if kind != "success":
            raise Refusal("invalid_request", "RESULT-001", f"a {kind} outcome with a result")
        # A stale token is refused as LEASE-007 says, whatever the result.
        if job.lease is None or job.lease["token"] != lease_token:
            return
        if _depth(result) > MAX_DEPTH:
            raise Refusal(
                "invalid_payload", "RESULT-002", f"the result nests deeper than {MAX_DEPTH}"
            )
        if any(_SURROGATE.search(text) for text in _strings(result)):
            raise Refusal("invalid_payload", "RESULT-002", "the result has a lone surrogate")
        encoded = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(encoded) > MAX_RESULT_BYTES:
            raise Refusal("payload_too_large", "RESULT-002", f"the result is {len(encoded)} bytes")
        remaining = sum(1 for r in job.requests if r.state != "succeeded")
        if job.state == "processing" and remaining > 1:
            raise Refusal("invalid_request", "RESULT-001", "a result before the last request")

    def cmd_progress(
        self,
        job: str,
        lease_token: int,
        percent: float | None = None,
        message: str | None = None,
    ) -> Any:
        """PROGRESS-001: stored under the current lease; no event, nothing else changes."""
        if "progress" not in self.features:
            raise Refusal("invalid_request", "VER-009", "feature progress is not claimed")
        if percent is not None and not 0 <= percent <= 100:
            raise Refusal("invalid_request", "PROGRESS-001", f"percent {percent} out of 0..100")
        if message is not None and (len(message) > 1024 or "\x00" in message):
            raise Refusal("invalid_request", "PROGRESS-001", "message too long or with U+0000")
        target = self.job(job)
        if target.lease is None or target.lease["token"] != lease_token:
            raise Refusal("stale_lease", "PROGRESS-001", f"job {job} is not leased under the token")
        target.progress = {"percent": percent, "message": message, "at": self.now}
        self._note(target.id, "progress", "PROGRESS-001")
        return {"job": self.doc(target)}, "PROGRESS-001"

    def cmd_schedule_tick(self, schedules: list[dict[str, Any]]) -> Any:
        """CRON-001..005: evaluate each schedule at now, as a process that starts does."""
        if "cron" not in self.features:
            raise Refusal("invalid_request", "VER-001", "feature cron is not claimed")
        checked = []
        for schedule in schedules:
            cron = Cron(schedule["expression"], schedule.get("tz", "UTC"))
            self._build(schedule["job"])  # a job the schedule cannot publish is refused now
            checked.append((schedule, cron))
        runs = []
        for schedule, cron in checked:
            run = self._evaluate(schedule, cron)
            if run is not None:
                runs.append(run)
        return {"runs": runs}, "CRON-004"

    def _evaluate(self, schedule: dict[str, Any], cron: Cron) -> dict[str, Any] | None:
        name = schedule["name"]
        recorded = self.schedule_runs.setdefault(name, [])
        last = max((fire for fire, _ in recorded), default=None)
        catch_up = schedule.get("missed", "skip") == "run_once" and last is not None
        floor = self.now - (CRON_LOOKBACK_MS if catch_up else CRON_GRACE_MS)
        if last is not None and last > floor:
            floor = last
        fire = cron.latest(floor, self.now)
        if fire is None or (self.now - fire >= CRON_GRACE_MS and not catch_up):
            return None
        overlap = schedule.get("overlap", "allow")
        document = copy.deepcopy(schedule["job"])
        if overlap != "allow":
            previous = [job_id for _, job_id in sorted(recorded) if job_id is not None]
            before = self.jobs.get(previous[-1]) if previous else None
            if (
                overlap == "skip"
                and before is not None
                and before.state not in self.tags["terminal"]
            ):
                recorded.append((fire, None))
                return {"name": name, "fire_at": timefmt.format_ms(fire), "job": None}
            if overlap == "queue":
                document["serial_group"] = f"schedule:{name}"
        document["metadata"] = {
            **document.get("metadata", {}),
            "schedule": name,
            "scheduled_for": timefmt.format_ms(fire),
        }
        (job,) = self._store_new([self._build(document)])
        recorded.append((fire, job.id))
        self._note(job.id, "metadata", "CRON-005")
        return {"name": name, "fire_at": timefmt.format_ms(fire), "job": self.doc(job)}

    def cmd_heartbeat(self, job: str, lease_token: int, lease_ms: int) -> Any:
        target = self.job(job)
        params = {"lease_token": lease_token, "lease_ms": lease_ms}
        transition = self._lease_holder_event(target, "heartbeat", params)
        return {"job": self.doc(target)}, transition.req

    def _lease_holder_event(self, job: MJob, event: str, params: dict[str, Any]) -> Transition:
        """A report refused because its token is not the lease's breaks LEASE-007.

        (The machine refuses a token of 0 with invalid_transition, not stale_lease: its
        refusal reads ``event.lease_token`` as a bare operand, and 0 does not hold. The
        suite follows the machine file, which takes precedence, and cites both rules.)
        """
        try:
            return self._fire(job, event, params)
        except Refusal as refusal:
            if (
                refusal.code == "invalid_transition"
                and job.lease is not None
                and params.get("lease_token") != job.lease["token"]
            ):
                raise Refusal(refusal.code, "LEASE-007", refusal.message) from None
            raise

    def _operator(self, job: str, event: str, req: str) -> Any:
        target = self.job(job)
        try:
            transition = self._fire(target, event, {})
        except Refusal as refusal:
            if refusal.code == "invalid_transition":
                raise Refusal("invalid_transition", req, refusal.message) from None
            raise
        return {"job": self.doc(target)}, transition.req

    def cmd_cancel(self, job: str) -> Any:
        target = self.job(job)
        if target.state in self.tags["leased"] and "cancel_running" not in self.features:
            raise Refusal("invalid_transition", "VER-012", "feature cancel_running is not claimed")
        return self._operator(job, "cancel", "OPS-008")

    def cmd_requeue(self, job: str) -> Any:
        return self._operator(job, "requeue", "OPS-003")

    def cmd_retry(self, job: str) -> Any:
        return self._operator(job, "retry", "OPS-004")

    def cmd_fire(self, job: str, event: str, params: dict[str, Any] | None = None) -> Any:
        target = self.job(job)
        transition = self._fire(target, event, dict(params or {}))
        return {"job": self.doc(target)}, transition.req

    def cmd_rescue(self) -> Any:
        expired = [
            j
            for j in self.sorted_jobs()
            if j.state in self.tags["leased"]
            and j.lease is not None
            and j.lease["expires_at"] <= self.now
        ]
        rescued = []
        for job in expired:
            try:
                self._fire(job, "lease_expired", {})
            except Refusal:
                continue
            rescued.append(job)
        return {"jobs": {"$unordered": [self.doc(j) for j in rescued]}}, "LEASE-008"

    # -- reading ----------------------------------------------------------------------------

    def cmd_pause_queue(self, queue: str) -> Any:
        """PAUSE-001, PAUSE-003: idempotent; the first pause time is kept."""
        changed = queue not in self.paused
        self.paused.setdefault(queue, self.now)
        return {"changed": changed}, "PAUSE-003"

    def cmd_resume_queue(self, queue: str) -> Any:
        changed = self.paused.pop(queue, None) is not None
        return {"changed": changed}, "PAUSE-003"

    def cmd_paused_queues(self) -> Any:
        listed = [
            {"queue": queue, "paused_at": timefmt.format_ms(at)}
            for queue, at in sorted(self.paused.items())
        ]
        return {"queues": listed}, "PAUSE-005"

    def cmd_get(self, job: str) -> Any:
        return {"job": self.doc(self.job(job))}, "JOB-007"

    def cmd_list(
        self,
        states: list[str] | None = None,
        queue: str | None = None,
        tag: str | None = None,
        identifier: str | None = None,
        batch: str | None = None,
        after: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Any:
        """OPS-006: ascending sequence, filtered, from after a given job on (``after``)."""
        if after is not None and after not in self.jobs:
            raise Refusal("not_found", "OPS-007", f"the job {after!r} after which to list is gone")
        start = self.jobs[after].order if after is not None else 0
        found = [
            j
            for j in self.sorted_jobs()
            if (not states or j.state in states)
            and (queue is None or j.queue == queue)
            and (tag is None or tag in j.tags)
            and (identifier is None or j.identifier == identifier)
            and (batch is None or j.batch_id == batch)
            and j.order > start
        ]
        return {"jobs": [self.doc(j) for j in found[:limit]]}, "TAG-002" if tag else "OPS-006"

    def cmd_unfinished_identifiers(self, identifiers: list[str]) -> Any:
        wanted = set(identifiers)
        found = sorted(
            {
                j.identifier
                for j in self.jobs.values()
                if j.identifier in wanted and j.state in self.tags["unfinished"]
            }
        )
        return {"identifiers": {"$unordered": found}}, "IDENT-002"

    def cmd_clear_finished(self, older_than_ms: int) -> Any:
        cutoff = self.now - older_than_ms
        needed = {
            d for j in self.jobs.values() if j.state in self.tags["active"] for d in j.depends_on
        }
        doomed = [
            j.id
            for j in self.sorted_jobs()
            if j.state in self.tags["prunable"]
            and j.finished_at is not None
            and j.finished_at < cutoff
            and j.id not in needed
        ]
        for job_id in doomed:
            del self.jobs[job_id]
        return {"deleted": len(doomed)}, "OPS-005"

    def cmd_retry_delay(self, policy: Any, attempt: int) -> Any:
        resolved = self._resolve_policy(policy)
        low, high = delay_bounds(resolved, attempt)
        delay: Any = low if low == high else {"$range": [low, high]}
        return {"delay_ms": delay}, "RETRY-002" if low == high else "RETRY-003"

    def cmd_notifications(self) -> Any:
        found, self.notifications = self.notifications, []
        return {"notifications": {"$unordered": found}}, "RETRY-006"

    # -- batches ----------------------------------------------------------------------------

    def cmd_batch_open(self, completion: dict[str, Any] | None = None) -> Any:
        if "batches" not in self.features:
            raise Refusal("invalid_request", "VER-001", "batches are not claimed")
        if completion is not None:
            if completion.get("batch_id") is not None or completion.get("depends_on"):
                raise Refusal("invalid_request", "BATCH-001", "a completion has no batch or deps")
            self._build(completion)
        batch = MBatch(
            id=self._next_id(),
            state=self.batch_machine.initial_state,
            total=0,
            created_at=self.now,
            completion=completion,
        )
        self.batches[batch.id] = batch
        return {"batch": self.batch_doc(batch)}, "BATCH-001"

    def cmd_batch_seal(self, batch: str) -> Any:
        if "batches" not in self.features:
            raise Refusal("invalid_request", "VER-001", "batches are not claimed")
        target = self._batch(batch)
        self._fire_batch(target, "seal", {})
        return {"batch": self.batch_doc(target)}, "BATCH-003"

    def cmd_batch_get(self, batch: str) -> Any:
        if "batches" not in self.features:
            raise Refusal("invalid_request", "VER-001", "batches are not claimed")
        return {"batch": self.batch_doc(self._batch(batch))}, "BATCH-001"

    def _batch(self, batch_id: str) -> MBatch:
        try:
            return self.batches[batch_id]
        except KeyError:
            raise Refusal("not_found", "OPS-002", f"batch {batch_id} is not stored") from None

    def _unsettled(self, batch_id: str) -> int:
        return sum(
            1
            for j in self.jobs.values()
            if j.batch_id == batch_id and j.state not in self.tags["terminal"]
        )

    def _fire_batch(self, batch: MBatch, event: str, params: dict[str, Any]) -> None:
        view = {"unsettled": self._unsettled(batch.id), "total": batch.total}
        env = Env(now=Instant(self.now), batch=view, event=params, ctx={}, job=view)
        try:
            transition = self.batch_machine.decide(batch.state, event, env)
        except Refusal as refusal:
            if event == "add":
                raise Refusal("batch_closed", "BATCH-002", refusal.message) from None
            raise
        publish = False
        for name in transition.effects:
            if name == "count_jobs":
                batch.total += int(params.get("count", 0))
            elif name == "stamp_finished":
                batch.finished_at = self.now
            elif name == "publish_completion":
                publish = True
        batch.state = transition.target
        if publish and batch.completion is not None:
            job = self._build(batch.completion)
            self._store_new([job], system=True)
            self._note(job.id, "id", "BATCH-004")

    # -- firing -----------------------------------------------------------------------------

    def _note(self, job_id: str, field_name: str, req: str) -> None:
        self._why.setdefault((job_id, field_name), req)

    def _fire(
        self,
        job: MJob,
        event: str,
        params: dict[str, Any],
        facts: dict[str, bool] | None = None,
    ) -> Transition:
        """MACH-005..010: refusals, transition, job effects in order, state, system effects."""
        if facts is None:
            facts = self.facts(job)
        env = Env(now=Instant(self.now), job=job.view(), event=params, ctx=facts)
        transition = self.jobs_machine.decide(job.state, event, env)
        before = job.clone()
        system = []
        try:
            for name in transition.effects:
                info = self.jobs_machine.effects[name]
                req = info.req or transition.req
                if info.scope == "system":
                    system.append(name)
                elif info.request_event == "abandon":  # LEASE-009: with the lease error
                    lease_error = {"kind": "lease_expired", "message": ANY}
                    self._fire_requests(job, info.scope, "abandon", {"error": lease_error})
                elif info.request_event:
                    self._fire_requests(job, info.scope, info.request_event, params)
                    self._note(job.id, "requests", req)
                else:
                    self._job_effect(name, job, params)
                    for written in EFFECT_FIELDS[name]:
                        self._note(job.id, written, req)
        except Refusal:
            job.__dict__.update(before.__dict__)
            raise Refusal(
                "invalid_transition", "MACH-009", f"the request machine refused {event}"
            ) from None
        job.state = transition.target
        self._note(job.id, "state", transition.req)
        for name in system:
            self._system_effects()[name](job)
        return transition

    def _fire_requests(self, job: MJob, scope: str, event: str, params: dict[str, Any]) -> None:
        if scope == "all_unfinished":
            for request in job.requests:
                if request.state in self.request_succeeded:
                    continue
                if self.requests_machine.has_transition(request.state, event):
                    self._fire_request(request, event, params)
            return
        current = self._current(job)
        if current is not None:
            self._fire_request(current, event, params)

    def _current(self, job: MJob) -> MRequest | None:
        for request in job.requests:
            if request.state not in self.request_succeeded:
                return request
        return None

    def _fire_request(self, request: MRequest, event: str, params: dict[str, Any]) -> None:
        env = Env(now=Instant(self.now), job=request.view(), event=params, ctx={})
        transition = self.requests_machine.decide(request.state, event, env)
        for name in transition.effects:
            if name == "count_attempt":
                request.attempts += 1
            elif name == "refund_attempt":
                request.attempts -= 1
            elif name == "record_error":
                # error = event.error; the lease_expired event carries none, so leave room.
                request.error = params.get("error", ANY)
            elif name == "clear_error":
                request.error = None
        request.state = transition.target

    def _job_effect(self, name: str, job: MJob, params: dict[str, Any]) -> None:
        now = self.now
        if name == "count_attempt":
            job.attempts += 1
        elif name == "refund_attempt":
            job.attempts -= 1
        elif name == "reset_attempts":
            job.attempts = 0
            job.available_at = now
            job.available_range = None
        elif name == "grant_lease":
            token = job.lease_token + 1
            job.lease = {
                "token": token,
                "worker_id": params["worker_id"],
                "expires_at": now + int(params["lease_ms"]),
            }
            job.lease_token = token
        elif name == "extend_lease":
            assert job.lease is not None
            job.lease["expires_at"] = now + int(params["lease_ms"])
        elif name == "release_lease":
            job.lease = None
        elif name == "record_error":
            if params.get("error") is not None:
                self._record(job, params["error"])
        elif name == "record_lease_error":
            self._record(job, {"kind": "lease_expired", "message": ANY})
        elif name == "schedule_retry":
            if params.get("retry_after_ms") is not None:
                low = high = int(params["retry_after_ms"])
            else:
                low, high = delay_bounds(job.retry_policy, job.attempts)
            job.available_at = now + low
            job.available_range = (now + low, now + high) if low != high else None
        elif name == "schedule_wait":
            delay = params.get("delay_ms")
            job.available_at = now + (int(delay) if delay is not None else WAITING_DELAY_MS)
            job.available_range = None
        elif name == "make_due":
            job.available_at = now
            job.available_range = None
        elif name == "stamp_finished":
            job.finished_at = now
        elif name == "clear_finished_stamp":
            job.finished_at = None
        elif name == "request_cancel":  # CANCEL-001: the first request's time is kept
            if job.cancel_requested_at is None:
                job.cancel_requested_at = now
        elif name == "clear_cancel_request":
            job.cancel_requested_at = None
        else:  # pragma: no cover - guarded by _check_effects
            raise RuntimeError(f"unknown effect {name}")

    def _record(self, job: MJob, error: dict[str, Any]) -> None:
        current = self._current(job)
        entry = {
            "kind": error["kind"],
            "message": error.get("message", ANY),
            "type": error.get("type"),
            "attempt": job.attempts,
            "request": current.index if current is not None else ANY,
            "at": self.now,
        }
        if error.get("traceback") is not None:  # OUT-009: kept unchanged
            entry["traceback"] = error["traceback"]
        job.errors.append(entry)
        job.last_error = entry

    # -- system effects ---------------------------------------------------------------------

    def _notify_threshold(self, job: MJob) -> None:
        limit = job.retry_policy.get("notify_after")
        if limit is not None and job.attempts == limit:
            self.notifications.append({"kind": "threshold", "job": job.id})

    def _notify_failure(self, job: MJob) -> None:
        self.notifications.append({"kind": "failed", "job": job.id})

    def _dependency_error(self, dependency: str) -> dict[str, Any]:
        return {"error": {"kind": "dependency_failed", "message": ANY}, "_dependency": dependency}

    def _cancel_dependents(self, job: MJob) -> None:
        for dependent in self.sorted_jobs():
            if job.id in dependent.depends_on and dependent.state in self.tags["active"]:
                try:
                    self._fire(dependent, "dependency_failed", self._dependency_error(job.id))
                except Refusal:
                    continue
                self._note(dependent.id, "state", "DEP-003")

    def _recheck_dependencies(self, job: MJob) -> None:
        failed = [
            d
            for d in job.depends_on
            if d in self.jobs and self.jobs[d].state in self.tags["failed"]
        ]
        if failed:
            self._fire(job, "dependency_failed", self._dependency_error(failed[0]))
            self._why[(job.id, "state")] = "DEP-004"

    def _republish_recurring(self, job: MJob) -> None:
        if job.recurring is None:
            return
        copy_ = MJob(
            id="",
            order=0,
            queue=job.queue,
            priority=job.priority,
            state=self.jobs_machine.initial_state,
            available_at=self.now + int(job.recurring["interval_ms"]),
            created_at=self.now,
            retry_policy=dict(job.retry_policy),
            requests=[
                MRequest(
                    r.index, r.type, copy.deepcopy(r.payload), self.requests_machine.initial_state
                )
                for r in job.requests
            ],
            serial_group=job.serial_group,
            identifier=job.identifier,
            unique=job.unique,
            recurring=dict(job.recurring),
            tags=list(job.tags),
            metadata=copy.deepcopy(job.metadata),
            timeout_ms=job.timeout_ms,
        )
        self._store_new([copy_], system=True)
        self._note(copy_.id, "id", "REC-001")

    def _settle_batch(self, job: MJob) -> None:
        if job.batch_id is not None and job.batch_id in self.batches:
            self._fire_batch(self.batches[job.batch_id], "job_settled", {})


def _error_doc(error: Any, brief: bool = False) -> Any:
    if error is None or is_matcher(error):
        return error
    document = {"kind": error["kind"], "message": error.get("message", ANY)}
    if error.get("type") is not None:
        document["type"] = error["type"]
    if brief:
        return document
    document["attempt"] = error["attempt"]
    document["request"] = error["request"]
    document["at"] = timefmt.format_ms(error["at"])
    if error.get("traceback") is not None:
        document["traceback"] = error["traceback"]
    return document


# -- publish validation: which rule a schema error breaks -----------------------------------------

MAX_DEPTH = 64  # LIMIT-006
CRON_GRACE_MS = 60_000  # CRON-004
CRON_LOOKBACK_MS = 400 * 86_400_000  # how far back run_once looks (an implementation's bound)
MAX_RESULT_BYTES = 65536  # RESULT-002
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python str, every one is unpaired


def _depth(value: Any) -> int:
    """Nesting depth (LIMIT-006): 0 for a scalar, one more than the deepest item otherwise;
    stops counting past the limit, so a deep value never recurses far."""
    stack = [(value, 0)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            level += 1
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level) for child in children)
    return deepest


def _strings(value: Any) -> Iterator[str]:
    """Every string of a JSON value, member names included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())


def _check_strings_and_depth(document: dict[str, Any]) -> None:
    """LIMIT-006 and LIMIT-007, which no schema keyword expresses."""
    parts = [("payload", r.get("payload")) for r in document["requests"]]
    parts.append(("metadata", document.get("metadata")))
    for where, value in parts:
        if _depth(value) > MAX_DEPTH:
            raise Refusal("invalid_payload", "LIMIT-006", f"{where} nests deeper than {MAX_DEPTH}")
        if any(_SURROGATE.search(text) for text in _strings(value)):
            raise Refusal("invalid_payload", "LIMIT-007", f"{where} has a lone surrogate")
    rest = {key: value for key, value in document.items() if key not in ("requests", "metadata")}
    rest["types"] = [r.get("type") for r in document["requests"]]
    if any(_SURROGATE.search(text) for text in _strings(rest)):
        raise Refusal("invalid_request", "LIMIT-007", "a label or name has a lone surrogate")


# UKEY-001: the states a unique key's claim does not cover unless the request names them.
_UNCOVERED = ("permanently_failed", "cancelled")


def _field_value(path: str, document: dict[str, Any], first: dict[str, Any]) -> Any:
    """UKEY-002: the value a field path names; null for a missing member."""
    if path == "type":
        return first["type"]
    if path in ("queue", "identifier"):
        return document.get(path)
    value = first.get("payload")
    for name in path.split(".")[1:]:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _publish_refusal(location: list[Any], validator: str, schema_path: list[Any]) -> Refusal:
    head = location[0] if location else None
    in_payload = (head == "requests" and "payload" in location) or head == "metadata"
    if in_payload:
        return Refusal("invalid_payload", "LIMIT-003", f"invalid payload at {location}")
    if head is None:
        if "then" in schema_path:
            return Refusal("invalid_request", "UNIQ-001", "a unique job needs an identifier")
        if validator == "not":
            return Refusal("invalid_request", "JOB-004", "available_at and delay_ms together")
        return Refusal("invalid_request", "JOB-002", f"invalid publish request ({validator})")
    rules = {
        "queue": "LIMIT-001",
        "priority": "ORDER-001",
        "serial_group": "LIMIT-002",
        "identifier": "LIMIT-002",
        "depends_on": "LIMIT-005",
        "available_at": "TIME-003",
        "recurring": "JOB-002",
        "retry_policy": "JOB-002",
        "result_ttl_ms": "RESULT-003",
        "concurrency_key": "CONC-001",
        "concurrency_limit": "CONC-001",
        "rate_key": "RATE-001",
        "rate_limit": "RATE-001",
        "rate_period_ms": "RATE-001",
        "uniqueness": "UKEY-001",
    }
    if head == "requests":
        req = "LIMIT-001" if "type" in location else "LIMIT-005"
    elif head == "tags":
        req = "LIMIT-005" if validator in ("uniqueItems", "maxItems") else "LIMIT-002"
    else:
        req = rules.get(str(head), "JOB-002")
    return Refusal("invalid_request", req, f"invalid {head} ({validator})")
