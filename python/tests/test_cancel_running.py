"""Cancelling a running job (spec.md#cancel-running), on every store.

A cancel request is recorded on the job; the worker learns of it from a heartbeat's answer
(or at once, when the cancel is made in its own process) and the handler stops. Handlers
block on events the test sets; a cancel made with ``app.report(..., "cancel")`` records the
request without telling this process, so only the heartbeat can carry it. No sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import timedelta
from typing import Any

import pytest

import conveyor
from conveyor import Conveyor, InvalidTransition, JobCancelled, JobContext, TemporaryError

BOUND = 20.0
LEASE = timedelta(milliseconds=300)  # heartbeats every 0.1 s: the latency of a request


def _worker_thread(app: Conveyor, concurrency: int) -> tuple[Any, threading.Thread]:
    worker: Any = app.worker(
        concurrency=concurrency, handle_signals=False, idle_delay=0.05, lease=LEASE
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def _until_ended(app: Conveyor, job_id: str) -> Any:
    return app.wait(job_id, timeout=BOUND, poll=0.02)


def test_a_cancel_of_a_processing_job_records_a_request(app: Conveyor, clock: Any) -> None:
    """CANCEL-001..003: the job keeps running; the first time is kept; the heartbeat's answer
    tells the lease holder; the outcome cancelled ends it, with no retry."""
    app.register("work", lambda: None)
    job = app.publish("work")
    (claimed,) = app.claim("w1")
    assert claimed.lease is not None
    token = claimed.lease.token
    asked = app.cancel(job.id)
    assert asked.state == "processing"
    assert asked.cancel_requested_at == clock.now()
    clock.advance(timedelta(seconds=5))
    again = app.cancel(job.id)
    assert again.cancel_requested_at == asked.cancel_requested_at
    assert app.heartbeat(job.id, token).cancel_requested
    ended = app.report(job.id, "confirm_cancel", {"lease_token": token})
    assert ended.state == "cancelled"
    assert ended.lease is None
    assert [request.state for request in ended.requests] == ["cancelled"]
    clock.advance(timedelta(hours=1))
    assert app.claim("w1") == []


def test_the_outcome_cancelled_without_a_request_is_refused(app: Conveyor) -> None:
    app.register("work", lambda: None)
    job = app.publish("work")
    (claimed,) = app.claim("w1")
    assert claimed.lease is not None
    with pytest.raises(InvalidTransition):
        app.report(job.id, "confirm_cancel", {"lease_token": claimed.lease.token})
    assert app.get(job.id).state == "processing"


def test_a_rescued_job_with_a_cancel_request_ends_cancelled(app: Conveyor, clock: Any) -> None:
    """CANCEL-005: its worker died after the request; the job is not retried."""
    app.register("work", lambda: None)
    job = app.publish("work")
    app.claim("w1", lease_ms=1000)
    app.cancel(job.id)
    clock.advance(timedelta(seconds=2))
    (rescued,) = app.rescue_expired()
    assert rescued.state == "cancelled"
    assert rescued.last_error is not None
    assert rescued.last_error.kind == "lease_expired"
    clock.advance(timedelta(hours=1))
    assert app.claim("w1") == []


def test_retry_clears_the_request(app: Conveyor) -> None:
    """CANCEL-006: the next attempt is not cancelled by the old request."""
    app.register("work", lambda: None)
    job = app.publish("work")
    (claimed,) = app.claim("w1")
    assert claimed.lease is not None
    app.cancel(job.id)
    app.report(job.id, "confirm_cancel", {"lease_token": claimed.lease.token})
    retried = app.retry(job.id)
    assert retried.state == "ready"
    assert not retried.cancel_requested
    (again,) = app.claim("w1")
    assert again.lease is not None
    assert not app.heartbeat(job.id, again.lease.token).cancel_requested
    assert app.report(job.id, "succeed", {"lease_token": again.lease.token}).state == "finished"


def test_a_sync_handler_that_polls_the_request_ends_cancelled(app: Conveyor) -> None:
    """CANCEL-002/003: the heartbeat's answer reaches the handler, which stops; no retry."""
    started = threading.Event()
    saw: list[bool] = []

    def long_running(context: JobContext) -> None:
        started.set()
        assert context.wait_for_cancel(BOUND)  # a step of work, cut short by the request
        saw.append(conveyor.cancel_requested())
        conveyor.check_cancelled()

    app.register("long", long_running, pass_context=True)
    job = app.publish("long")
    worker, thread = _worker_thread(app, concurrency=2)
    try:
        assert started.wait(BOUND)
        app.report(job.id, "cancel", {})  # recorded only: the heartbeat must carry it
        ended = _until_ended(app, job.id)
    finally:
        worker.stop()
        thread.join(BOUND)
    assert saw == [True]
    assert ended.state == "cancelled"
    assert ended.attempts == 1
    assert ended.last_error is None
    assert worker.stats.outcomes == {"cancelled": 1}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_async_handler_is_cancelled(app: Conveyor, concurrency: int) -> None:
    """CANCEL-002: the handler's task gets CancelledError; the job ends cancelled."""
    started = threading.Event()
    interrupted = threading.Event()

    async def long_running() -> None:
        started.set()
        try:
            await asyncio.sleep(BOUND)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    app.register("long", long_running)
    job = app.publish("long")
    worker, thread = _worker_thread(app, concurrency)
    try:
        assert started.wait(BOUND)
        asked = app.cancel(job.id)  # in this process: the task is cancelled at once
        assert asked.state == "processing"
        ended = _until_ended(app, job.id)
    finally:
        worker.stop()
        thread.join(BOUND)
    assert interrupted.is_set()
    assert ended.state == "cancelled"
    assert ended.attempts == 1


