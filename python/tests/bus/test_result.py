"""Result and ErrorList: construction, look-ups by code, raising failures."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.bus import Error, ErrorList, Result, ResultFailed


class Code(Enum):
    LOCKED = "locked"
    MISSING = "missing"
    INVALID = "invalid"


class Other(Enum):
    LOCKED = "locked"  # same value, different enum: a different code


codes = st.sampled_from([*Code, *Other])
errors = st.builds(
    Error,
    message=st.text(max_size=20),
    code=st.none() | codes,
    key=st.none() | st.text(min_size=1, max_size=5),
)


@given(st.lists(errors, max_size=8), codes)
def test_contains_is_true_exactly_when_an_error_has_the_code(
    items: list[Error], code: Enum
) -> None:
    listed = ErrorList(items)
    assert listed.contains(code) == any(e.code == code for e in items)
    assert listed.first(code) == next((e for e in items if e.code == code), None)


@given(st.lists(errors, max_size=8))
def test_codes_are_distinct_in_first_seen_order(items: list[Error]) -> None:
    listed = ErrorList(items)
    seen: list[Enum] = []
    for error in items:
        if error.code is not None and error.code not in seen:
            seen.append(error.code)
    assert listed.codes() == tuple(seen)
    assert list(listed) == items
    assert len(listed) == len(items)
    assert listed.first() == (items[0] if items else None)


@given(st.lists(errors, min_size=1, max_size=8))
def test_failed_result_raises_with_itself(items: list[Error]) -> None:
    result = Result.fail(items)
    assert result.failed
    assert not result.succeeded
    assert not result
    assert result.errors == ErrorList(items)
    with pytest.raises(ResultFailed) as raised:
        result.raise_if_failed()
    assert raised.value.result is result
    assert raised.value.errors is result.errors
    with pytest.raises(ResultFailed):
        _ = result.value
    assert result.value_or("fallback") == "fallback"


@given(st.integers() | st.text() | st.none())
def test_successful_result_carries_its_value(value: object) -> None:
    result = Result.ok(value)
    assert result.succeeded
    assert result
    assert result.value == value
    assert result.value_or("fallback") == value
    assert result.raise_if_failed() is result
    assert not result.errors


def test_fail_accepts_a_code_a_message_an_error_or_several() -> None:
    assert Result.fail(Code.LOCKED).errors.contains(Code.LOCKED)
    assert Result.fail("no such event").errors.messages() == ("no such event",)
    assert Result.fail(Error("x", Code.MISSING)).errors.codes() == (Code.MISSING,)
    mixed = Result.fail([Code.LOCKED, "text", Error("m", Code.INVALID, key="event_id")])
    assert mixed.errors.codes() == (Code.LOCKED, Code.INVALID)
    assert not mixed.errors.contains(Other.LOCKED)


def test_a_failure_needs_an_error_and_a_success_has_none() -> None:
    with pytest.raises(ValueError, match="at least one error"):
        Result.fail([])
    with pytest.raises(TypeError, match="not an error"):
        Result.fail([42])  # type: ignore[list-item]


def test_ok_without_a_value_is_none() -> None:
    assert Result.ok().value is None


def test_errors_read_well() -> None:
    error = Error("the report is being rebuilt", Code.LOCKED, retry_after=timedelta(seconds=5))
    assert str(error) == "[Code.LOCKED] the report is being rebuilt"
    assert str(Error(code=Code.MISSING, key="event_id")) == "[Code.MISSING] event_id"
    assert str(Error()) == "failed"
    failed = Result.fail([error, "second"])
    assert "[Code.LOCKED] the report is being rebuilt; second" in str(ResultFailed(failed))
    assert repr(Result.ok(3)) == "Result.ok(3)"


def test_error_lists_are_values() -> None:
    one = ErrorList([Code.LOCKED, "x"])
    assert one == ErrorList([Error(code=Code.LOCKED), Error("x")])
    assert hash(one) == hash(ErrorList([Code.LOCKED, "x"]))
    more = [Code.MISSING]
    assert (one + more).codes() == (Code.LOCKED, Code.MISSING)
    assert one[1:] == ErrorList(["x"])
    assert one[0].code is Code.LOCKED
