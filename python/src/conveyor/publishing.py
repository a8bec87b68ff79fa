"""Turning publish calls into validated jobs, before anything touches the store."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import codec, schemacheck
from .clock import duration_ms, format_timestamp, truncate_ms
from .errors import ConfigurationError, InvalidPayload, InvalidRequest, PriorityNotAllowed
from .fastcheck import surely_valid
from .handlers import HandlerRegistry
from .model import Job, Request
from .retry import RetryPolicy, resolve


@dataclass(frozen=True)
class Call:
    """One request of a job: a handler type and its payload."""

    type: str
    payload: Any = None


@dataclass(frozen=True)
class PublishOptions:
    queue: str | None = None
    priority: int | None = None
    available_at: datetime | None = None
    delay: timedelta | float | None = None
    serial_group: str | None = None
    identifier: str | None = None
    unique: bool = False
    recurring: timedelta | float | None = None
    depends_on: Sequence[str] = ()
    batch_id: str | None = None
    retry: str | RetryPolicy | dict[str, Any] | None = None
    tags: Sequence[str] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=256)
def _policy_document(policy: RetryPolicy) -> dict[str, Any]:
    """A policy's publish-request form, built once per policy (the validator only reads it)."""
    return policy.to_dict()


def _ms(value: timedelta | float) -> int:
    return duration_ms(value)


def validate_publish_request(document: dict[str, Any]) -> None:
    """Raise InvalidPayload / InvalidRequest naming the first problem the schema finds."""
    if surely_valid(document):
        return
    errors = sorted(
        schemacheck.validator("publish").iter_errors(document), key=lambda e: list(e.path)
    )
    if not errors:
        return
    error = min(errors, key=lambda e: len(list(e.path)))
    leaf = error
    while leaf.context:
        leaf = min(leaf.context, key=lambda e: len(list(e.path)))
    location = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    message = f"publish request is invalid at {location}: {leaf.message}"
    if "payload" in error.absolute_path:
        raise InvalidPayload(message)
    raise InvalidRequest(message + " (see spec/schemas/publish.schema.json)")


def _check_labels(document: dict[str, Any]) -> None:
    """LIMIT-007 for the labels, whose schema pattern lets lone surrogates through."""
    for name in ("serial_group", "identifier"):
        if isinstance(document.get(name), str):
            codec.check_text(document[name], name, InvalidRequest)
    for index, tag in enumerate(document["tags"]):
        if isinstance(tag, str):
            codec.check_text(tag, f"tags[{index}]", InvalidRequest)


class JobFactory:
    """Builds jobs from calls, filling the handler's defaults."""

    def __init__(
        self,
        handlers: HandlerRegistry,
        initial_job_state: str,
        initial_request_state: str,
        allowed_priorities: Collection[int] | None = None,
    ) -> None:
        self.handlers = handlers
        self.initial_job_state = initial_job_state
        self.initial_request_state = initial_request_state
        self.allowed_priorities = (
            frozenset(allowed_priorities) if allowed_priorities is not None else None
        )

    def build(self, calls: Sequence[Call], options: PublishOptions, now: datetime) -> Job:
        # ERR-001: schema and limit violations are reported before an unknown type or a
        # refused priority, so the handler's defaults stand in only once its type is known.
        if not calls:
            raise InvalidRequest("a job needs at least one request")
        payloads = [
            codec.encode(call.payload, f"requests[{index}].payload")
            for index, call in enumerate(calls)
        ]
        for index, payload in enumerate(payloads):
            codec.check_size(payload, f"requests[{index}].payload")
        # An unknown type is refused further down; until then neutral defaults stand in.
        first = self.handlers.get(calls[0].type) if calls[0].type in self.handlers else None
        try:
            if options.retry is not None:
                policy = resolve(options.retry)
            else:
                policy = first.retry_policy if first else resolve(None)
        except ConfigurationError as error:  # JOB-003: an unknown preset name is refused
            raise InvalidRequest(str(error)) from None
        queue = options.queue if options.queue is not None else first.queue if first else "default"
        priority = (
            options.priority if options.priority is not None else first.priority if first else 0
        )
        if options.available_at is not None and options.delay is not None:
            raise InvalidRequest("pass available_at or delay, not both")
        if options.available_at is not None and options.available_at.tzinfo is None:
            raise InvalidRequest("available_at must be timezone-aware (e.g. datetime.now(UTC))")
        available_at = options.available_at or now
        if options.delay is not None:
            if _ms(options.delay) < 0:
                raise InvalidRequest(
                    f"delay is negative ({options.delay!r}); pass a delay of 0 or more (JOB-004)"
                )
            available_at = now + timedelta(milliseconds=_ms(options.delay))
        document: dict[str, Any] = {
            "requests": [
                {"type": call.type, "payload": payload}
                for call, payload in zip(calls, payloads, strict=True)
            ],
            "queue": queue,
            "priority": priority,
            "available_at": format_timestamp(available_at),
            "unique": options.unique,
            "depends_on": list(options.depends_on),
            "retry_policy": _policy_document(policy),
            "tags": list(options.tags),
            "metadata": codec.encode(options.metadata, "metadata"),
        }
        for name in ("serial_group", "identifier", "batch_id"):
            if getattr(options, name) is not None:
                document[name] = getattr(options, name)
        if options.recurring is not None:
            document["recurring"] = {"interval_ms": _ms(options.recurring)}
        _check_labels(document)
        validate_publish_request(document)
        if options.unique and options.recurring is not None:
            raise InvalidRequest("a job cannot be both unique and recurring (spec UNIQ rules)")
        for call in calls:
            self.handlers.get(call.type)  # UnknownType names the registered ones
        if self.allowed_priorities is not None and priority not in self.allowed_priorities:
            raise PriorityNotAllowed(
                f"priority {priority} is not one of the configured priorities "
                f"{sorted(self.allowed_priorities)}; use one of them or configure it"
            )
        return Job(
            id="",
            sequence=0,
            queue=queue,
            priority=priority,
            state=self.initial_job_state,
            available_at=truncate_ms(available_at.astimezone(UTC)),
            created_at=now,
            updated_at=now,
            retry_policy=policy,
            requests=tuple(
                Request(index=i, type=call.type, payload=payload, state=self.initial_request_state)
                for i, (call, payload) in enumerate(zip(calls, payloads, strict=True))
            ),
            serial_group=options.serial_group,
            identifier=options.identifier,
            unique=options.unique,
            recurring_interval_ms=document.get("recurring", {}).get("interval_ms"),
            depends_on=tuple(options.depends_on),
            batch_id=options.batch_id,
            tags=tuple(options.tags),
            metadata=document["metadata"],
        )