def test_an_async_handler_learns_of_the_request_from_the_heartbeat(app: Conveyor) -> None:
    started = threading.Event()

    async def long_running() -> None:
        started.set()
        await asyncio.sleep(BOUND)

    app.register("long", long_running)
    job = app.publish("long")
    worker, thread = _worker_thread(app, concurrency=2)
    try:
        assert started.wait(BOUND)
        app.report(job.id, "cancel", {})
        ended = _until_ended(app, job.id)
    finally:
        worker.stop()
        thread.join(BOUND)
    assert ended.state == "cancelled"


@pytest.mark.parametrize(
    ("outcome", "state"),
    [("return", "finished"), ("temporary", "cancelled"), ("permanent", "permanently_failed")],
)
def test_a_handler_that_ignores_the_request_ends_as_the_spec_says(
    app: Conveyor, outcome: str, state: str
) -> None:
    """CANCEL-004: a success finishes the job, a permanent error fails it, a temporary error
    cancels it: never a retry after a cancel request."""
    started = threading.Event()
    go_on = threading.Event()

    def stubborn() -> None:
        started.set()
        go_on.wait(BOUND)
        if outcome == "temporary":
            raise TemporaryError("the service went away")
        if outcome == "permanent":
            raise conveyor.PermanentError("no such account")

    app.register("stubborn", stubborn)
    job = app.publish("stubborn")
    worker, thread = _worker_thread(app, concurrency=2)
    try:
        assert started.wait(BOUND)
        assert app.cancel(job.id).cancel_requested
        go_on.set()
        ended = _until_ended(app, job.id)
    finally:
        worker.stop()
        thread.join(BOUND)
    assert ended.state == state
    assert ended.attempts == 1


@pytest.mark.parametrize("seen", [True, False], ids=["signalled", "not-seen-yet"])
def test_a_multi_request_job_stops_between_requests(app: Conveyor, seen: bool) -> None:
    """CANCEL-004: the request that succeeded stays succeeded; the next never starts, whether
    the worker was told of the request (in its process) or not yet (a lease too long for a
    heartbeat in time: the success between requests ends the job)."""
    started = threading.Event()
    go_on = threading.Event()
    ran: list[str] = []

    def first() -> None:
        started.set()
        go_on.wait(BOUND)
        ran.append("first")

    app.register("first", first)
    app.register("second", lambda: ran.append("second"))
    job = app.publish_job([conveyor.Call("first"), conveyor.Call("second")])
    worker: Any = app.worker(concurrency=2, handle_signals=False, idle_delay=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(BOUND)
        if seen:
            app.cancel(job.id)
        else:
            app.report(job.id, "cancel", {})  # recorded only
        go_on.set()
        ended = _until_ended(app, job.id)
    finally:
        worker.stop()
        thread.join(BOUND)
    assert ran == ["first"]
    assert ended.state == "cancelled"
    assert [request.state for request in ended.requests] == ["succeeded", "cancelled"]


def test_job_cancelled_without_a_request_is_a_temporary_error(app: Conveyor) -> None:
    def gives_up() -> None:
        raise JobCancelled("nobody asked")

    app.register("gives_up", gives_up)
    job = app.run_now("gives_up")
    assert job.state == "temporarily_failed"
    assert conveyor.cancel_requested() is False
    conveyor.check_cancelled()  # outside a handler: nothing to raise


def test_a_cancel_request_that_arrives_after_the_handler_ended_leaves_the_task_alone() -> None:
    """The handler runs in the slot's own task, which goes on to the next job: a request
    delivered once the handler's block ended must not cancel that task."""
    from conveyor.cancellation import Cancellation

    async def scenario() -> int:
        task = asyncio.current_task()
        assert task is not None
        cancellation = Cancellation("job", 1)
        with cancellation.cancelling(task):
            await asyncio.sleep(0)
            cancellation.request()  # its delivery is queued on the loop: it runs after the block
        for _ in range(3):
            await asyncio.sleep(0)
        return task.cancelling()

    assert asyncio.run(scenario()) == 0


def test_a_handler_that_swallows_the_cancel_leaves_none_for_the_next_job(app: Conveyor) -> None:
    """The next job of the same slot (the same task) runs as if no cancel had come."""
    started = threading.Event()
    seen: dict[str, int] = {}

    @app.handler("swallow")
    async def swallow() -> str:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "kept"

    @app.handler("next")
    async def next_job() -> str:
        task = asyncio.current_task()
        assert task is not None
        seen["cancelling"] = task.cancelling()
        await asyncio.sleep(0.01)  # would raise if a cancel were still pending
        return "ran"

    first = app.publish("swallow")
    second = app.publish("next")
    worker = app.worker(batch_size=2, stop_when_empty=True, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(10)
    app.cancel(first.id)
    thread.join(20)
    assert not thread.is_alive()
    assert app.get(first.id).state == "finished"  # CANCEL-004: the last request's success
    assert (app.get(second.id).state, app.get(second.id).result) == ("finished", "ran")
    assert seen == {"cancelling": 0}
