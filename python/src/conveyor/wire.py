"""Publish requests as documents (spec/schemas/publish.schema.json), exactly as they travel.

A publish request that arrives as JSON (the HTTP binding, the conformance harness) carries its
payloads and metadata already in the wire form of the payload codec (spec.md#codec): they are
checked as JSON and stored as given, never decoded into Python values and encoded again, so a
typed value such as ``{"$bytes": ...}`` is stored exactly as the client wrote it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import codec
from .clock import parse_timestamp
from .errors import InvalidPayload, InvalidRequest
from .model import Job
from .publishing import Call, PublishOptions, validate_publish_request
from .uniqueness import Unique, rekeyed
from .uniqueness import check_request as check_unique_request
from .uniqueness import resolve as resolve_uniqueness

if TYPE_CHECKING:
    from .app import Conveyor


def _check_typed_values(value: Any, path: str) -> None:
    """CODEC-004 for a payload that arrives already encoded as JSON: a typed value must have
    the stated form. (:func:`codec.check_json` checks its strings and depth first.)
    """
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_typed_values(item, f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        ((tag, raw),) = value.items()
        if tag in codec.TAGS:
            if not isinstance(raw, str):
                raise InvalidPayload(f"{path}: the typed value {tag} needs a string")
            try:
                _parse_typed(tag, raw)
            except (ValueError, TypeError) as error:
                raise InvalidPayload(f"{path}: {raw!r} is not a valid {tag}: {error}") from None
            return
    for key, item in value.items():
        _check_typed_values(item, f"{path}.{key}")


# The forms of the codec's table (spec.md#codec), exactly: Python's parsers alone accept more
# (basic ISO 8601 forms, digit separators, "Infinity").
TYPED_FORMS = {
    "$bytes": re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"),
    "$datetime": re.compile(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
        r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
    ),
    "$date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "$decimal": re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"),
    "$uuid": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
}


def _parse_typed(tag: str, raw: str) -> None:
    if TYPED_FORMS[tag].fullmatch(raw) is None:
        raise ValueError(f"not of the form spec.md#codec states for {tag}")
    if tag == "$bytes":
        base64.b64decode(raw, validate=True)
    elif tag == "$datetime":
        # A real instant: months, days, hours and offsets in range.
        datetime.fromisoformat(re.sub(r"\.[0-9]+", "", raw.upper()).replace("Z", "+00:00"))
    elif tag == "$date":
        date.fromisoformat(raw)


def ms(value: Any) -> timedelta:
    """A duration in integer milliseconds, as documents write them."""
    return timedelta(milliseconds=int(value))


def publish_options(document: dict[str, Any]) -> tuple[list[Call], PublishOptions, list[Any], Any]:
    """A publish request as the library's calls and options, plus its raw payloads."""
    if not isinstance(document, dict):
        raise InvalidRequest("a publish request is a JSON object (schemas/publish.schema.json)")
    validate_publish_request(document)
    check_unique_request(document)
    payloads = [request.get("payload") for request in document["requests"]]
    for index, payload in enumerate(payloads):
        codec.check_json(payload, f"requests[{index}].payload")
        _check_typed_values(payload, f"requests[{index}].payload")
        codec.check_size(payload, f"requests[{index}].payload")
    metadata = document.get("metadata")
    if metadata is not None:
        codec.check_json(metadata, "metadata")
        _check_typed_values(metadata, "metadata")
    calls = [Call(request["type"], None) for request in document["requests"]]
    options = PublishOptions(
        queue=document.get("queue"),
        priority=document.get("priority"),
        available_at=(
            parse_timestamp(document["available_at"]) if "available_at" in document else None
        ),
        delay=ms(document["delay_ms"]) if "delay_ms" in document else None,
        serial_group=document.get("serial_group"),
        identifier=document.get("identifier"),
        unique=_unique_option(document),
        recurring=(ms(document["recurring"]["interval_ms"]) if document.get("recurring") else None),
        depends_on=tuple(document.get("depends_on", ())),
        batch_id=document.get("batch_id"),
        retry=document.get("retry_policy"),
        tags=tuple(document.get("tags", ())),
        timeout=ms(document["timeout_ms"]) if document.get("timeout_ms") is not None else None,
        result_ttl=(
            ms(document["result_ttl_ms"]) if document.get("result_ttl_ms") is not None else None
        ),
        concurrency_key=document.get("concurrency_key"),
        concurrency_limit=document.get("concurrency_limit"),
        rate_key=document.get("rate_key"),
        rate_limit=document.get("rate_limit"),
        rate_period=(
            ms(document["rate_period_ms"]) if document.get("rate_period_ms") is not None else None
        ),
    )
    return calls, options, payloads, metadata


def _unique_option(document: dict[str, Any]) -> bool | Unique:
    """Unique mode, or else the unique key of ``uniqueness``; a request with both gets its
    uniqueness from :func:`build_job`."""
    member = document.get("uniqueness")
    if document.get("unique") or member is None:
        return bool(document.get("unique", False))
    return Unique.from_member(member)


def build_job(app: Conveyor, document: dict[str, Any]) -> Job:
    """The job a publish request describes, built by ``app`` at its ``now`` and not yet
    stored, with its payloads and metadata as the document wrote them."""
    calls, options, payloads, metadata = publish_options(document)
    job = app.factory.build(calls, options, app.now())
    requests = tuple(
        replace(request, payload=payload)
        for request, payload in zip(job.requests, payloads, strict=True)
    )
    job = replace(job, requests=requests, metadata=metadata if metadata is not None else {})
    if document.get("unique") and document.get("uniqueness") is not None:
        job = replace(job, uniqueness=resolve_uniqueness(document["uniqueness"]))
    return rekeyed(job)  # of the payloads as given (UKEY-002)


def publish_request(app: Conveyor, document: dict[str, Any]) -> Job:
    """Validate and store one publish request (JOB-002); the stored job."""
    return app._store_jobs([build_job(app, document)])[0]
