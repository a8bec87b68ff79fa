"""Rows of the jobs table to and from :class:`~conveyor.model.Job`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...clock import from_ms, to_ms
from ...model import Job, JobError, Lease
from ...retry import RetryPolicy
from ...serialization import error_from_dict, request_from_dict


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _error(error: JobError | None) -> str | None:
    return _dumps(error.to_dict()) if error else None


def job_values(job: Job, leased: bool, claimable: bool) -> dict[str, Any]:
    """Column values for ``job`` (without id); ``leased`` fills the lock columns."""
    return {
        "claim_priority": job.priority if claimable else None,
        "queue": job.queue,
        "priority": job.priority,
        "state": job.state,
        "available_at": to_ms(job.available_at),
        "created_at": to_ms(job.created_at),
        "updated_at": to_ms(job.updated_at),
        "finished_at": to_ms(job.finished_at) if job.finished_at else None,
        "attempts": job.attempts,
        "retry_policy": _dumps(job.retry_policy.to_dict()),
        "serial_group": job.serial_group,
        "identifier": job.identifier,
        "is_unique": job.unique,
        "recurring_interval_ms": job.recurring_interval_ms,
        "batch_id": int(job.batch_id) if job.batch_id else None,
        "depends_on": _dumps(list(job.depends_on)),
        "tags": _dumps(list(job.tags)),
        "metadata_json": _dumps(job.metadata),
        "requests": _dumps([request.to_dict() for request in job.requests]),
        "lease_token": job.lease_token,
        "lease_worker": job.lease.worker_id if job.lease else None,
        "lease_expires_at": to_ms(job.lease.expires_at) if job.lease else None,
        "last_error": _error(job.last_error),
        "errors": _dumps([error.to_dict() for error in job.errors]),
        "execution": _dumps(job.execution) if job.execution is not None else None,
        "group_lock": job.serial_group if leased else None,
        "unique_lock": job.identifier if leased and job.unique else None,
    }


def job_from_row(row: Mapping[Any, Any]) -> Job:
    lease = None
    if row["lease_worker"] is not None:
        lease = Lease(row["lease_token"], row["lease_worker"], from_ms(row["lease_expires_at"]))
    return Job(
        id=str(row["id"]),
        sequence=int(row["id"]),
        queue=row["queue"],
        priority=row["priority"],
        state=row["state"],
        available_at=from_ms(row["available_at"]),
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
        finished_at=from_ms(row["finished_at"]) if row["finished_at"] is not None else None,
        retry_policy=RetryPolicy.from_dict(json.loads(row["retry_policy"])),
        requests=tuple(request_from_dict(r) for r in json.loads(row["requests"])),
        attempts=row["attempts"],
        serial_group=row["serial_group"],
        identifier=row["identifier"],
        unique=bool(row["is_unique"]),
        recurring_interval_ms=row["recurring_interval_ms"],
        depends_on=tuple(json.loads(row["depends_on"])),
        batch_id=str(row["batch_id"]) if row["batch_id"] is not None else None,
        tags=tuple(json.loads(row["tags"])),
        metadata=json.loads(row["metadata_json"]),
        lease_token=row["lease_token"],
        lease=lease,
        last_error=error_from_dict(json.loads(row["last_error"])) if row["last_error"] else None,
        errors=tuple(
            e for e in (error_from_dict(x) for x in json.loads(row["errors"])) if e is not None
        ),
        execution=json.loads(row["execution"]) if row["execution"] else None,
    )
