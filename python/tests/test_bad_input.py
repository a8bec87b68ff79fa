"""Bad input is refused with the right error and stores nothing; good input round-trips exactly.

Spec: JOB-002, LIMIT-001..005, CODEC-001..003, ORDER-001/003, JOB-003/004, ERR-001/002.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import (
    Call,
    Conveyor,
    ConveyorError,
    InvalidPayload,
    InvalidRequest,
    JobNotFound,
    PayloadTooLarge,
    PriorityNotAllowed,
    Refused,
    UnknownDependency,
    codec,
)
from conveyor.clock import format_timestamp, parse_timestamp, truncate_ms
from conveyor.publishing import PublishOptions
from conveyor.schemacheck import ecma_pattern
from conveyor.specfiles import load_json

from .core_support import ensure_task, memory_app

FAST = settings(max_examples=40, deadline=None)
CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8).filter(lambda s: "\x00" not in s),
)
SAFE_KEYS = st.text(max_size=6).filter(lambda k: "\x00" not in k and k not in codec.TAGS)


def nested(bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A JSON document with ``bad`` somewhere inside, among good siblings."""
    return st.recursive(
        bad,
        lambda inner: st.one_of(
            st.tuples(st.lists(JSON_LEAVES, max_size=2), inner).map(lambda t: [*t[0], t[1]]),
            st.tuples(SAFE_KEYS, inner, st.dictionaries(SAFE_KEYS, JSON_LEAVES, max_size=2)).map(
                lambda t: {**t[2], t[0]: t[1]}
            ),
        ),
        max_leaves=4,
    )


def refused(
    app: Conveyor, attempt: Callable[[], object], error: type[Refused], *fragments: str
) -> None:
    """``attempt`` raises ``error`` naming every fragment, and the store stays empty."""
    with pytest.raises(error) as raised:
        attempt()
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert app.status() == []


# -- payloads ------------------------------------------------------------------------------

NUL_TEXT = st.tuples(st.text(max_size=5), st.text(max_size=5)).map(lambda t: t[0] + "\x00" + t[1])


@given(payload=nested(NUL_TEXT))
@FAST
def test_a_string_with_nul_is_an_invalid_payload(payload: Any) -> None:
    """LIMIT-003: no string may contain U+0000."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload, "U+0000", "payload")


@given(payload=nested(st.tuples(NUL_TEXT, JSON_LEAVES).map(lambda t: {t[0]: t[1], "k": 1})))
@FAST
def test_a_key_with_nul_is_an_invalid_payload(payload: Any) -> None:
    """LIMIT-003: no object member name may contain U+0000."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload, "U+0000")


@given(payload=nested(st.sampled_from([math.nan, math.inf, -math.inf])))
@FAST
def test_non_finite_numbers_are_invalid_payloads(payload: Any) -> None:
    """LIMIT-003: every number is finite."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload, "NaN or infinity")


@given(
    payload=nested(st.sampled_from([object(), {1, 2}, 1j, frozenset(), ValueError("x")])),
    where=st.sampled_from(["payload", "metadata"]),
)
@FAST
def test_values_json_cannot_carry_are_invalid_payloads(payload: Any, where: str) -> None:
    """LIMIT-003 / CODEC-005: no pickling of arbitrary objects, in payloads or metadata."""
    app = memory_app()
    if where == "payload":
        refused(app, lambda: app.publish("task", payload), InvalidPayload, "cannot carry")
    else:
        attempt = lambda: app.publish("task", metadata={"m": payload})  # noqa: E731
        refused(app, attempt, InvalidPayload, "cannot carry", "metadata")


@given(
    payload=nested(
        st.sampled_from([datetime(2026, 1, 1), datetime(2020, 5, 5, 12, 30), Decimal("NaN")])
    )
)
@FAST
def test_naive_datetimes_and_non_finite_decimals_are_refused(payload: Any) -> None:
    """CODEC-002: an instant without offset, or a decimal that is not finite, is refused."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload)


