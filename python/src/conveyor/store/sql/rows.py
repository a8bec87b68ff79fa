"""Rows of the jobs table to and from :class:`~conveyor.model.Job`."""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from ...clock import from_ms, to_ms
from ...codec import dumps as _dumps
from ...model import Job, JobError, Lease, Request
from ...retry import RetryPolicy
from ...serialization import error_from_dict, request_from_dict
from ..base import StateSets


@functools.lru_cache(maxsize=256)
def _policy_text(policy: RetryPolicy) -> str:
    """Policies are few and immutable: each is encoded once, not once per row written."""
    return _dumps(policy.to_dict())


def _list_text(values: tuple[Any, ...] | list[Any]) -> str:
    return _dumps(list(values)) if values else "[]"


def _error(error: JobError | None) -> str | None:
    return _dumps(error.to_dict()) if error else None


def progress_text(progress: Mapping[str, Any] | None) -> str | None:
    """The progress column: its time in epoch milliseconds, like every time of the store."""
    if progress is None:
        return None
    return _dumps({**progress, "at": to_ms(progress["at"])})


def _progress_from_text(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    progress: dict[str, Any] = json.loads(text)
    progress["at"] = from_ms(progress["at"])
    return progress


Encoder = Callable[[Job, bool, bool, bool, bool], Any]

# Each column: the Job fields it is computed from, and how (job, leased, claimable and due,
# claimable but delayed, unique held) -> value. The lock and claim columns also depend on the
# state, through the flags:
# a unique job holds its identifier's lock while leased and, once it succeeded, for as long
# as it exists, so no sibling can be claimed after it (UNIQ-003) whatever snapshot the
# sibling's claim read.
_COLUMNS: dict[str, tuple[tuple[str, ...], Encoder]] = {
    # Claimable jobs are in one of two indexes: the claim's (due when written) or the delayed
    # one (due later, promoted by the claim once due: store.SqlTransaction._promote).
    "claim_priority": (
        ("priority", "state", "available_at", "updated_at"),
        lambda j, le, cl, dl, un: j.priority if cl else None,
    ),
    "delay_until": (
        ("available_at", "state", "updated_at"),
        lambda j, le, cl, dl, un: to_ms(j.available_at) if dl else None,
    ),
    "queue": (("queue",), lambda j, le, cl, dl, un: j.queue),
    "priority": (("priority",), lambda j, le, cl, dl, un: j.priority),
    "state": (("state",), lambda j, le, cl, dl, un: j.state),
    "available_at": (("available_at",), lambda j, le, cl, dl, un: to_ms(j.available_at)),
    "created_at": (("created_at",), lambda j, le, cl, dl, un: to_ms(j.created_at)),
    "updated_at": (("updated_at",), lambda j, le, cl, dl, un: to_ms(j.updated_at)),
    "finished_at": (
        ("finished_at",),
        lambda j, le, cl, dl, un: to_ms(j.finished_at) if j.finished_at else None,
    ),
    "attempts": (("attempts",), lambda j, le, cl, dl, un: j.attempts),
    "retry_policy": (("retry_policy",), lambda j, le, cl, dl, un: _policy_text(j.retry_policy)),
    "serial_group": (("serial_group",), lambda j, le, cl, dl, un: j.serial_group),
    "identifier": (("identifier",), lambda j, le, cl, dl, un: j.identifier),
    "is_unique": (("unique",), lambda j, le, cl, dl, un: j.unique),
    "recurring_interval_ms": (
        ("recurring_interval_ms",),
        lambda j, le, cl, dl, un: j.recurring_interval_ms,
    ),
    "batch_id": (("batch_id",), lambda j, le, cl, dl, un: int(j.batch_id) if j.batch_id else None),
    "depends_on": (("depends_on",), lambda j, le, cl, dl, un: _list_text(j.depends_on)),
    "tags": (("tags",), lambda j, le, cl, dl, un: _list_text(j.tags)),
    "metadata_json": (
        ("metadata",),
        lambda j, le, cl, dl, un: _dumps(j.metadata) if j.metadata else "{}",
    ),
    "requests": (
        ("requests",),
        lambda j, le, cl, dl, un: _dumps([request.to_dict() for request in j.requests]),
    ),
    "lease_token": (("lease_token",), lambda j, le, cl, dl, un: j.lease_token),
    "lease_worker": (("lease",), lambda j, le, cl, dl, un: j.lease.worker_id if j.lease else None),
    "lease_expires_at": (
        ("lease",),
        lambda j, le, cl, dl, un: to_ms(j.lease.expires_at) if j.lease else None,
    ),
    "last_error": (("last_error",), lambda j, le, cl, dl, un: _error(j.last_error)),
    "errors": (("errors",), lambda j, le, cl, dl, un: _list_text([e.to_dict() for e in j.errors])),
    "execution": (
        ("execution",),
        lambda j, le, cl, dl, un: _dumps(j.execution) if j.execution is not None else None,
    ),
    "timeout_ms": (("timeout_ms",), lambda j, le, cl, dl, un: j.timeout_ms),
    "result": (
        ("result",),
        lambda j, le, cl, dl, un: _dumps(j.result) if j.result is not None else None,
    ),
    "result_ttl_ms": (("result_ttl_ms",), lambda j, le, cl, dl, un: j.result_ttl_ms),
    "progress": (("progress",), lambda j, le, cl, dl, un: progress_text(j.progress)),
    "concurrency_key": (("concurrency_key",), lambda j, le, cl, dl, un: j.concurrency_key),
    "concurrency_limit": (("concurrency_limit",), lambda j, le, cl, dl, un: j.concurrency_limit),
    "rate_key": (("rate_key",), lambda j, le, cl, dl, un: j.rate_key),
    "rate_limit": (("rate_limit",), lambda j, le, cl, dl, un: j.rate_limit),
    "rate_period_ms": (("rate_period_ms",), lambda j, le, cl, dl, un: j.rate_period_ms),
    "cancel_requested_at": (
        ("cancel_requested_at",),
        lambda j, le, cl, dl, un: (
            to_ms(j.cancel_requested_at) if j.cancel_requested_at is not None else None
        ),
    ),
    "uniqueness": (
        ("uniqueness",),
        lambda j, le, cl, dl, un: _dumps(j.uniqueness) if j.uniqueness is not None else None,
    ),
    "unique_key": (("unique_key",), lambda j, le, cl, dl, un: j.unique_key),
    "concurrency_slot": (
        ("concurrency_slot", "state"),
        lambda j, le, cl, dl, un: j.concurrency_slot if le else None,
    ),
    "group_lock": (
        ("serial_group", "state"),
        lambda j, le, cl, dl, un: j.serial_group if le else None,
    ),
    "unique_lock": (
        ("identifier", "unique", "state"),
        lambda j, le, cl, dl, un: j.identifier if un and j.unique else None,
    ),
}
_SOURCE_FIELDS = tuple(sorted({field for fields, _ in _COLUMNS.values() for field in fields}))
# field -> the columns computed from it
_COLUMNS_OF: dict[str, tuple[str, ...]] = {
    field: tuple(name for name, (fields, _) in _COLUMNS.items() if field in fields)
    for field in _SOURCE_FIELDS
}


Flags = tuple[bool, bool, bool, bool]  # (leased, claimable and due, delayed, unique lock held)


def flags_of(job: Job, states: StateSets) -> Flags:
    """(leased, claimable and due, claimable but delayed, holds its unique lock): what the
    lock and claim columns of a row depend on (Encoder). Due means due at the moment of the
    write; a delayed row is promoted by the first claim after it is due."""
    leased = job.state in states.leased
    claimable = job.state in states.claimable
    delayed = claimable and job.available_at > job.updated_at
    return (leased, claimable and not delayed, delayed, leased or job.state in states.performed)


def job_values(job: Job, flags: Flags) -> dict[str, Any]:
    """Column values for ``job`` (without id); the flags fill the lock and claim columns."""
    return {name: encode(job, *flags) for name, (_, encode) in _COLUMNS.items()}


def _columns_fed_by_replaced_fields(old: Job, new: Job) -> set[str]:
    """Columns computed from a field that is another object in ``new`` than in ``old``:
    records are copied with ``replace``, so an untouched field is the very same object."""
    before, after = old.__dict__, new.__dict__
    return {
        name
        for field in _SOURCE_FIELDS
        if before[field] is not after[field]
        for name in _COLUMNS_OF[field]
    }


def rows_of(jobs: Sequence[Job], flags_of: Callable[[Job], Flags]) -> list[dict[str, Any]]:
    """:func:`job_values` of many jobs, in order.

    Jobs published together are mostly built alike and share their field objects (the same
    policy, tags, metadata...); a column is encoded again only when a field it is computed
    from is another object than in the previous job, or the flags differ.
    """
    rows: list[dict[str, Any]] = []
    previous: Job | None = None
    previous_flags: Flags | None = None
    for job in jobs:
        flags = flags_of(job)
        if previous is None or flags != previous_flags:
            row = job_values(job, flags)
        else:
            row = dict(rows[-1])
            for name in _columns_fed_by_replaced_fields(previous, job):
                row[name] = _COLUMNS[name][1](job, *flags)
        rows.append(row)
        previous, previous_flags = job, flags
    return rows


def changed_values(
    before: Job, after: Job, flags_before: Flags, flags_after: Flags
) -> dict[str, Any]:
    """The columns whose value differs between two versions of a job.

    Effects build the new job with ``dataclasses.replace``, so a field they did not touch is
    the very same object in both versions: only columns fed by a replaced field are encoded
    (twice, to compare), which spares the JSON of unchanged requests, errors and metadata.
    """
    changed: dict[str, Any] = {}
    for name in _columns_fed_by_replaced_fields(before, after):
        encode = _COLUMNS[name][1]
        value = encode(after, *flags_after)
        if value != encode(before, *flags_before):
            changed[name] = value
    if before.state != after.state:
        # The row may disagree with ``before``: an operator's UPDATE ... SET state = ... leaves
        # these columns as they were (a failed job set to back_to_broker kept claim_priority
        # NULL, and once requeued it was never claimed). Write what the new state implies; a
        # lock is only ever cleared this way, so no write takes a lock it did not take before.
        # A promoted row (claim_priority set by the claim, not by a write) differs from what
        # ``before`` implies as well, so both claim columns are written.
        for name in ("claim_priority", "delay_until"):
            changed.setdefault(name, _COLUMNS[name][1](after, *flags_after))
        for name in ("group_lock", "unique_lock"):
            if name not in changed and _COLUMNS[name][1](after, *flags_after) is None:
                changed[name] = None
    return changed


# Columns that depend on the state through the flags: written as changed_values writes them.
_STATE_COLUMNS = ("claim_priority", "delay_until", "group_lock", "unique_lock", "concurrency_slot")
_CLAIM_COLUMNS = ("claim_priority", "delay_until")


@functools.lru_cache(maxsize=128)
def _written_columns(fields: frozenset[str]) -> tuple[str, ...]:
    """The columns computed from ``fields``, except the state-dependent ones."""
    return tuple(
        name
        for name, (sources, _) in _COLUMNS.items()
        if name not in _STATE_COLUMNS and not fields.isdisjoint(sources)
    )


# Fields each stored in one column of their own, computed from that field alone: a
# report's plain fields (its execution record, metadata, result), which a planned write
# sends as they are (plannedfinish.py).
_FIELD_COLUMNS: dict[str, str] = {
    sources[0]: name
    for name, (sources, _) in _COLUMNS.items()
    if len(sources) == 1
    and name not in _STATE_COLUMNS
    and sum(1 for other, _ in _COLUMNS.values() if sources[0] in other) == 1
}
_NO_FLAGS = (False, False, False, False)


def field_columns(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The columns of ``fields`` (field -> value), each encoded as a job's row holds it; None
    when a field is not stored in a column of its own."""
    if not set(fields) <= _FIELD_COLUMNS.keys():
        return None
    # what the encoders read of a job: these fields only
    holder = cast(Job, types.SimpleNamespace(**fields))
    return {
        _FIELD_COLUMNS[field]: _COLUMNS[_FIELD_COLUMNS[field]][1](holder, *_NO_FLAGS)
        for field in fields
    }


def written_values(
    before: Job, after: Job, flags_before: Flags, flags_after: Flags, fields: frozenset[str]
) -> dict[str, Any]:
    """The columns a transition writes, from the fields its effects write (a compiled
    transition's ``fields``, which always hold ``state``): each encoded once, from ``after``,
    without comparing (a column written with the value it had leaves the row as it was).
    The lock and claim columns are decided as :func:`changed_values` decides them, so a write
    takes a lock only when the lock changes and clears what a new state no longer holds."""
    changed = {name: _COLUMNS[name][1](after, *flags_after) for name in _written_columns(fields)}
    state_changed = before.state != after.state
    for name in _STATE_COLUMNS:
        encode = _COLUMNS[name][1]
        value = encode(after, *flags_after)
        if state_changed and (value is None or name in _CLAIM_COLUMNS):
            changed[name] = value  # what the new state implies, as changed_values writes it
        elif value != encode(before, *flags_before):
            changed[name] = value
    return changed


@functools.lru_cache(maxsize=256)
def _policy_from_text(text: str) -> RetryPolicy:
    return RetryPolicy.from_dict(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _strings_from_text(text: str) -> tuple[str, ...]:
    """Tags and dependency lists repeat across rows; tuples of strings are safe to share."""
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _requests_from_cached_text(text: str) -> tuple[Request, ...]:
    return _requests_from_text(text)


def _requests_from_text(text: str) -> tuple[Request, ...]:
    return tuple(request_from_dict(r) for r in json.loads(text))


def _requests_of(text: str) -> tuple[Request, ...]:
    """Requests are immutable, and jobs published together often carry the same ones (the
    same call, the same payload): short texts are decoded once and the tuples shared."""
    if len(text) <= _SHARED_REQUESTS_TEXT:
        return _requests_from_cached_text(text)
    return _requests_from_text(text)


_SHARED_REQUESTS_TEXT = 512  # longer texts are decoded each time (the cache stays small)


def job_from_row(row: Mapping[Any, Any]) -> Job:
    """The job a row holds. Built without the frozen dataclass's ``__init__`` (which sets
    its 26 fields one by one through ``object.__setattr__``): a worker builds one per claim."""
    lease = None
    if row["lease_worker"] is not None:
        lease = Lease(row["lease_token"], row["lease_worker"], from_ms(row["lease_expires_at"]))
    metadata = row["metadata_json"]
    job_id = row["id"]
    values = {
        "id": str(job_id),
        "sequence": int(job_id),
        "queue": row["queue"],
        "priority": row["priority"],
        "state": row["state"],
        "available_at": from_ms(row["available_at"]),
        "created_at": from_ms(row["created_at"]),
        "updated_at": from_ms(row["updated_at"]),
        "finished_at": from_ms(row["finished_at"]) if row["finished_at"] is not None else None,
        "retry_policy": _policy_from_text(row["retry_policy"]),
        "requests": _requests_of(row["requests"]),
        "attempts": row["attempts"],
        "serial_group": row["serial_group"],
        "identifier": row["identifier"],
        "unique": bool(row["is_unique"]),
        "recurring_interval_ms": row["recurring_interval_ms"],
        "depends_on": _strings_from_text(row["depends_on"]),
        "batch_id": str(row["batch_id"]) if row["batch_id"] is not None else None,
        "tags": _strings_from_text(row["tags"]),
        "metadata": {} if metadata == "{}" else json.loads(metadata),
        "lease_token": row["lease_token"],
        "lease": lease,
        "last_error": error_from_dict(json.loads(row["last_error"])) if row["last_error"] else None,
        "errors": tuple(
            e for e in (error_from_dict(x) for x in json.loads(row["errors"])) if e is not None
        )
        if row["errors"] != "[]"
        else (),
        "execution": json.loads(row["execution"]) if row["execution"] else None,
        "timeout_ms": row["timeout_ms"],
        "result": json.loads(row["result"]) if row["result"] is not None else None,
        "result_ttl_ms": row["result_ttl_ms"],
        "progress": _progress_from_text(row["progress"]),
        "concurrency_key": row["concurrency_key"],
        "concurrency_limit": row["concurrency_limit"],
        "concurrency_slot": row["concurrency_slot"],
        "rate_key": row["rate_key"],
        "rate_limit": row["rate_limit"],
        "rate_period_ms": row["rate_period_ms"],
        "cancel_requested_at": (
            from_ms(row["cancel_requested_at"]) if row["cancel_requested_at"] is not None else None
        ),
        "uniqueness": json.loads(row["uniqueness"]) if row["uniqueness"] else None,
        "unique_key": row["unique_key"],
        "conflict": None,
    }
    job: Job = object.__new__(Job)
    job.__dict__.update(values)
    return job
