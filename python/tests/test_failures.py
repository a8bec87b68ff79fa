"""Failing handlers: a bounded traceback with the recorded error, bounded messages in storage
and logs, and programming errors (a payload that does not fit or cannot be decoded) permanent.

Spec: OUT-003, OUT-007, OUT-009, CODEC-004.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import Call, Conveyor
from conveyor.failures import LINE_LIMIT, LOG_LIMIT, cut, cut_start
from conveyor.notify import describe
from conveyor.publishing import PublishOptions

from .core_support import RecordingNotifier


def helper_that_fails(message: str) -> None:
    raise ValueError(message)


def failing_handler(message: str) -> None:
    helper_that_fails(message)


def worker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "conveyor.worker"]


def test_a_failing_handler_records_its_traceback_on_every_backend(app: Conveyor) -> None:
    """OUT-009: the traceback is stored with the error, from the handler down, and read back
    intact from every store; the runner's own frame is left out."""
    app.register("fails", failing_handler)
    job = app.publish("fails", {"message": "boom"})
    app.process()
    got = app.get(job.id)
    assert got.state == "temporarily_failed"
    assert got.last_error is not None
    trace = got.last_error.traceback
    assert trace is not None
    assert trace.startswith("Traceback (most recent call last):\n")
    assert "in failing_handler" in trace
    assert "in helper_that_fails" in trace
    assert trace.endswith("ValueError: boom\n")
    assert "execution.py" not in trace
    assert got.errors[0].traceback == trace
    assert got.to_dict()["last_error"]["traceback"] == trace


def test_a_huge_message_is_bounded_in_storage_and_in_the_log_on_every_backend(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    """A 100 kB message: stored cut to the schema's 4096 characters, saying how much was cut;
    logged once per failure with every line under 1000 characters (it was one line of
    100,096 characters at every attempt)."""
    app.register("fails", failing_handler)
    job = app.publish("fails", {"message": "x" * 100_000})
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        app.process()
        app.clock.advance(60)  # type: ignore[attr-defined]
        app.process()
    got = app.get(job.id)
    assert got.attempts == 2
    for error in got.errors:
        assert len(error.message) <= 4096
        assert error.message.endswith("more characters)")
        assert error.traceback is not None
        assert len(error.traceback) <= 8192
        assert "in helper_that_fails" in error.traceback
    warnings = worker_warnings(caplog)
    assert len(warnings) == 2, "one log record per failure"
    for text in warnings:
        assert text.startswith(f"job {job.id} request fails failed at attempt")
        assert "in helper_that_fails" in text
        assert max(len(line) for line in text.split("\n")) <= LINE_LIMIT
        assert len(text) < 2 * LINE_LIMIT


def test_a_deep_traceback_keeps_its_end() -> None:
    """OUT-009: cut to 8192 characters keeping the end, where the error was raised."""
    app = Conveyor("memory://")

    def recurse(depth: int) -> None:
        if depth == 0:
            raise ValueError("at the bottom")
        if depth % 2:  # two call sites, so Python does not fold the frames into one line
            recurse(depth - 1)
        else:
            recurse(depth - 1)

    app.register("deep", recurse)
    job = app.publish("deep", 300)
    app.process()
    last_error = app.get(job.id).last_error
    assert last_error is not None
    trace = last_error.traceback
    assert trace is not None
    assert len(trace) <= 8192
    assert trace.startswith("… (")
    assert trace.endswith("ValueError: at the bottom\n")


def test_the_notifier_log_line_is_bounded(app: Conveyor) -> None:
    """The default notifier logs the last error's message: cut too (it was 4096 characters)."""
    notifier = RecordingNotifier()
    app.notifier = notifier
    app.register("fails", failing_handler)
    once = {"backoff": "constant", "initial_delay_ms": 0, "max_delay_ms": 0, "max_attempts": 1}
    job = app.publish("fails", {"message": "y" * 100_000}, retry=once)
    app.process()
    (call,) = notifier.calls
    assert call[:2] == ("failed", job.id)
    assert len(describe("failed", app.get(job.id))) < LOG_LIMIT + 200


# -- programming errors are permanent -----------------------------------------------------


def keyword_only(*, to: str) -> None:
    raise AssertionError("never called")


def positional_only(to: str, /) -> None:
    raise AssertionError("never called")


def no_parameters() -> None:
    raise AssertionError("never called")


def hides_its_keywords(function: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper shows the wrapped signature but takes positional arguments
    only: the signature binds, the call fails."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        return function(*args)

    return wrapper


@hides_its_keywords
def wrapped(to: str, *, subject: str) -> None:
    raise AssertionError("never called")


UNFIT = [
    ("keyword-only, list payload", keyword_only, ["a@example.com"], "too many positional"),
    ("positional-only, dict payload", positional_only, {"to": "a"}, "positional only"),
    ("no parameters, a payload", no_parameters, {"x": 1}, "unexpected keyword"),
    ("no signature inspect can read", dict, ["a"], "no signature found"),
    ("a wrapper that takes no keywords", wrapped, {"to": "a", "subject": "b"}, "refused"),
]


@pytest.mark.parametrize(
    ("function", "payload", "fragment"),
    [case[1:] for case in UNFIT],
    ids=[case[0] for case in UNFIT],
)
def test_a_payload_that_does_not_fit_is_permanent_on_every_backend(
    app: Conveyor,
    function: Callable[..., Any],
    payload: Any,
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OUT-003: never retried whatever the retry policy, named in the error and logged once."""
    app.register("unfit", function)
    job = app.publish("unfit", payload)
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        app.process()
    got = app.get(job.id)
    assert (got.state, got.attempts) == ("permanently_failed", 1)
    assert got.last_error is not None
    assert got.last_error.kind == "permanent"
    assert fragment in got.last_error.message
    assert "unfit" in got.last_error.message
    (warning,) = worker_warnings(caplog)
    assert "cannot run" in warning


@pytest.mark.parametrize(
    "payload",
    [{"$bytes": "not base64!"}, {"when": {"$datetime": "yesterday"}}, [{"$decimal": "1..2"}]],
)
def test_a_payload_that_cannot_be_decoded_is_permanent_on_every_backend(
    app: Conveyor, payload: Any
) -> None:
    """OUT-003 / CODEC-004: a malformed typed value (written by another implementation, say)
    fails its job for good instead of raising out of the worker."""
    ran: list[Any] = []
    app.register("typed", lambda *args, **kwargs: ran.append(1))
    built = app.factory.build([Call("typed")], PublishOptions(), app.now())
    malformed = replace(built, requests=(replace(built.requests[0], payload=payload),))
    (job,) = app._store_jobs([malformed])
    app.process()
    got = app.get(job.id)
    assert ran == []
    assert (got.state, got.attempts) == ("permanently_failed", 1)
    assert got.last_error is not None
    assert "cannot be decoded" in got.last_error.message


# -- the bounds themselves --------------------------------------------------------------------


@given(text=st.text(max_size=300), limit=st.integers(40, 200))
@settings(max_examples=200, deadline=None)
def test_cut_texts_fit_their_limit_and_say_what_was_cut(text: str, limit: int) -> None:
    head, tail = cut(text, limit), cut_start(text, limit)
    assert len(head) <= limit
    assert len(tail) <= limit
    if len(text) <= limit:
        assert head == tail == text
        return
    kept, marker = head.rsplit("… (", 1)
    assert text.startswith(kept)
    assert marker == f"{len(text) - len(kept)} more characters)"
    marker, kept = tail.split("\n", 1)
    assert text.endswith(kept)
    assert marker == f"… ({len(text) - len(kept)} characters cut)"
