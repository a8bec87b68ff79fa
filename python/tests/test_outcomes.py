"""What a handler's result does to its job: success, temporary, permanent, waiting, die.

Spec: OUT-001..008, RETRY-006/007, JOB-009.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import (
    Conveyor,
    Die,
    ManualClock,
    PermanentError,
    RetryPolicy,
    TemporaryError,
    UnknownType,
    Waiting,
)

from .conftest import AppFactory
from .core_support import RecordingNotifier, memory_app


@given(
    delay_ms=st.none() | st.integers(0, 10**7),
    default_ms=st.integers(1, 10**6),
    waits=st.integers(1, 4),
)
@settings(max_examples=40, deadline=None)
def test_waiting_never_counts_an_attempt_and_retries_after_the_delay(
    delay_ms: int | None, default_ms: int, waits: int
) -> None:
    """OUT-004: attempts and request attempts stay 0; due again after delay or waiting_delay."""
    app = memory_app(waiting_delay=timedelta(milliseconds=default_ms))
    calls: list[int] = []

    def poll() -> None:
        calls.append(1)
        if len(calls) <= waits:
            delay = None if delay_ms is None else timedelta(milliseconds=delay_ms)
            raise Waiting("not yet", delay=delay)

    app.register("poll", poll, retry=RetryPolicy("constant", 1, 1, max_attempts=1))
    job = app.publish("poll")
    expected_delay = timedelta(milliseconds=default_ms if delay_ms is None else delay_ms)
    for _ in range(waits):
        assert app.process(limit=1).jobs == 1
        got = app.get(job.id)
        assert (got.state, got.attempts) == ("waiting", 0)
        assert (got.requests[0].state, got.requests[0].attempts) == ("pending", 0)
        assert got.available_at == app.now() + expected_delay
        if expected_delay:
            app.clock.advance(expected_delay - timedelta(milliseconds=1))  # type: ignore[attr-defined]
            assert app.process(limit=1).jobs == 0
            app.clock.advance(timedelta(milliseconds=1))  # type: ignore[attr-defined]
    app.process(limit=1)
    done = app.get(job.id)
    assert (done.state, done.attempts) == ("finished", 1)
    assert len(calls) == waits + 1


def test_waiting_uses_the_app_waiting_delay_on_every_backend(make_app: AppFactory) -> None:
    """OUT-004: Waiting() without a delay waits the configured waiting_delay."""
    app = make_app(waiting_delay=timedelta(seconds=7))

    def poll() -> None:
        raise Waiting("not yet")

    app.register("poll", poll)
    job = app.publish("poll")
    app.process(limit=1)
    got = app.get(job.id)
    assert (got.state, got.attempts, got.requests[0].attempts) == ("waiting", 0, 0)
    assert got.available_at == app.now() + timedelta(seconds=7)
    assert got.last_error is None


def test_the_default_waiting_delay_is_one_second() -> None:
    """OUT-004: 1000 ms unless configured."""
    app = memory_app()

    def poll() -> None:
        raise Waiting()

    app.register("poll", poll)
    job = app.publish("poll")
    app.process(limit=1)
    assert app.get(job.id).available_at == app.now() + timedelta(seconds=1)


def test_a_permanent_error_fails_the_job_with_its_error(app: Conveyor) -> None:
    """OUT-002: PermanentError ends permanently_failed at once, whatever attempts remain."""

    def reject(order: int) -> None:
        raise PermanentError(f"order {order} does not exist")

    app.register("reject", reject)
    job = app.publish("reject", {"order": 42})
    app.process()
    got = app.get(job.id)
    assert (got.state, got.attempts) == ("permanently_failed", 1)
    assert got.last_error is not None
    assert (got.last_error.kind, got.last_error.message) == ("permanent", "order 42 does not exist")
    assert got.last_error.type == "PermanentError"
    assert got.requests[0].error == got.last_error


@pytest.mark.parametrize(
    "error",
    [ConnectionError("refused"), KeyError("missing"), TemporaryError("later"), RuntimeError()],
)
def test_any_other_error_is_temporary(app: Conveyor, error: Exception) -> None:
    """OUT-003/005: an error not reported as permanent, waiting or die is temporary."""

    def flaky() -> None:
        raise error

    app.register("flaky", flaky)
    job = app.publish("flaky")
    app.process()
    got = app.get(job.id)
    assert got.state == "temporarily_failed"
    assert got.last_error is not None
    assert got.last_error.kind == "temporary"
    assert got.last_error.type == type(error).__qualname__
    assert got.last_error.message


def test_a_payload_that_does_not_fit_the_handler_is_permanent(app: Conveyor) -> None:
    """OUT-003: a call with wrong arguments is a programming error: permanently_failed."""
    ran: list[int] = []
    app.register("send", lambda to, subject: ran.append(1))
    job = app.publish("send", {"to": "a@example.com", "subjet": "typo"})
    app.process()
    got = app.get(job.id)
    assert ran == []
    assert got.state == "permanently_failed"
    assert got.last_error is not None
    assert got.last_error.kind == "permanent"
    assert "payload does not fit" in got.last_error.message


def test_a_type_error_inside_the_handler_body_is_temporary(app: Conveyor) -> None:
    """OUT-003: only the call itself is a programming error; a TypeError inside is temporary."""

    def add(a: int, b: int) -> None:
        _ = a + b + "oops"  # type: ignore[operator]

    app.register("add", add)
    job = app.publish("add", {"a": 1, "b": 2})
    app.process()
    got = app.get(job.id)
    assert got.state == "temporarily_failed"
    assert got.last_error is not None
    assert got.last_error.type == "TypeError"


def test_publishing_an_unknown_type_is_refused(app: Conveyor) -> None:
    """JOB-009: no handler for the type: UnknownType, and nothing is stored."""
    with pytest.raises(UnknownType, match="no handler is registered for request type 'ghost'"):
        app.publish("ghost", {"a": 1})
    assert app.status() == []


def test_a_worker_without_the_handler_fails_the_job_for_good(make_app: AppFactory) -> None:
    """OUT-003: a request type the worker has no handler for is a permanent error."""
    publisher = make_app()
    publisher.register("resize", lambda: None)
    job = publisher.publish("resize")
    worker = make_app(store=publisher.store)
    worker.process()
    got = worker.get(job.id)
    assert got.state == "permanently_failed"
    assert got.last_error is not None
    assert "resize" in got.last_error.message


def raise_die(cause: BaseException | None) -> None:
    if cause is None:
        raise Die("out of memory")
    raise Die("stop this worker") from cause


@pytest.mark.parametrize(
    ("cause", "state"),
    [
        (TemporaryError("database restarting"), "temporarily_failed"),
        (ConnectionError("reset"), "temporarily_failed"),
        (PermanentError("corrupt input"), "permanently_failed"),
        (Waiting("not yet"), "permanently_failed"),
        (None, "permanently_failed"),
    ],
)
def test_die_records_the_cause_then_stops_the_worker(
    app: Conveyor, cause: BaseException | None, state: str
) -> None:
    """OUT-006: die records the underlying outcome, and the worker claims nothing more."""
    ran: list[str] = []

    def fatal(name: str) -> None:
        ran.append(name)
        raise_die(cause)

    app.register("fatal", fatal)
    first = app.publish("fatal", {"name": "first"})
    second = app.publish("fatal", {"name": "second"})
    stats = app.worker(stop_when_empty=True, handle_signals=False).run()
    assert ran == ["first"]
    assert "die" in stats.stop_reason
    assert stats.jobs == 1
    assert app.get(first.id).state == state
    assert app.get(second.id).state == "ready"


def test_the_notifier_hears_the_threshold_and_the_final_failure(
    make_app: AppFactory, clock: ManualClock
) -> None:
    """RETRY-006/007: a call at notify_after, a call when the job fails for good, after commit."""
    notifier = RecordingNotifier()
    app = make_app(notifier=notifier)

    def flaky() -> None:
        raise ConnectionError("down")

    policy = RetryPolicy("constant", 1000, 1000, max_attempts=4, notify_after=2)
    app.register("flaky", flaky, retry=policy)
    job = app.publish("flaky")
    seen = []
    for _ in range(4):
        app.process(limit=1)
        seen.append(list(notifier.calls))
        clock.advance(1)
    assert seen[0] == []
    assert seen[1] == [("threshold", job.id, "temporarily_failed", 2)]
    assert seen[2] == seen[1]
    assert seen[3] == [*seen[1], ("failed", job.id, "permanently_failed", 4)]


def test_a_permanent_error_notifies_once(app: Conveyor) -> None:
    """RETRY-007: a permanent error notifies failed once; a failing notifier changes nothing."""
    notifier = RecordingNotifier()
    app.notifier = notifier

    def reject() -> None:
        raise PermanentError("no")

    app.register("reject", reject)
    job = app.publish("reject")
    app.process()
    assert notifier.calls == [("failed", job.id, "permanently_failed", 1)]


def test_a_notifier_that_raises_does_not_undo_the_state_change(app: Conveyor) -> None:
    """MACH-010: a failing notifier neither undoes nor blocks the recorded outcome."""

    class Broken:
        def notify(self, kind: str, job: object) -> None:
            raise OSError("smtp down")

    app.notifier = Broken()

    def reject() -> None:
        raise PermanentError("no")

    app.register("reject", reject)
    job = app.publish("reject")
    app.process()
    assert app.get(job.id).state == "permanently_failed"