@given(
    payload=nested(
        st.tuples(st.sampled_from(sorted(codec.TAGS)), JSON_LEAVES).map(lambda t: {t[0]: t[1]})
    )
)
@FAST
def test_a_plain_object_whose_only_key_is_reserved_is_refused(payload: Any) -> None:
    """CODEC-003: {"$bytes": ...} written by the application would decode ambiguously."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload, "reserves")


@given(payload=nested(st.integers(0, 5).map(lambda k: {k: "v"})))
@FAST
def test_non_string_keys_are_refused(payload: Any) -> None:
    """LIMIT-003: JSON object member names are strings."""
    app = memory_app()
    refused(app, lambda: app.publish("task", payload), InvalidPayload, "key")


NO_NUL = st.text(max_size=4).filter(lambda s: "\x00" not in s)
LONE_SURROGATE = st.tuples(
    NO_NUL, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), NO_NUL
).map("".join)


@given(payload=nested(LONE_SURROGATE), where=st.sampled_from(["payload", "metadata"]))
@FAST
def test_a_string_with_a_lone_surrogate_is_an_invalid_payload(payload: Any, where: str) -> None:
    """LIMIT-007: UTF-8 cannot carry a lone surrogate, in values or member names."""
    app = memory_app()
    if where == "payload":
        refused(app, lambda: app.publish("task", payload), InvalidPayload, "lone surrogate")
    else:
        attempt = lambda: app.publish("task", metadata={"m": payload})  # noqa: E731
        refused(app, attempt, InvalidPayload, "lone surrogate", "metadata")


@pytest.mark.parametrize(
    ("arguments", "options", "error", "fragment"),
    [
        (("task", "caf\udce9"), {}, InvalidPayload, "requests[0].payload"),
        (("task", {"\ud800": 1}), {}, InvalidPayload, "key"),
        (("task",), {"metadata": {"note": "\udfff"}}, InvalidPayload, "metadata"),
        (("task",), {"identifier": "invoice \ud800"}, InvalidRequest, "identifier"),
        (("task",), {"serial_group": "\ud800"}, InvalidRequest, "serial_group"),
        (("task",), {"tags": ["ok", "\udbff"]}, InvalidRequest, "tags[1]"),
    ],
)
def test_lone_surrogates_are_refused_before_any_backend_sees_them(
    app: Conveyor,
    arguments: tuple[Any, ...],
    options: dict[str, Any],
    error: type[Refused],
    fragment: str,
) -> None:
    """LIMIT-007 on each store: a named error instead of a UnicodeEncodeError, nothing stored."""
    app.register("task", lambda *args, **kwargs: None)
    refused(app, lambda: app.publish(*arguments, **options), error, fragment, "lone surrogate")
    with app.bulk():
        refused(app, lambda: app.publish(*arguments, **options), error, fragment)


def test_a_surrogate_pair_is_one_character_and_is_kept_on_every_backend(app: Conveyor) -> None:
    """LIMIT-007: an astral character (a pair in UTF-16) is a valid string and label."""
    app.register("task", lambda *args: None)
    text = json.loads('"clef \\ud834\\udd1e"')
    job = app.publish("task", text, identifier=text)
    assert (app.get(job.id).requests[0].payload, app.get(job.id).identifier) == (text, text)


def deep(levels: int, leaf: Any = 1) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def test_a_payload_nested_64_deep_round_trips_on_every_backend(app: Conveyor) -> None:
    """LIMIT-006: 64 levels are accepted, stored, read and handed to the handler intact."""
    received: list[Any] = []
    app.register("deep", received.append)
    payload = deep(62, {"leaf": b"bytes"})  # the typed value is the 64th level
    job = app.publish("deep", payload, metadata={"m": deep(63)})
    assert app.get(job.id).requests[0].payload == codec.encode(payload)
    app.process()
    assert received == [payload]


@pytest.mark.parametrize(
    ("payload", "metadata"),
    [
        (deep(65), {}),
        (deep(64, {"a": 1}), {}),
        (deep(64, b"typed values are objects"), {}),
        (deep(5000), {}),
        (None, {"m": deep(64)}),
    ],
    ids=["65-deep", "object-at-65", "typed-value-at-65", "5000-deep", "metadata"],
)
def test_a_payload_nested_deeper_than_64_is_refused_on_every_backend(
    app: Conveyor, payload: Any, metadata: dict[str, Any]
) -> None:
    """LIMIT-006: refused with invalid_payload (not a RecursionError), nothing stored."""
    app.register("deep", lambda *args: None)
    refused(app, lambda: app.publish("deep", payload, metadata=metadata), InvalidPayload, "64 deep")


def test_a_payload_that_contains_itself_is_refused() -> None:
    """A cycle is infinitely deep: refused by the depth limit, not by a RecursionError."""
    app = memory_app()
    cycle: list[Any] = []
    cycle.append(cycle)
    refused(app, lambda: app.publish("task", cycle), InvalidPayload, "64 deep")


def test_a_payload_above_one_mebibyte_is_too_large() -> None:
    """LIMIT-006: refused with payload_too_large; exactly 1 MiB is accepted."""
    app = memory_app()
    overhead = len(codec.dumps({"blob": ""}))
    refused(
        app,
        lambda: app.publish("task", {"blob": "x" * (1024 * 1024 - overhead + 1)}),
        PayloadTooLarge,
        "1048576",
    )
    job = app.publish("task", {"blob": "x" * (1024 * 1024 - overhead)})
    assert len(codec.dumps(job.requests[0].payload).encode()) == 1024 * 1024


def test_the_largest_payload_round_trips_on_every_backend(app: Conveyor) -> None:
    """LIMIT-006 / CODEC-001: a payload of almost 1 MiB (multi-byte text) is stored intact."""
    received: list[str] = []
    app.register("big", received.append)
    blob = "é€𝄞x" * (1024 * 1024 // 10)
    job = app.publish("big", blob)
    assert app.get(job.id).requests[0].payload == blob
    app.process()
    assert received == [blob]


# -- options -------------------------------------------------------------------------------

LONG_LABEL = st.text(min_size=256, max_size=300).filter(lambda s: not any(c in s for c in CONTROL))
CONTROL_LABEL = st.tuples(st.text(max_size=10), st.sampled_from(CONTROL), st.text(max_size=10)).map(
    "".join
)
BAD_LABELS = LONG_LABEL | CONTROL_LABEL | st.just("")


@given(label=BAD_LABELS, field=st.sampled_from(["identifier", "serial_group", "tags"]))
@FAST
def test_labels_that_are_too_long_empty_or_with_control_characters_are_refused(
    label: str, field: str
) -> None:
    """LIMIT-002: labels are 1..255 characters without U+0000..U+001F or U+007F."""
    app = memory_app()
    value: Any = [label] if field == "tags" else label
    refused(app, lambda: app.publish("task", **{field: value}), InvalidRequest, field)


@pytest.mark.parametrize(
    "options",
    [
        {"identifier": "invoice:1\n"},
        {"serial_group": "g\n"},
        {"tags": ["customer:42\n"]},
        {"queue": "mail\n"},
    ],
)
def test_a_trailing_newline_does_not_slip_past_the_patterns(options: dict[str, Any]) -> None:
    """LIMIT-001/002: patterns match the whole value ($ is the end, not a final newline)."""
    app = memory_app()
    refused(app, lambda: app.publish("task", **options), InvalidRequest, next(iter(options)))


@given(label=st.text(min_size=1, max_size=255).filter(lambda s: not any(c in s for c in CONTROL)))
@FAST
def test_every_valid_label_is_accepted_and_kept(label: str) -> None:
    """LIMIT-002: any 1..255 characters without control characters are a valid label."""
    app = memory_app()
    job = app.publish("task", identifier=label, serial_group=label, tags=[label])
    stored = app.get(job.id)
    assert (stored.identifier, stored.serial_group, stored.tags) == (label, label, (label,))


def test_long_multibyte_labels_are_kept_on_every_backend(app: Conveyor) -> None:
    """LIMIT-002 on each store: 255 characters, astral ones included, stored unchanged."""
    app.register("task", lambda: None)
    label = ("𝄞é" * 128)[:255]
    job = app.publish("task", identifier=label, serial_group=label, tags=[label])
    assert app.get(job.id).identifier == label
    assert [j.id for j in app.jobs(tag=label)] == [job.id]
    assert app.unfinished_identifiers([label]) == {label}


BAD_QUEUES = st.one_of(
    st.just(""),
    st.from_regex(r"\A[a-z]{0,5}[A-Z ][a-z]{0,5}\Z"),
    st.from_regex(r"\A[_.:-][a-z0-9]{0,5}\Z"),
    st.text(alphabet="abc", min_size=65, max_size=70),
)


@given(queue=BAD_QUEUES)
@FAST
def test_queue_names_breaking_the_pattern_are_refused(queue: str) -> None:
    """LIMIT-001: queue names are [a-z0-9_.:-], 1..64 long, starting with a letter or digit."""
    app = memory_app()
    refused(app, lambda: app.publish("task", queue=queue), InvalidRequest, "queue")


@given(queue=st.from_regex(r"\A[a-z0-9][a-z0-9_.:-]{0,63}\Z"))
@FAST
def test_every_queue_name_matching_the_pattern_is_accepted(queue: str) -> None:
    """LIMIT-001: an implementation accepts every name that matches."""
    app = memory_app()
    assert app.publish("task", queue=queue).queue == queue


@given(
    type_name=st.one_of(
        st.from_regex(r"\A[0-9.:-][A-Za-z0-9]{0,5}\Z"),
        st.from_regex(r"\A[A-Za-z_]{1,5}[ /@!é][A-Za-z]{0,5}\Z"),
        st.text(alphabet="ab", min_size=129, max_size=135),
    )
)
@FAST
def test_request_types_breaking_the_pattern_are_refused(type_name: str) -> None:
    """LIMIT-001: even with a handler registered under it, a bad type name is refused."""
    app = memory_app()
    app.register(type_name, lambda: None)
    refused(app, lambda: app.publish(type_name), InvalidRequest, "type")


@given(count=st.integers(101, 140))
@settings(max_examples=5, deadline=None)
def test_more_than_a_hundred_requests_are_refused(count: int) -> None:
    """LIMIT-005: a job has 1 to 100 requests."""
    app = memory_app()
    calls = [Call("task")] * count
    refused(app, lambda: app.publish_job(calls), InvalidRequest, "requests")
    refused(app, lambda: app.publish_job([]), InvalidRequest, "request")
    assert len(app.publish_job([Call("task")] * 100).requests) == 100


@given(priority=st.integers(-(2**20), -1) | st.integers(32768, 2**20))
@FAST
def test_priorities_outside_0_to_32767_are_refused(priority: int) -> None:
    """ORDER-001: priority is an integer from 0 to 32767."""
    app = memory_app()
    refused(app, lambda: app.publish("task", priority=priority), InvalidRequest, "priority")


@given(priority=st.integers(0, 200).filter(lambda p: p not in (10, 20, 30)))
@FAST
def test_a_priority_outside_the_configured_set_is_not_allowed(priority: int) -> None:
    """ORDER-003: with priorities configured, any other priority is priority_not_allowed."""
    app = memory_app(priorities=[10, 20, 30], default_priority=20)
    refused(app, lambda: app.publish("task", priority=priority), PriorityNotAllowed, str(priority))
    assert app.publish("task").priority == 20


def test_available_at_and_delay_together_are_refused() -> None:
    """JOB-004: give available_at or delay, not both."""
    app = memory_app()
    moment = app.now() + timedelta(minutes=1)
    refused(app, lambda: app.publish("task", available_at=moment, delay=5), InvalidRequest, "delay")


@given(moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
@FAST
def test_a_naive_available_at_is_refused(moment: datetime) -> None:
    """JOB-004 / TIME-003: instants carry a time zone."""
    app = memory_app()
    refused(app, lambda: app.publish("task", available_at=moment), InvalidRequest, "timezone")


@given(delay=st.integers(-(10**9), -1))
@FAST
def test_a_negative_delay_is_refused(delay: int) -> None:
    """JOB-004: delay_ms is a duration (at least 0)."""
    app = memory_app()
    refused(
        app,
        lambda: app.publish("task", delay=timedelta(milliseconds=delay)),
        InvalidRequest,
        "delay",
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"available_at": "2026-01-01T00:00:00Z"}, "available_at must be a timezone-aware"),
        ({"available_at": date(2026, 1, 1)}, "available_at must be a timezone-aware"),
        ({"available_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))}, "1 to 9999"),
        ({"delay": 1e12}, "9999-12-31T23:59:59.999Z"),
        ({"delay": 10**30}, "9999-12-31T23:59:59.999Z"),
        ({"delay": timedelta(days=999_999_999)}, "9999-12-31T23:59:59.999Z"),
        ({"delay": math.inf}, "finite"),
        ({"delay": -math.inf}, "finite"),
        ({"delay": math.nan}, "finite"),
        ({"delay": "5"}, "delay must be a timedelta or a number of seconds"),
        ({"delay": True}, "delay must be a timedelta or a number of seconds"),
        ({"recurring": math.inf}, "recurring"),
        ({"recurring": 1e300}, "recurring"),
        ({"tags": 5}, "tags must be a list of strings"),
        ({"tags": {"a": 1}}, "tags must be a list of strings"),
        ({"tags": ["ok", 7]}, "tags[1]"),
        ({"depends_on": [2**70]}, "depends_on[0]"),
        ({"retry": {"backoff": "constant"}}, "missing: initial_delay_ms, max_delay_ms"),
        ({"retry": {"x": 1}}, "unknown: 'x'"),
        ({"retry": 5}, "retry must be a preset name"),
        ({"retry": {"backoff": "constant", "initial_delay_ms": [1], "max_delay_ms": 1}}, "retry"),
        ({"queue": Decimal("NaN")}, "queue is a Decimal"),
        ({"no_such_option": 1}, "unknown publish option(s) 'no_such_option'"),
    ],
)
def test_options_of_the_wrong_type_or_range_are_refused_on_every_backend(
    app: Conveyor, options: dict[str, Any], fragment: str
) -> None:
    """JOB-002 / JOB-004: an InvalidRequest naming the option, never an AttributeError,
    OverflowError, ValueError or TypeError; nothing stored, in bulk() too."""
    ensure_task(app)
    refused(app, lambda: app.publish("task", **options), InvalidRequest, fragment)

    def in_bulk() -> None:
        with app.bulk():
            app.publish("task", **options)

    refused(app, in_bulk, InvalidRequest, fragment)


def test_ids_that_no_job_can_have_are_unknown_on_every_backend(app: Conveyor) -> None:
    """DEP-001 / JOB-007: an id beyond the store's range or with a leading zero names no job
    (it was a database error), nor does one in other digits (it named another job)."""
    ensure_task(app)
    first = app.publish("task")
    for missing in (str(2**70), str(2**63), "0" + first.id):
        refused_after(app, lambda m=missing: app.publish("task", depends_on=[m]), missing)
        with pytest.raises(JobNotFound):
            app.get(missing)
    other_digits = first.id.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for missing in (other_digits, "²", str(2**70)):
        with pytest.raises(JobNotFound):
            app.get(missing)
        assert app.claim("w", job_id=missing) == []
    assert app.jobs(batch=str(2**70)) == []
    assert app.jobs(batch="not-a-batch") == []


def refused_after(app: Conveyor, attempt: Callable[[], object], missing: str) -> None:
    before = app.jobs()
    with pytest.raises(UnknownDependency, match="depends_on names jobs that do not exist"):
        attempt()
    assert app.jobs() == before, missing


def test_a_bare_string_is_one_tag_and_one_dependency_on_every_backend(app: Conveyor) -> None:
    """``tags="vip"`` is the tag vip (it was stored as three tags v, i, p)."""
    ensure_task(app)
    first = app.publish("task", tags="customer:42")
    second = app.publish("task", tags=("a", "b"), depends_on=first.id)
    assert app.get(first.id).tags == ("customer:42",)
    assert app.get(second.id).depends_on == (first.id,)
    assert [j.id for j in app.jobs(tag="customer:42")] == [first.id]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"tags": [f"t{n}" for n in range(33)]}, "tags"),
        ({"tags": ["same", "same"]}, "tags"),
        ({"retry": "no-such-preset"}, "no-such-preset"),
    ],
)
def test_tag_limits_and_unknown_presets_are_refused(options: dict[str, Any], fragment: str) -> None:
    """LIMIT-005 / JOB-003: at most 32 distinct tags; an unknown preset name is invalid_request."""
    app = memory_app()
    refused(app, lambda: app.publish("task", **options), InvalidRequest, fragment)


def test_repeated_dependencies_are_refused() -> None:
    """LIMIT-005: depends_on lists distinct jobs."""
    app = memory_app()
    first = app.publish("task")
    with pytest.raises(InvalidRequest, match="depends_on"):
        app.publish("task", depends_on=[first.id, first.id])
    assert len(app.jobs()) == 1


@given(metadata=nested(NUL_TEXT | st.sampled_from([math.nan, math.inf])))
@FAST
def test_metadata_follows_the_payload_rules(metadata: Any) -> None:
    """LIMIT-003: metadata values follow the same rules as payloads."""
    app = memory_app()
    refused(app, lambda: app.publish("task", metadata={"m": metadata}), InvalidPayload, "metadata")


# -- the codec ---------------------------------------------------------------------------------

OFFSETS = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
)
TYPED = st.one_of(
    st.binary(max_size=20),
    st.datetimes(timezones=OFFSETS | st.just(UTC)),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
PLAIN = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=10)
PLAIN = PLAIN.filter(lambda v: not isinstance(v, str) or "\x00" not in v)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
KEYS = st.text(max_size=8).filter(lambda k: "\x00" not in k)
VALUES = st.recursive(
    PLAIN | FLOATS | TYPED,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=4).filter(
            lambda d: not (len(d) == 1 and next(iter(d)) in codec.TAGS)
        )
    ),
    max_leaves=12,
)


@given(value=VALUES)
@settings(max_examples=200, deadline=None)
def test_the_codec_round_trips_typed_values_through_json(value: Any) -> None:
    """CODEC-001/002: bytes, aware datetimes, dates, Decimals, UUIDs survive encode/JSON/decode."""
    encoded = codec.encode(value)
    text = codec.dumps(encoded)
    decoded = codec.decode(json.loads(text))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (b"hi", {"$bytes": "aGk="}),
        (Decimal("19.90"), {"$decimal": "19.90"}),
        (date(2026, 2, 3), {"$date": "2026-02-03"}),
        (
            datetime(2026, 1, 1, 9, 30, tzinfo=UTC),
            {"$datetime": "2026-01-01T09:30:00+00:00"},
        ),
        (
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            {"$uuid": "12345678-1234-5678-1234-567812345678"},
        ),
        ({"$bytes": "x", "other": 1}, {"$bytes": "x", "other": 1}),
    ],
)
def test_typed_values_have_the_documented_wire_form(value: Any, encoded: Any) -> None:
    """CODEC-002/003: the typed forms of the spec's table; reserved keys among others are plain."""
    assert codec.encode(value) == encoded
    assert codec.decode(encoded) == value


