"""Jobs to and from the spec's JSON shape (schemas/job.schema.json)."""

from __future__ import annotations

from typing import Any

from .clock import parse_timestamp
from .model import Job, JobError, Lease, Request
from .retry import RetryPolicy


def error_from_dict(data: dict[str, Any] | None) -> JobError | None:
    if data is None:
        return None
    return JobError(
        kind=data["kind"],
        message=data["message"],
        type=data.get("type"),
        attempt=data.get("attempt", 0),
        request=data.get("request"),
        at=parse_timestamp(data["at"]) if data.get("at") else None,
        traceback=data.get("traceback"),
    )


def request_from_dict(data: dict[str, Any]) -> Request:
    return Request(
        index=data["index"],
        type=data["type"],
        payload=data.get("payload"),
        state=data["state"],
        attempts=data.get("attempts", 0),
        error=error_from_dict(data.get("error")),
    )


def job_from_dict(data: dict[str, Any]) -> Job:
    lease = data.get("lease")
    recurring = data.get("recurring")
    return Job(
        id=str(data.get("id", "")),
        sequence=int(data.get("sequence", 0)),
        queue=data["queue"],
        priority=data["priority"],
        state=data["state"],
        available_at=parse_timestamp(data["available_at"]),
        created_at=parse_timestamp(data["created_at"]),
        updated_at=parse_timestamp(data.get("updated_at") or data["created_at"]),
        finished_at=parse_timestamp(data["finished_at"]) if data.get("finished_at") else None,
        retry_policy=RetryPolicy.from_dict(data["retry_policy"]),
        requests=tuple(request_from_dict(r) for r in data["requests"]),
        attempts=data.get("attempts", 0),
        serial_group=data.get("serial_group"),
        identifier=data.get("identifier"),
        unique=bool(data.get("unique", False)),
        recurring_interval_ms=recurring["interval_ms"] if recurring else None,
        depends_on=tuple(data.get("depends_on", ())),
        batch_id=data.get("batch_id"),
        tags=tuple(data.get("tags", ())),
        metadata=dict(data.get("metadata") or {}),
        lease_token=data.get("lease_token", 0),
        lease=(
            Lease(lease["token"], lease["worker_id"], parse_timestamp(lease["expires_at"]))
            if lease
            else None
        ),
        last_error=error_from_dict(data.get("last_error")),
        errors=tuple(e for e in (error_from_dict(x) for x in data.get("errors", ())) if e),
        execution=data.get("execution"),
    )
