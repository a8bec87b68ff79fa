"""Turning publish calls into validated jobs, before anything touches the store."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import codec, schemacheck
from .clock import duration_ms, format_timestamp, truncate_ms
from .errors import ConfigurationError, InvalidPayload, InvalidRequest, PriorityNotAllowed
from .fastcheck import surely_valid
from .handlers import Handler, HandlerRegistry
from .model import Job, Request, replace
from .retry import RetryPolicy, resolve
from .uniqueness import Unique, as_unique, rekeyed, unique_key
from .uniqueness import resolve as resolve_uniqueness


@dataclass(frozen=True)
class Call:
    """One request of a job: a handler type and its payload."""

    type: str
    payload: Any = None


@dataclass(frozen=True)
class PublishOptions:
    """The options of a publish call (docs/guide/configuration.md#publish-options).

    ``delay`` and ``recurring`` are a timedelta or seconds; ``tags`` and ``depends_on`` a
    list of strings, or one string for a single tag or dependency.
    """

    queue: str | None = None
    priority: int | None = None
    available_at: datetime | None = None
    delay: timedelta | float | None = None
    serial_group: str | None = None
    identifier: str | None = None
    # True: unique mode (spec.md#unique); a Unique or a mapping of its fields: a unique key
    # (spec.md#unique-keys); None: the handler's unique key, if any.
    unique: bool | Unique | Mapping[str, Any] | None = None
    recurring: timedelta | float | None = None
    depends_on: Sequence[str] | str = ()
    batch_id: str | None = None
    retry: str | RetryPolicy | dict[str, Any] | None = None
    tags: Sequence[str] | str = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    # How long one attempt may run (a timedelta or seconds); None: the handler's timeout.
    timeout: timedelta | float | None = None
    # How long the result stays readable after the job finished (a timedelta or seconds);
    # None: the handler's, or as long as the job is stored (RESULT-003).
    result_ttl: timedelta | float | None = None
    # At most concurrency_limit jobs of concurrency_key run at once, across every worker
    # (CONC-001, CONC-002); None: the handler's.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    # At most rate_limit jobs of rate_key start per rate_period (a timedelta or seconds),
    # across every worker (RATE-001, RATE-002); None: the handler's.
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period: timedelta | float | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> PublishOptions:
        """Options from keyword arguments; an unknown name is refused, naming the known ones."""
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise InvalidRequest(
                f"unknown publish option(s) {', '.join(map(repr, unknown))}; the options are "
                f"{', '.join(sorted(_OPTION_NAMES | {'batch', 'connection'}))}"
            )
        return cls(**options)


_OPTION_NAMES = frozenset(PublishOptions.__dataclass_fields__)


@functools.lru_cache(maxsize=256)
def _cached_policy_document(policy: RetryPolicy) -> dict[str, Any]:
    """A policy's publish-request form, built once per policy (the validator only reads it)."""
    return policy.to_dict()


def _policy_document(policy: RetryPolicy) -> dict[str, Any]:
    try:
        return _cached_policy_document(policy)
    except TypeError:  # a field holds an unhashable value: the schema check names it
        return policy.to_dict()


# The latest instant a spec timestamp can hold (four-digit years).
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _duration_ms(name: str, value: Any, now: datetime) -> int:
    """A duration option (timedelta or seconds) in whole milliseconds that still leaves
    ``now`` plus it a timestamp; InvalidRequest for anything else."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise InvalidRequest(
            f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{name} is {value!r}; pass a finite number of seconds or a timedelta")
    try:
        ms = value * 1000 if isinstance(value, int) else duration_ms(value)
    except OverflowError:
        ms = _TOO_LONG
    if ms < 0:
        raise InvalidRequest(f"{name} is negative ({value!r}); pass 0 or more (JOB-004)")
    if ms > (LATEST - now) // timedelta(milliseconds=1):
        raise InvalidRequest(
            f"{name} of {value!r} reaches beyond {format_timestamp(LATEST)}, the latest instant "
            "a timestamp holds; pass a shorter one"
        )
    return int(ms)


_TOO_LONG = 2**63  # longer than any timedelta: refused by the bound check
LONGEST_TIMEOUT = timedelta(days=7)  # TIMEOUT-001


def bounded_ms(name: str, value: Any, longest: timedelta, rule: str, otherwise: str = "") -> int:
    """A duration (timedelta or seconds) in whole milliseconds, from 1 ms to ``longest``;
    ``rule`` names the requirement that bounds it, ``otherwise`` what else may be passed."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise InvalidRequest(
            f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{name} is {value!r}; pass a finite number of seconds or a timedelta")
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not 0.001 <= seconds <= longest.total_seconds():
        raise InvalidRequest(
            f"{name} of {value!r} is outside 1 ms to {longest.days} days ({rule}); pass a "
            f"duration within them{otherwise}"
        )
    return round(seconds * 1000)


def timeout_ms(name: str, value: Any) -> int:
    """A timeout (timedelta or seconds) in whole milliseconds, from 1 ms to 7 days."""
    return bounded_ms(name, value, LONGEST_TIMEOUT, "TIMEOUT-001", ", or None for no limit")


LONGEST_RESULT_TTL = timedelta(days=366)  # RESULT-003


def result_ttl_ms(name: str, value: Any) -> int:
    """A result's time to live (timedelta or seconds) in whole milliseconds, 1 ms to 366 days."""
    return bounded_ms(
        name,
        value,
        LONGEST_RESULT_TTL,
        "RESULT-003",
        ", or None to keep the result as long as the job",
    )


def handler_result_ttl_ms(handler_type: str, value: Any) -> int:
    """A handler's default result time to live; a bad one is a configuration error."""
    try:
        return result_ttl_ms(f"the result_ttl of handler {handler_type!r}", value)
    except InvalidRequest as error:
        raise ConfigurationError(str(error)) from None


def _concurrency(
    options: PublishOptions, handler: Handler | None, payload: Any
) -> tuple[str | None, int | None]:
    """The job's concurrency key and limit (CONC-001): the publish options', else the
    handler's, whose key may be computed from the payload (``lambda p: f"customer:{p['id']}"``)."""
    key: Any = options.concurrency_key
    limit = options.concurrency_limit
    if key is None and limit is None and handler is not None:
        key, limit = handler.concurrency_key, handler.concurrency_limit
        if callable(key):
            try:
                key = key(payload)
            except Exception as error:
                raise InvalidRequest(
                    f"the concurrency key function of handler {handler.type!r} failed on this "
                    f"payload: {error!r}; make it accept every payload the handler takes"
                ) from None
    if (key is None) != (limit is None):
        raise InvalidRequest(
            "concurrency_key and concurrency_limit go together (CONC-001): give both, or neither"
        )
    return key, limit


def _rate(
    options: PublishOptions, handler: Handler | None, payload: Any
) -> tuple[str, int, int] | None:
    """The job's rate key, limit and period in ms (RATE-001): the publish options', else the
    handler's, whose key may be computed from the payload."""
    key: Any = options.rate_key
    limit, period = options.rate_limit, options.rate_period
    if key is None and limit is None and period is None and handler is not None:
        key, limit = handler.rate_key, handler.rate_limit
        period = None if handler.rate_period_ms is None else handler.rate_period_ms / 1000
        if callable(key):
            try:
                key = key(payload)
            except Exception as error:
                raise InvalidRequest(
                    f"the rate key function of handler {handler.type!r} failed on this "
                    f"payload: {error!r}; make it accept every payload the handler takes"
                ) from None
    given = [value is not None for value in (key, limit, period)]
    if not any(given):
        return None
    if not all(given):
        raise InvalidRequest(
            "rate_key, rate_limit and rate_period go together (RATE-001): give all three, or none"
        )
    return key, limit, rate_period_ms("rate_period", period)  # type: ignore[return-value]


LONGEST_RATE_PERIOD = timedelta(days=31)  # RATE-001


def _uniqueness(options: PublishOptions, handler: Handler | None) -> Unique | None:
    """The unique key the job is published with (UKEY-001): the publish option's, or the
    handler's when the option is not given."""
    given = options.unique
    if given is None:
        return handler.uniqueness if handler is not None else None
    if isinstance(given, bool):
        return None
    unique = as_unique(given)
    if unique is None:
        raise InvalidRequest(
            f"unique must be True (unique mode), a Unique or a mapping of its fields, "
            f"not {type(given).__name__}"
        )
    return unique


def _unique_members(uniqueness: Unique, options: PublishOptions) -> dict[str, Any]:
    """The publish request's ``uniqueness``; with ``keep``, also unique mode (UKEY-008)."""
    members: dict[str, Any] = {"uniqueness": uniqueness.document()}
    if uniqueness.conflict == "keep":
        if options.identifier is None:
            raise InvalidRequest(
                "unique conflict 'keep' runs the jobs in unique mode, which needs an "
                "identifier: give identifier="
            )
        members["unique"] = True
    return members


def rate_period_ms(name: str, value: Any) -> int:
    """A rate window's length (timedelta or seconds) in whole milliseconds, 1 ms to 31 days."""
    return bounded_ms(name, value, LONGEST_RATE_PERIOD, "RATE-001")


def handler_rate_period_ms(handler_type: str, value: Any) -> int:
    """A handler's rate period; a bad one is a configuration error, found at startup."""
    try:
        return rate_period_ms(f"the rate_period of handler {handler_type!r}", value)
    except InvalidRequest as error:
        raise ConfigurationError(str(error)) from None


def handler_timeout_ms(handler_type: str, value: Any) -> int:
    """A handler's default timeout; a bad one is a configuration error, found at startup."""
    try:
        return timeout_ms(f"the timeout of handler {handler_type!r}", value)
    except InvalidRequest as error:
        raise ConfigurationError(str(error)) from None


def _available_at(options: PublishOptions, now: datetime) -> datetime:
    """JOB-004: the given instant (aware, in UTC), or now plus the delay, or now."""
    moment = options.available_at
    if moment is not None and options.delay is not None:
        raise InvalidRequest("pass available_at or delay, not both (JOB-004)")
    if options.delay is not None:
        return now + timedelta(milliseconds=_duration_ms("delay", options.delay, now))
    if moment is None:
        return now
    if not isinstance(moment, datetime):
        raise InvalidRequest(
            f"available_at must be a timezone-aware datetime, not {type(moment).__name__}; "
            "parse text first (datetime.fromisoformat) or pass delay= instead"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRequest("available_at must be timezone-aware (e.g. datetime.now(UTC))")
    try:
        return truncate_ms(moment.astimezone(UTC))
    except OverflowError:
        raise InvalidRequest(
            f"available_at {moment!r} is outside the years 1 to 9999 in UTC; pass an instant "
            "within them"
        ) from None


def _labels(name: str, value: Any) -> tuple[Any, ...]:
    """``tags`` or ``depends_on`` as a tuple. A bare string is one label (``tags="vip"`` is
    the tag ``vip``, never three one-letter tags); the items are checked by the schema."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping | bytes | bytearray) or not isinstance(value, Iterable):
        raise InvalidRequest(
            f"{name} must be a list of strings (or one string), not {type(value).__name__}"
        )
    labels = tuple(value)
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise InvalidRequest(
                f"{name}[{index}] is a {type(label).__name__}; {name} holds strings"
                + (" (the ids publish returned)" if name == "depends_on" else "")
            )
    return labels


def _calls(calls: Any) -> list[Call]:
    if isinstance(calls, Call):
        calls = [calls]
    if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Iterable):
        raise InvalidRequest(f"publish_job takes a list of Call, not {type(calls).__name__}")
    listed = list(calls)
    if not listed:
        raise InvalidRequest("a job needs at least one request")
    for index, call in enumerate(listed):
        if not isinstance(call, Call):
            raise InvalidRequest(
                f"request {index} is a {type(call).__name__}; publish_job takes "
                "Call(type, payload) items"
            )
    return listed


def _policy(given: Any, handler_default: RetryPolicy | None) -> RetryPolicy:
    """JOB-003: the given policy (a preset name, a RetryPolicy or its dict), else the
    handler's, else the default preset."""
    if given is None:
        return handler_default or resolve(None)
    if not isinstance(given, str | RetryPolicy | dict):
        raise InvalidRequest(
            f"retry must be a preset name, a RetryPolicy or a dict of its fields, not "
            f"{type(given).__name__}"
        )
    try:
        return resolve(given)
    except ConfigurationError as error:  # JOB-003: an unknown preset name is refused
        raise InvalidRequest(str(error)) from None


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


# No publish option but the payload and metadata (checked by the codec) nests this deep; the
# bound keeps a deeply nested value from exhausting the interpreter's recursion limit.
OPTION_DEPTH_LIMIT = 16


def _check_plain(value: Any, path: str, depth: int = 0) -> None:
    """Options reach the schema validator as plain JSON values only: it compares and sorts
    what it is given, and a Decimal('sNaN') or an object would raise from inside it."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if depth >= OPTION_DEPTH_LIMIT and isinstance(value, list | dict):
        option = re.split(r"[.\[]", path, maxsplit=1)[0]
        raise InvalidRequest(
            f"{option} is nested more than {OPTION_DEPTH_LIMIT} levels deep; no publish "
            "option but payload and metadata nests"
        )
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        for key, item in value.items():
            _check_plain(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidRequest(
        f"{path} is a {type(value).__name__}, which is not a value of a publish option; "
        "see PublishOptions for the type of each option"
    )


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

    def build_many(
        self, request_type: str, payloads: Iterable[Any], options: PublishOptions, now: datetime
    ) -> list[Job]:
        """One job of ``request_type`` per payload, all with the same options.

        The first job is built (and checked) in full; the others differ from it by their
        payload only, which goes through the codec: the codec refuses everything the schema
        forbids in a payload (see fastcheck), so the options are checked once, not per job.
        """
        if isinstance(payloads, str | bytes | Mapping) or not isinstance(payloads, Iterable):
            raise InvalidRequest(
                f"publish_many takes an iterable of payloads, not {type(payloads).__name__}"
            )
        jobs: list[Job] = []
        for index, payload in enumerate(payloads):
            path = f"payloads[{index}]"
            encoded = codec.encode(payload, path)
            codec.check_size(encoded, path)
            if not jobs:
                jobs.append(self.build([Call(request_type, payload)], options, now))
                continue
            first = jobs[0]
            request = replace(first.requests[0], payload=encoded)
            job = replace(first, requests=(request,), metadata=dict(first.metadata))
            jobs.append(rekeyed(job))  # the key may read the payload (UKEY-002)
        return jobs

    def build(self, calls: Sequence[Call], options: PublishOptions, now: datetime) -> Job:
        # ERR-001: schema and limit violations are reported before an unknown type or a
        # refused priority, so the handler's defaults stand in only once its type is known.
        calls = _calls(calls)
        payloads = [
            codec.encode(call.payload, f"requests[{index}].payload")
            for index, call in enumerate(calls)
        ]
        for index, payload in enumerate(payloads):
            codec.check_size(payload, f"requests[{index}].payload")
        # An unknown type is refused further down; until then neutral defaults stand in.
        kind = calls[0].type
        first = self.handlers.get(kind) if isinstance(kind, str) and kind in self.handlers else None
        policy = _policy(options.retry, first.retry_policy if first else None)
        queue = options.queue if options.queue is not None else first.queue if first else "default"
        priority = (
            options.priority if options.priority is not None else first.priority if first else 0
        )
        available_at = _available_at(options, now)
        tags = _labels("tags", options.tags)
        depends_on = _labels("depends_on", options.depends_on)
        document: dict[str, Any] = {
            "requests": [
                {"type": call.type, "payload": payload}
                for call, payload in zip(calls, payloads, strict=True)
            ],
            "queue": queue,
            "priority": priority,
            "available_at": format_timestamp(available_at),
            "unique": options.unique is True,
            "depends_on": list(depends_on),
            "retry_policy": _policy_document(policy),
            "tags": list(tags),
            "metadata": codec.encode(options.metadata, "metadata"),
        }
        for name in ("serial_group", "identifier", "batch_id"):
            if getattr(options, name) is not None:
                document[name] = getattr(options, name)
        if options.recurring is not None:
            interval_ms = _duration_ms("recurring", options.recurring, now)
            document["recurring"] = {"interval_ms": interval_ms}
        if options.timeout is not None:
            document["timeout_ms"] = timeout_ms("timeout", options.timeout)
        elif first is not None and first.timeout_ms is not None:
            document["timeout_ms"] = first.timeout_ms
        if options.result_ttl is not None:
            document["result_ttl_ms"] = result_ttl_ms("result_ttl", options.result_ttl)
        elif first is not None and first.result_ttl_ms is not None:
            document["result_ttl_ms"] = first.result_ttl_ms
        key, limit = _concurrency(options, first, calls[0].payload)
        if key is not None or limit is not None:
            document["concurrency_key"] = key
            document["concurrency_limit"] = limit
        rate = _rate(options, first, calls[0].payload)
        if rate is not None:
            document["rate_key"], document["rate_limit"], document["rate_period_ms"] = rate
        uniqueness = _uniqueness(options, first)
        if uniqueness is not None:
            document.update(_unique_members(uniqueness, options))
        for name, value in document.items():
            if name not in ("requests", "metadata"):  # encoded by the codec already
                _check_plain(value, name)
        _check_labels(document)
        validate_publish_request(document)
        resolved = resolve_uniqueness(document["uniqueness"]) if uniqueness is not None else None
        if resolved is not None and options.recurring is not None:
            raise InvalidRequest("a job with a unique key cannot be recurring (UKEY-001)")
        if options.unique is True and options.recurring is not None:
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
            available_at=available_at,
            created_at=now,
            updated_at=now,
            retry_policy=policy,
            requests=tuple(
                Request(index=i, type=call.type, payload=payload, state=self.initial_request_state)
                for i, (call, payload) in enumerate(zip(calls, payloads, strict=True))
            ),
            serial_group=options.serial_group,
            identifier=options.identifier,
            unique=document["unique"],
            recurring_interval_ms=document.get("recurring", {}).get("interval_ms"),
            depends_on=depends_on,
            batch_id=options.batch_id,
            tags=tags,
            metadata=document["metadata"],
            timeout_ms=document.get("timeout_ms"),
            result_ttl_ms=document.get("result_ttl_ms"),
            concurrency_key=key,
            concurrency_limit=limit,
            rate_key=rate[0] if rate else None,
            rate_limit=rate[1] if rate else None,
            rate_period_ms=rate[2] if rate else None,
            uniqueness=resolved,
            unique_key=unique_key(resolved, document) if resolved is not None else None,
        )