def test_typed_values_reach_the_handler_on_every_backend(app: Conveyor) -> None:
    """CODEC-001: the handler receives the same typed values, nested in lists and objects."""
    received: list[Any] = []

    def typed(**fields: Any) -> None:
        received.append(fields)

    app.register("typed", typed)
    value = {
        "blob": [b"\x00\xffbinary", {"when": datetime(2026, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)}],
        "day": date(1999, 12, 31),
        "amount": Decimal("-0.000100"),
        "id": uuid.UUID(int=7),
        "plain": {"$bytes": "not typed", "x": [1, 2.5, None, True, "é"]},
        "big": 2**53 - 1,
    }
    app.publish("typed", value)
    app.process()
    assert received == [value]


# -- timestamps ----------------------------------------------------------------------------

TIMESTAMP = ecma_pattern(load_json("schemas/common.schema.json")["$defs"]["timestamp"]["pattern"])


@given(moment=st.datetimes(timezones=st.just(UTC)))
@settings(max_examples=200, deadline=None)
def test_every_instant_is_written_with_a_four_digit_year(moment: datetime) -> None:
    """TIME-003: the timestamp form matches the schema's pattern for every year 1..9999."""
    text = format_timestamp(moment)
    assert TIMESTAMP.search(text), text
    assert parse_timestamp(text) == truncate_ms(moment)


