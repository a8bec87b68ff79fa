"""Queue -> worker -> handler, on SQLite and PostgreSQL: outcomes, routing, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import Conveyor, ManualClock
from conveyor.bus import (
    BusError,
    ClosureQueue,
    ConveyorQueue,
    Error,
    HandlerNotFound,
    InvalidMessage,
    LogJobDispatch,
    MessageNotRegistered,
    Result,
    StoreLocks,
    WithoutOverlapping,
)

from .messages import CancelTicket, RecalculateSales, RecalculateSalesJob, Rich, SalesError, Unbound
from .support import END_TO_END, Sales, wire_sales

pytestmark = END_TO_END


def recalculation_endpoint(sales: Sales, form: dict[str, str]) -> tuple[int, str]:
    """An HTTP-like caller: validate, queue, answer 202 at once."""
    if not form.get("event", "").isdigit():
        return 422, "event must be an integer"
    sales.bus.queue(RecalculateSales(int(form["event"])))
    return 202, ""


def test_an_endpoint_queues_a_command_and_a_worker_runs_it(app: Conveyor) -> None:
    sales = wire_sales(app)

    assert recalculation_endpoint(sales, {"event": "7"}) == (202, "")

    assert sales.log == []  # nothing ran in the request
    (job,) = app.jobs()
    assert job.state == "ready"
    assert job.requests[0].type == "sales.recalculate"
    assert job.requests[0].payload == {"version": 1, "data": {"event_id": 7}}

    stats = app.process()

    assert stats.outcomes == {"finished": 1}
    assert sales.log == ["command 7"]
    assert sales.job_ids == [job.id]  # current_job() inside the worker
    assert app.get(job.id).state == "finished"


def test_a_temporary_code_is_retried_after_its_delay(app: Conveyor, clock: ManualClock) -> None:
    sales = wire_sales(app)
    sales.answers[7] = [Result.fail(Error("report is being rebuilt", SalesError.REPORT_LOCKED))]
    sales.bus.queue(RecalculateSales(7))
    start = clock.now()

    app.process()
    (job,) = app.jobs()
    assert job.state == "temporarily_failed"
    assert job.available_at == start + timedelta(seconds=30)
    assert job.last_error is not None
    assert "[SalesError.REPORT_LOCKED] report is being rebuilt" in job.last_error.message

    clock.advance(timedelta(seconds=29))
    assert app.process().jobs == 0
    clock.advance(timedelta(seconds=1))
    assert app.process().outcomes == {"finished": 1}

    assert sales.log == ["command 7", "command 7"]
    assert app.get(job.id).attempts == 2


def test_a_permanent_code_ends_permanently_failed(app: Conveyor, clock: ManualClock) -> None:
    sales = wire_sales(app)
    sales.answers[9] = [Result.fail(Error("no such event", SalesError.EVENT_NOT_FOUND))]
    sales.bus.queue(RecalculateSales(9))

    app.process()
    clock.advance(timedelta(days=1))
    app.process()

    (job,) = app.jobs()
    assert job.state == "permanently_failed"
    assert job.last_error is not None
    assert job.last_error.kind == "permanent"
    assert "[SalesError.EVENT_NOT_FOUND] no such event" in job.last_error.message
    assert sales.log == ["command 9"]


def test_queue_jobs_are_dispatched_to_the_job_dispatcher(app: Conveyor) -> None:
    sales = wire_sales(app)
    sales.bus.through([lambda m, next: sales.log.append("bus middleware") or next(m)])
    sales.jobs.through([lambda m, next: sales.log.append("job middleware") or next(m)])

    sales.queue.push(RecalculateSalesJob(3))  # e.g. from a domain-event listener
    app.process()

    assert sales.log == ["job middleware", "job 3"]


def test_middleware_layers_on_the_worker(app: Conveyor) -> None:
    log: list[str] = []

    def recorder(name: str) -> Any:
        def middleware(message: Any, next: Any) -> Any:
            log.append(f"> {name}")
            answer = next(message)
            log.append(f"< {name}")
            return answer

        return middleware

    def register(queue: ConveyorQueue) -> None:
        queue.register(RecalculateSales, "sales.recalculate", middleware=[recorder("type")])

    sales = wire_sales(app, register=register)
    sales.pipes.bind("queue", lambda: recorder("queue"))
    sales.queue.through(["queue"]).run_through([recorder("job")])
    sales.bus.through([recorder("bus")])

    sales.bus.queue(RecalculateSales(1))
    assert log == ["> queue", "< queue"]
    app.process()
    assert log[2:] == ["> job", "> type", "> bus", "< bus", "< type", "< job"]


def test_per_type_settings_and_routing(app: Conveyor, clock: ManualClock) -> None:
    def register(queue: ConveyorQueue) -> None:
        queue.register(
            RecalculateSales,
            "sales.recalculate",
            queue="reporting",
            priority=50,
            serial_group=lambda m: f"event-{m.event_id}",
            identifier=lambda m: f"recalculate-{m.event_id}",
            unique=True,
            delay=timedelta(seconds=10),
        )
        queue.register(RecalculateSalesJob, "sales.recalculate_job")

    sales = wire_sales(app, register=register)
    sales.bus.queue(RecalculateSales(4))
    sales.bus.queue(RecalculateSales(4))  # same identifier: the work is done once

    first, _duplicate = app.jobs()
    assert (first.queue, first.priority, first.serial_group, first.identifier, first.unique) == (
        "reporting",
        50,
        "event-4",
        "recalculate-4",
        True,
    )
    assert first.available_at == clock.now() + timedelta(seconds=10)

    # A ClosureQueue in front routes queue jobs to a queue of their own, at push time.
    routed = ClosureQueue(sales.queue.push).bind(
        RecalculateSalesJob, lambda m: sales.queue.push(m, queue="slow", priority=200)
    )
    routed.push(RecalculateSalesJob(4))
    third = app.jobs()[2]
    assert (third.queue, third.priority) == ("slow", 200)

    clock.advance(timedelta(seconds=10))
    assert app.process(queues=("slow",)).jobs == 1
    app.process(queues=("reporting",))
    assert sorted(job.state for job in app.jobs()) == ["finished", "finished", "redundant"]
    assert sales.log == ["job 4", "command 4"]


def test_bad_input_is_refused_at_queue_time(app: Conveyor) -> None:
    sales = wire_sales(app)
    sales.bus.handlers.bind(CancelTicket, lambda: lambda c: Result.ok())
    sales.bus.handlers.bind(Rich, lambda: lambda c: Result.ok())
    sales.queue.register(Rich, "tests.rich")

    with pytest.raises(HandlerNotFound, match="no handler is bound for command Unbound"):
        sales.bus.queue(Unbound(1))
    with pytest.raises(MessageNotRegistered, match=r"queue.register\(CancelTicket"):
        sales.bus.queue(CancelTicket(1))
    with pytest.raises(InvalidMessage, match=r"tests.rich.moment is a naive datetime"):
        sales.bus.queue(rich_with_naive_datetime())

    bare = ConveyorQueue(app)
    bare.register(Unbound, "tests.unbound")
    with pytest.raises(BusError, match=r"queue.dispatch_to\(commands=bus\)"):
        bare.push(Unbound(1))
    bare.dispatch_to(commands=sales.bus)
    with pytest.raises(HandlerNotFound, match="so a worker could never run it"):
        bare.push(Unbound(1))
    with pytest.raises(BusError, match="neither a Command nor a QueueJob"):
        bare.push("text")  # type: ignore[arg-type]

    assert app.jobs() == []


def rich_with_naive_datetime() -> Rich:
    from decimal import Decimal
    from uuid import UUID

    from .messages import Channel, Money

    return Rich(
        flag=True,
        count=1,
        ratio=1.0,
        name="n",
        blob=b"",
        day=datetime(2026, 1, 1, tzinfo=UTC).date(),
        moment=datetime(2026, 1, 1),
        price=Money(Decimal(1), "EUR"),
        ident=UUID(int=0),
        channel=Channel.WEB,
        tags=(),
        pair=(1, "a"),
        scores={},
        history=[],
    )


def test_payloads_that_no_longer_fit_fail_permanently_and_newer_ones_wait(
    app: Conveyor,
) -> None:
    sales = wire_sales(app)
    broken = app.publish("sales.recalculate", {"version": 1, "data": {"event_id": "x"}})
    newer = app.publish("sales.recalculate", {"version": 2, "data": {"event_id": 1}})

    app.process()

    broken_job, newer_job = app.get(broken.id), app.get(newer.id)
    assert broken_job.state == "permanently_failed"
    assert broken_job.last_error is not None
    assert "event_id should be an integer, not 'x'" in broken_job.last_error.message
    assert newer_job.state == "temporarily_failed"
    assert newer_job.last_error is not None
    assert "newer than this release knows" in newer_job.last_error.message
    assert sales.log == []


def test_run_now_executes_with_the_same_semantics(app: Conveyor, clock: ManualClock) -> None:
    sales = wire_sales(app)
    sales.answers[2] = [Result.fail(SalesError.REPORT_LOCKED)]

    done = sales.queue.run_now(RecalculateSales(1))
    retried = sales.queue.run_now(RecalculateSales(2))

    assert done.state == "finished"
    assert retried.state == "temporarily_failed"
    assert retried.available_at == clock.now() + timedelta(seconds=30)
    assert sales.log == ["command 1", "command 2"]
    assert sales.job_ids == [done.id, retried.id]


def test_without_overlapping_makes_the_second_job_wait_then_run(
    app: Conveyor, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    holder: dict[str, Any] = {}

    def register(queue: ConveyorQueue) -> None:
        overlap = WithoutOverlapping(
            lambda m: f"sales-report:{m.event_id}",  # shared by the command and the job
            StoreLocks(app),
            release_after=timedelta(seconds=5),
        )
        queue.register(RecalculateSales, "sales.recalculate", middleware=[overlap])
        queue.register(RecalculateSalesJob, "sales.recalculate_job", middleware=[overlap])

    sales = wire_sales(app, register=register)
    sales.queue.run_through([LogJobDispatch()])
    first = sales.queue.push(RecalculateSales(5))
    second = sales.queue.push(RecalculateSalesJob(5))
    other = sales.queue.push(RecalculateSalesJob(6))

    original = sales.recalculate

    def recalculate_and_meanwhile_run_the_others(message: Any) -> Result[Any]:
        if message == RecalculateSales(5):
            # While the first holds the lock, a "second worker" takes the other two jobs.
            holder["second"] = app.execute(second.id, worker_id="second")
            holder["other"] = app.execute(other.id, worker_id="second")
        return original(message)

    sales.bus.handlers.bind(RecalculateSales, lambda: recalculate_and_meanwhile_run_the_others)
    caplog.set_level("INFO", logger="conveyor.bus")

    assert app.execute(first.id).state == "finished"

    assert holder["second"].state == "waiting"
    assert holder["second"].attempts == 0  # waiting for a lock costs no attempt
    assert holder["second"].available_at == clock.now() + timedelta(seconds=5)
    assert holder["other"].state == "finished"  # another key is not held back
    assert sales.log == ["job 6", "command 5"]
    clock.advance(timedelta(seconds=5))
    assert app.process().outcomes == {"finished": 1}
    assert sales.log == ["job 6", "command 5", "job 5"]
    assert f"Ran queue job RecalculateSalesJob (job {second.id}, attempt 1)." in caplog.messages


def test_the_sales_wiring_can_be_rebuilt_for_another_app(app: Conveyor) -> None:
    """A worker process builds the same wiring on its own app over the same store."""
    producer = wire_sales(app)
    producer.bus.queue(RecalculateSales(11))
    worker_app = Conveyor(app.url, clock=app.clock, table_prefix=app.table_prefix)
    try:
        worker = wire_sales(worker_app)
        worker_app.process()
        assert worker.log == ["command 11"]
        assert producer.log == []
    finally:
        worker_app.close()
    assert app.jobs()[0].state == "finished"
