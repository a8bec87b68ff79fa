"""Parsing broker messages: any body gives an envelope (or a control request), or the named
error, and nothing else, so that a consumer can acknowledge and ignore it (BROKER-006).

Hypothesis feeds arbitrary bytes and JSON documents near the schemas; a fixed corpus holds the
bodies that once killed ``conveyor consume`` (dates that match the pattern but are no date,
nesting deeper than the interpreter's recursion limit, integers longer than Python converts).
No broker is needed: these are the parsers alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.broker import Envelope, InvalidControl, InvalidEnvelope
from conveyor.broker.control import ControlRequest
from conveyor.broker.mode import BrokerMode

# An error message goes into a log line per message: it must stay short whatever the body.
LONGEST_PROBLEM = 400

TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"

GOOD_ENVELOPE: dict[str, Any] = {
    "specversion": "0.2",
    "job_id": "1842",
    "queue": "mail",
    "priority": 10,
    "published_at": "2026-01-01T09:30:00.125Z",
}
GOOD_CONTROL: dict[str, Any] = {"command": "reload", "requested_at": "2026-01-01T09:30:00.125Z"}

DEEP = 100_000

# Bodies seen to crash consumers, and their kin: each must be refused with the named error.
POISON: list[bytes] = [
    b"",
    b"\xff\xfe\x00garbage",
    b"not json",
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"1" * 5000,  # more digits than int() converts (ValueError, not a JSONDecodeError)
    b"[]",
    b"null",
    b'"2026-01-01T00:00:00.000Z"',
    b"NaN",
]


def with_fields(base: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({**base, **fields}).encode()


ENVELOPE_POISON = [
    *POISON,
    with_fields(GOOD_ENVELOPE, published_at="2026-13-45T25:61:61.000Z"),
    with_fields(GOOD_ENVELOPE, published_at="0000-01-01T00:00:00.000Z"),
    with_fields(GOOD_ENVELOPE, published_at="2026-02-30T00:00:00.000Z"),
    with_fields(GOOD_ENVELOPE, priority=[[[]]]),
    with_fields(GOOD_ENVELOPE, job_id="x" * 1_000_000),
    b'{"job_id":' + b"[" * 900 + b"]" * 900 + b"}",
]
CONTROL_POISON = [
    *POISON,
    with_fields(GOOD_CONTROL, requested_at="2026-13-45T25:61:61.000Z"),
    with_fields(GOOD_CONTROL, requested_at="0000-01-01T00:00:00.000Z"),
    with_fields(GOOD_CONTROL, requested_at="2026-01-01T00:00:00"),  # no timezone
    with_fields(GOOD_CONTROL, requested_at=12),
    json.dumps({"command": "reload", "requested_at": [[[]]] * 3}).encode(),
    json.dumps({"command": "reload"}).encode(),
    json.dumps({"command": "explode", "requested_at": GOOD_CONTROL["requested_at"]}).encode(),
    b'{"command":"reload","requested_at":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"command":"reload","requested_at":' + b"[" * DEEP + b"]" * DEEP + b"}",
]


def refused_envelope(body: bytes) -> InvalidEnvelope:
    with pytest.raises(InvalidEnvelope) as caught:
        Envelope.parse(body)
    return caught.value


@pytest.mark.parametrize("body", ENVELOPE_POISON, ids=lambda body: repr(body[:40]))
def test_a_poison_envelope_is_refused_with_a_short_named_error(body: bytes) -> None:
    """BROKER-006: the consumer learns that the message is no envelope, and why, briefly."""
    problem = str(refused_envelope(body))
    assert problem
    assert len(problem) <= LONGEST_PROBLEM


@pytest.mark.parametrize("body", CONTROL_POISON, ids=lambda body: repr(body[:40]))
def test_a_poison_control_message_is_refused_with_a_short_named_error(body: bytes) -> None:
    with pytest.raises(InvalidControl) as caught:
        BrokerMode.parse_control(body)
    assert str(caught.value)
    assert len(str(caught.value)) <= LONGEST_PROBLEM


def test_an_envelope_with_a_long_unknown_member_is_processed() -> None:
    """VER-005: a member this version does not define is ignored, however long its name."""
    body = json.dumps({**GOOD_ENVELOPE, "x" * 100_000: 1}).encode()
    assert Envelope.parse(body).job_id == GOOD_ENVELOPE["job_id"]


def test_a_date_that_matches_the_pattern_but_is_none_names_the_field() -> None:
    body = with_fields(GOOD_ENVELOPE, published_at="2026-13-45T25:61:61.000Z")
    assert "published_at" in str(refused_envelope(body))


def test_a_good_envelope_and_a_good_control_request_still_parse() -> None:
    envelope = Envelope.parse(json.dumps(GOOD_ENVELOPE).encode())
    assert envelope == Envelope(
        "1842", "mail", 10, datetime(2026, 1, 1, 9, 30, 0, 125000, tzinfo=UTC)
    )
    assert Envelope.parse(envelope.to_bytes()) == envelope
    command, requested_at = BrokerMode.parse_control(json.dumps(GOOD_CONTROL).encode())
    assert command == "reload"
    assert requested_at == envelope.published_at
    request = ControlRequest("reload", envelope.published_at)
    assert BrokerMode.parse_control(request.to_bytes()) == ("reload", envelope.published_at)


def test_a_priority_written_as_a_whole_float_is_an_integer() -> None:
    """JSON Schema counts 10.0 as an integer; the envelope keeps an int, as it sends one."""
    envelope = Envelope.parse(with_fields(GOOD_ENVELOPE, priority=10.0))
    assert type(envelope.priority) is int


# -- fuzzing --------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
PATTERN_TIMESTAMPS = st.from_regex(TIMESTAMP, fullmatch=True)
NEAR_TIMESTAMPS = PATTERN_TIMESTAMPS | st.datetimes(timezones=st.just(UTC)).map(
    lambda moment: moment.isoformat()
)


def near(good: dict[str, Any], values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Documents near ``good``: some fields kept, some replaced by values of their kind or by
    any JSON value, some dropped, some added; and now and then no object at all."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        document: dict[str, Any] = {}
        for name, value in good.items():
            choice = draw(st.sampled_from(("keep", "kind", "any", "drop")))
            if choice == "keep":
                document[name] = value
            elif choice == "kind":
                document[name] = draw(values[name])
            elif choice == "any":
                document[name] = draw(JSON_VALUES)
        extra = draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2))
        document.update(extra)
        return document

    return build() | JSON_VALUES


ENVELOPE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "specversion": st.from_regex(r"[0-9]+\.[0-9]+", fullmatch=True) | st.text(max_size=6),
    "job_id": st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True) | st.text(max_size=70),
    "queue": st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,63}", fullmatch=True) | st.text(max_size=70),
    "priority": st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=True, allow_infinity=True),
    "published_at": NEAR_TIMESTAMPS,
}
CONTROL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "command": st.sampled_from(("reload", "Reload", "")) | st.text(max_size=8),
    "requested_at": NEAR_TIMESTAMPS,
}


def encoded(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return documents.map(lambda document: json.dumps(document).encode())


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=st.binary(max_size=200) | encoded(near(GOOD_ENVELOPE, ENVELOPE_VALUES)))
def test_any_body_is_an_envelope_or_invalid_envelope(body: bytes) -> None:
    try:
        envelope = Envelope.parse(body)
    except InvalidEnvelope as error:
        problem = str(error)
    else:
        problem = None
    if problem is not None:
        assert 0 < len(problem) <= LONGEST_PROBLEM
        return
    assert isinstance(envelope.job_id, str)
    assert isinstance(envelope.queue, str)
    assert type(envelope.priority) is int
    assert envelope.published_at.tzinfo is not None
    assert Envelope.parse(envelope.to_bytes()) == envelope


@FUZZ
@given(body=st.binary(max_size=200) | encoded(near(GOOD_CONTROL, CONTROL_VALUES)))
def test_any_body_is_a_control_request_or_invalid_control(body: bytes) -> None:
    try:
        command, requested_at = BrokerMode.parse_control(body)
    except InvalidControl as error:
        problem = str(error)
    else:
        problem = None
    if problem is not None:
        assert 0 < len(problem) <= LONGEST_PROBLEM
        return
    assert command == "reload"
    assert requested_at.tzinfo is not None