def test_an_instant_before_year_1000_round_trips_on_every_backend(app: Conveyor) -> None:
    """JOB-004 / TIME-003: available_at in year 5 is stored, read and written as 0005-..."""
    app.register("task", lambda: None)
    moment = datetime(5, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)
    job = app.publish("task", available_at=moment)
    stored = app.get(job.id)
    assert stored.available_at == moment
    assert stored.to_dict()["available_at"] == "0005-03-04T05:06:07.008Z"
    assert [j.id for j in app.claim("w")] == [job.id], "an instant in the past is due"


# -- anything at all -------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, 2**70, -(2**63) - 1, 10**30]),
    st.floats(),
    st.text(max_size=6),
    LONE_SURROGATE,
    st.sampled_from(["abc", "9", str(2**70), "٣", "0009", "2026-01-01T00:00:00Z", "exponential"]),
    st.binary(max_size=4),
    st.datetimes(),
    st.datetimes(timezones=OFFSETS | st.just(UTC)),
    st.dates(),
    st.timedeltas(),
    st.decimals(),
    st.uuids(),
    st.builds(object),
)
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.sets(st.integers(0, 3), max_size=2),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=6,
)
OPTION_NAMES = [*PublishOptions.__dataclass_fields__, "batch", "connection", "no_such_option"]


