"""The job and request records, as immutable dataclasses.

State names are plain strings taken from the machine files; the code never lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from . import codec
from .clock import format_timestamp
from .retry import RetryPolicy

Record = TypeVar("Record")
_FIELD_NAMES: dict[type, frozenset[str]] = {}


def replace(record: Record, /, **changes: Any) -> Record:
    """``dataclasses.replace`` for the plain frozen records of this module, without __init__.

    Every state change builds several new versions of a job (one per effect); copying the
    field dict is several times faster than re-running the generated __init__ of a frozen
    class, which sets each of its 25 fields through object.__setattr__.
    """
    kind = type(record)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = frozenset(f.name for f in dataclasses.fields(kind))  # type: ignore[arg-type]
    if not names.issuperset(changes):
        unknown = sorted(set(changes) - names)
        raise TypeError(f"{kind.__name__} has no field(s) {unknown}")
    copy = object.__new__(kind)
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy


@dataclass(frozen=True)
class JobError:
    """An error recorded on a job (schemas/error.schema.json): its kind, message (at most 4096
    characters), class name and, for a handler's error, its traceback (at most 8192 characters,
    keeping the end where it was raised: OUT-009)."""

    kind: str
    message: str
    type: str | None = None
    attempt: int = 0
    request: int | None = None
    at: datetime | None = None
    traceback: str | None = None  # OUT-009: where the error arose, bounded

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "message": self.message,
            "type": self.type,
            "attempt": self.attempt,
        }
        if self.request is not None:
            data["request"] = self.request
        if self.at is not None:
            data["at"] = format_timestamp(self.at)
        if self.traceback is not None:
            data["traceback"] = self.traceback
        return data


@dataclass(frozen=True)
class Lease:
    """Who holds a processing job, until when, and the fencing token its reports must carry."""

    token: int
    worker_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Request:
    """One request of a job: its handler type, payload, state, attempts and last error."""

    index: int
    type: str
    payload: Any
    state: str
    attempts: int = 0
    error: JobError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "type": self.type,
            "payload": self.payload,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error.to_dict() if self.error else None,
        }


@dataclass(frozen=True)
class Job:
    """A stored job. ``payload`` values inside requests are codec-encoded JSON."""

    id: str
    sequence: int
    queue: str
    priority: int
    state: str
    available_at: datetime
    created_at: datetime
    updated_at: datetime
    retry_policy: RetryPolicy
    requests: tuple[Request, ...]
    attempts: int = 0
    finished_at: datetime | None = None
    serial_group: str | None = None
    identifier: str | None = None
    unique: bool = False
    recurring_interval_ms: int | None = None
    depends_on: tuple[str, ...] = ()
    batch_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    lease_token: int = 0
    lease: Lease | None = None
    last_error: JobError | None = None
    errors: tuple[JobError, ...] = ()
    execution: dict[str, Any] | None = None
    timeout_ms: int | None = None  # how long one attempt may run (TIMEOUT-001)
    result: Any = None  # codec-encoded JSON of the success that finished the job (RESULT-001)
    result_ttl_ms: int | None = None  # how long the result stays readable (RESULT-003)
    # {"percent", "message", "at"} as last reported by a lease holder (PROGRESS-001)
    progress: dict[str, Any] | None = None
    # CONC-001/002: the key whose limit the job counts against, and the slot it holds while
    # leased (None otherwise; the store keeps it only while the job is leased).
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    concurrency_slot: int | None = None
    # RATE-001/002: at most rate_limit claims of rate_key's jobs per window of rate_period_ms.
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    # CANCEL-001: when an operator asked to cancel the job while it was processing.
    cancel_requested_at: datetime | None = None
    # UKEY-001/002: the resolved uniqueness ({key, fields, period_ms, states, conflict}) and
    # the digest of the key computed from it.
    uniqueness: dict[str, Any] | None = None
    unique_key: str | None = None
    # Not stored: set on the job a publish returned because of a unique-key conflict
    # (UKEY-004); "discarded" or "replaced" (the holder), or "kept" (the new job, UKEY-008).
    conflict: str | None = field(default=None, compare=False)

    @property
    def result_expires_at(self) -> datetime | None:
        """finished_at plus result_ttl_ms, for a job that has a result (RESULT-003)."""
        if self.result is None or self.result_ttl_ms is None or self.finished_at is None:
            return None
        return self.finished_at + timedelta(milliseconds=self.result_ttl_ms)

    @property
    def result_value(self) -> Any:
        """The result decoded by the codec (bytes, dates, decimals back as Python values)."""
        return codec.decode(self.result)

    def result_read_at(self, now: datetime) -> Job:
        """The job as read at ``now``: without its result once it expired (RESULT-003)."""
        expires = self.result_expires_at
        if expires is None or now < expires:
            return self
        return replace(self, result=None)

    @property
    def max_attempts(self) -> int | None:
        return self.retry_policy.max_attempts

    @property
    def current_index(self) -> int | None:
        """Index of the first request that has not succeeded (the one to run next)."""
        for request in self.requests:
            if request.state != "succeeded":
                return request.index
        return None

    @property
    def cancel_requested(self) -> bool:
        """A cancel was requested while the job ran (CANCEL-001): its handler should stop."""
        return self.cancel_requested_at is not None

    @property
    def requests_remaining(self) -> int:
        return sum(1 for request in self.requests if request.state != "succeeded")

    def with_request(self, request: Request) -> Job:
        requests = list(self.requests)
        requests[request.index] = request
        return replace(self, requests=tuple(requests))

    def to_dict(self) -> dict[str, Any]:
        """The job in the shape of spec/schemas/job.schema.json."""
        return {
            "id": self.id,
            "sequence": self.sequence,
            "queue": self.queue,
            "priority": self.priority,
            "state": self.state,
            "available_at": format_timestamp(self.available_at),
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
            "finished_at": format_timestamp(self.finished_at) if self.finished_at else None,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "retry_policy": self.retry_policy.to_dict(),
            "serial_group": self.serial_group,
            "identifier": self.identifier,
            "unique": self.unique,
            "recurring": (
                {"interval_ms": self.recurring_interval_ms} if self.recurring_interval_ms else None
            ),
            "depends_on": list(self.depends_on),
            "batch_id": self.batch_id,
            "tags": list(self.tags),
            "metadata": self.metadata,
            "requests": [request.to_dict() for request in self.requests],
            "lease_token": self.lease_token,
            "lease": (
                {
                    "token": self.lease.token,
                    "worker_id": self.lease.worker_id,
                    "expires_at": format_timestamp(self.lease.expires_at),
                }
                if self.lease
                else None
            ),
            "last_error": self.last_error.to_dict() if self.last_error else None,
            "errors": [error.to_dict() for error in self.errors],
            "execution": self.execution,
        } | self._optional_members()

    def _optional_members(self) -> dict[str, Any]:
        """Members of optional features, left out when null (TIMEOUT-001, RESULT-001..003,
        PROGRESS-002, CANCEL-001)."""
        members: dict[str, Any] = {}
        if self.timeout_ms is not None:
            members["timeout_ms"] = self.timeout_ms
        if self.result is not None:
            members["result"] = self.result
        if self.result_ttl_ms is not None:
            members["result_ttl_ms"] = self.result_ttl_ms
        expires = self.result_expires_at
        if expires is not None:
            members["result_expires_at"] = format_timestamp(expires)
        if self.concurrency_key is not None:
            members["concurrency_key"] = self.concurrency_key
            members["concurrency_limit"] = self.concurrency_limit
        if self.rate_key is not None:
            members["rate_key"] = self.rate_key
            members["rate_limit"] = self.rate_limit
            members["rate_period_ms"] = self.rate_period_ms
        if self.unique_key is not None:
            members["uniqueness"] = self.uniqueness
            members["unique_key"] = self.unique_key
        if self.progress is not None:
            members["progress"] = {
                "percent": self.progress.get("percent"),
                "message": self.progress.get("message"),
                "at": format_timestamp(self.progress["at"]),
            }
        if self.cancel_requested_at is not None:
            members["cancel_requested_at"] = format_timestamp(self.cancel_requested_at)
        return members


@dataclass(frozen=True)
class Batch:
    """A group of jobs tracked together; its completion job is published once all settle."""

    id: str
    state: str
    total: int
    created_at: datetime
    completion: dict[str, Any] | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class WorkerRecord:
    """A running worker as it announces itself in the store (docs/guide/workers.md#presence):
    written when it starts and at every presence beat, deleted when it stops."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    queues: tuple[str, ...] = ()
    concurrency: int = 1
    running: tuple[str, ...] = ()  # ids of the jobs it runs now
    memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": format_timestamp(self.started_at),
            "heartbeat_at": format_timestamp(self.heartbeat_at),
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": list(self.running),
            "memory_bytes": self.memory_bytes,
        }
