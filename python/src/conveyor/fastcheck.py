"""A fast, strictly-stronger pre-check of publish requests, with limits read from the schemas.

Validating every publish with a JSON Schema validator costs about a millisecond; this check
costs microseconds. It only accepts what the schema accepts (a property test compares
them), and anything it doubts goes to the full schema validator, which words the error.
Payloads and metadata are not re-checked here: the codec already refused what the schema
forbids in them (U+0000, non-finite numbers, non-string keys).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import schemacheck
from .schemacheck import ecma_pattern
from .specfiles import load_json


@dataclass(frozen=True)
class Limits:
    queue: re.Pattern[str]
    request_type: re.Pattern[str]
    label: re.Pattern[str]
    job_id: re.Pattern[str]
    timestamp: re.Pattern[str]
    priority_min: int
    priority_max: int
    max_requests: int
    max_tags: int
    max_dependencies: int
    min_interval_ms: int
    known_keys: frozenset[str]
    max_timeout_ms: int
    max_result_ttl_ms: int
    max_concurrency_limit: int


def _pattern(schema: dict[str, Any]) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262 regexes; those used here are anchored (^...$).
    return ecma_pattern(schema["pattern"])


@functools.cache
def limits() -> Limits:
    common = load_json("schemas/common.schema.json")["$defs"]
    publish = load_json("schemas/publish.schema.json")
    properties = publish["properties"]
    return Limits(
        queue=_pattern(common["queue"]),
        request_type=_pattern(common["request_type"]),
        label=_pattern(common["label"]),
        job_id=_pattern(common["job_id"]),
        timestamp=_pattern(common["timestamp"]),
        priority_min=common["priority"]["minimum"],
        priority_max=common["priority"]["maximum"],
        max_requests=properties["requests"]["maxItems"],
        max_tags=properties["tags"]["maxItems"],
        max_dependencies=properties["depends_on"]["maxItems"],
        min_interval_ms=publish["$defs"]["recurring"]["properties"]["interval_ms"]["minimum"],
        known_keys=frozenset(properties),
        max_timeout_ms=publish["$defs"]["timeout_ms"]["maximum"],
        max_result_ttl_ms=publish["$defs"]["result_ttl_ms"]["maximum"],
        max_concurrency_limit=publish["$defs"]["concurrency_limit"]["maximum"],
    )


@functools.cache
def _policy_is_valid(items: tuple[tuple[str, Any], ...]) -> bool:
    return schemacheck.validator("retry-policy").is_valid(dict(items))


def _policy_ok(value: Any) -> bool:
    """Validate each distinct policy once (most jobs share a handful of policies)."""
    if not isinstance(value, dict):
        return False
    try:
        return _policy_is_valid(tuple(sorted(value.items())))
    except TypeError:  # an unhashable value cannot be a valid policy field
        return False


def _labels_ok(values: Any, pattern: re.Pattern[str], most: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) <= most
        and all(isinstance(v, str) and pattern.fullmatch(v) for v in values)
        and len(set(values)) == len(values)  # hashable: every item is a string
    )


def surely_valid(document: dict[str, Any]) -> bool:
    """True only if ``document`` (codec-encoded payloads) is valid against publish.schema.json."""
    lim = limits()
    if not set(document) <= lim.known_keys:
        return False
    requests = document.get("requests")
    if not isinstance(requests, list) or not 1 <= len(requests) <= lim.max_requests:
        return False
    for request in requests:
        if not isinstance(request, dict) or not set(request) <= {"type", "payload"}:
            return False
        kind = request.get("type")
        if not isinstance(kind, str) or not lim.request_type.fullmatch(kind):
            return False
    checks: tuple[tuple[str, Callable[[Any], Any]], ...] = (
        ("queue", lambda v: isinstance(v, str) and lim.queue.fullmatch(v)),
        (
            "priority",
            lambda v: type(v) is int and lim.priority_min <= v <= lim.priority_max,
        ),
        ("available_at", lambda v: isinstance(v, str) and lim.timestamp.fullmatch(v)),
        ("delay_ms", lambda v: type(v) is int and v >= 0),
        ("serial_group", lambda v: isinstance(v, str) and lim.label.fullmatch(v)),
        ("identifier", lambda v: isinstance(v, str) and lim.label.fullmatch(v)),
        ("unique", lambda v: isinstance(v, bool)),
        ("batch_id", lambda v: isinstance(v, str) and lim.job_id.fullmatch(v)),
        ("tags", lambda v: _labels_ok(v, lim.label, lim.max_tags)),
        ("depends_on", lambda v: _labels_ok(v, lim.job_id, lim.max_dependencies)),
        ("metadata", lambda v: isinstance(v, dict)),
        (
            "recurring",
            lambda v: (
                isinstance(v, dict)
                and set(v) == {"interval_ms"}
                and type(v["interval_ms"]) is int
                and v["interval_ms"] >= lim.min_interval_ms
            ),
        ),
        ("retry_policy", _policy_ok),
        ("timeout_ms", lambda v: v is None or (type(v) is int and 1 <= v <= lim.max_timeout_ms)),
        ("concurrency_key", lambda v: v is None or (isinstance(v, str) and lim.label.fullmatch(v))),
        (
            "concurrency_limit",
            lambda v: v is None or (type(v) is int and 1 <= v <= lim.max_concurrency_limit),
        ),
        ("rate_key", lambda v: v is None or (isinstance(v, str) and lim.label.fullmatch(v))),
        ("rate_limit", lambda v: v is None or (type(v) is int and 1 <= v <= 1_000_000)),
        ("rate_period_ms", lambda v: v is None or (type(v) is int and 1 <= v <= 2_678_400_000)),
        (
            "result_ttl_ms",
            lambda v: v is None or (type(v) is int and 1 <= v <= lim.max_result_ttl_ms),
        ),
        ("uniqueness", lambda v: v is None),  # unique keys: the schema checks them
    )
    for key, check in checks:
        if key in document and not check(document[key]):
            return False
    if document.get("unique") is True and "identifier" not in document:
        return False
    return not ("available_at" in document and "delay_ms" in document)