@given(
    type_name=st.one_of(st.just("task"), ANYTHING),
    payload=st.one_of(ANYTHING, st.integers(60, 70).map(deep)),
    options=st.dictionaries(st.sampled_from(OPTION_NAMES), ANYTHING, max_size=3),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_publish_raises_only_conveyor_errors_and_a_refusal_stores_nothing(
    app: Conveyor, type_name: Any, payload: Any, options: dict[str, Any]
) -> None:
    """Whatever the caller passes, publish either stores one job and returns it as stored,
    or returns the job a unique key conflicts with (``conflict == "discarded"``, UKEY-003)
    and stores nothing, or raises a ConveyorError subclass (never TypeError, OverflowError,
    RecursionError, UnicodeEncodeError or a database error) and stores nothing; the same
    inside bulk(). The app lives across examples, so an earlier example's job may hold the
    unique key of a later one."""
    ensure_task(app)
    before = sum(count for _, _, count in app.status())
    try:
        job = app.publish(type_name, payload, **options)
    except ConveyorError:
        assert sum(count for _, _, count in app.status()) == before
    else:
        if job.conflict == "discarded":
            assert sum(count for _, _, count in app.status()) == before
        else:
            assert sum(count for _, _, count in app.status()) == before + 1
            assert app.get(job.id).to_dict() == job.to_dict()
    options.pop("connection", None)
    try:
        with app.bulk():
            app.publish(type_name, payload, **options)
    except ConveyorError:
        pass
    assert sum(count for _, _, count in app.status()) in (before, before + 1, before + 2)


@pytest.mark.parametrize("option", ["queue", "identifier", "serial_group", "batch_id", "tags"])
def test_an_option_nested_5000_deep_is_refused_with_a_named_error(option: str) -> None:
    """Found by the fault suite's publish fuzzer: a string option given a 5,000-deep list
    raised RecursionError instead of InvalidRequest."""
    app = memory_app()
    refused(app, lambda: app.publish("task", None, **{option: deep(5000)}), InvalidRequest, "")


def test_unique_options_with_keys_of_mixed_types_are_refused_with_a_named_error() -> None:
    """Found by the publish fuzz test above: ``unique=`` given a mapping whose unknown keys
    were of different types raised TypeError (sorting them) instead of InvalidRequest."""
    app = memory_app()
    refused(
        app,
        lambda: app.publish("task", None, unique={"": None, 0: None, "key": "k"}),
        InvalidRequest,
        "unknown unique option(s)",
        "''",
        "0",
    )


@pytest.mark.parametrize("raw", ["1.", ".5", " 1", "1e", "0x10", "Infinity", "NaN", "1_000"])
def test_a_decimal_not_of_the_stated_form_is_not_decoded(raw: str) -> None:
    """CODEC-006: Python's Decimal reads these; a handler must never be handed one."""
    with pytest.raises(ValueError, match="CODEC-006"):
        codec.decode({"$decimal": raw})


@pytest.mark.parametrize("raw", ["1", "-1.50", "+007.50", "1e-3", "2E+10"])
def test_a_decimal_of_the_stated_form_is_decoded(raw: str) -> None:
    assert codec.decode({"$decimal": raw}) == Decimal(raw)
