"""The command bus and the queue-job dispatcher: dispatch, queue, laziness, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.bus import (
    BusError,
    ClosureQueue,
    CommandBus,
    ConveyorQueue,
    HandlerContainer,
    HandlerNotFound,
    InvalidResult,
    PipeContainer,
    QueueJobDispatcher,
    Result,
    ResultFailed,
)

from .messages import CancelTicket, RecalculateSales, RecalculateSalesJob, SalesError, Unbound


def test_dispatch_runs_the_handler_through_the_middleware_now() -> None:
    log: list[str] = []
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok(c.event_id * 10))
    pipes = PipeContainer()
    pipes.bind("audit", lambda: lambda m, next: log.append(f"audit {m.event_id}") or next(m))
    bus = CommandBus(handlers, pipes).through(["audit"])

    result = bus.dispatch(RecalculateSales(4))

    assert result.value == 40
    assert log == ["audit 4"]


def test_handlers_are_built_lazily_once() -> None:
    built: list[str] = []

    class Handler:
        def __init__(self, name: str) -> None:
            built.append(name)

        def __call__(self, command: Any) -> Result[None]:
            return Result.ok()

    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: Handler("recalculate"))
    handlers.bind(CancelTicket, lambda: Handler("cancel"))
    bus = CommandBus(handlers)
    assert built == []
    bus.dispatch(RecalculateSales(1))
    bus.dispatch(RecalculateSales(2))
    assert built == ["recalculate"]
    assert handlers.built(RecalculateSales)
    assert not handlers.built(CancelTicket)


def test_a_bus_that_only_dispatches_never_creates_its_queue_nor_opens_a_store(
    tmp_path: Path,
) -> None:
    calls: list[str] = []
    apps: list[Conveyor] = []
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok())

    def make_queue() -> ConveyorQueue:
        calls.append("queue")
        app = Conveyor(f"sqlite:///{tmp_path / 'never.db'}")
        apps.append(app)
        return ConveyorQueue(app)

    bus = CommandBus(handlers, queue=make_queue)
    for n in range(3):
        assert bus.dispatch(RecalculateSales(n)).succeeded
    assert calls == []
    assert not bus.queue_created
    assert not (tmp_path / "never.db").exists()


def test_constructing_a_conveyor_queue_opens_nothing() -> None:
    app = Conveyor("memory://")
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok())
    queue = ConveyorQueue(app)
    bus = CommandBus(handlers, queue=lambda: queue)
    queue.dispatch_to(commands=bus).register(RecalculateSales, "sales.recalculate")
    bus.dispatch(RecalculateSales(1))
    assert app._store is None
    bus.queue(RecalculateSales(1))
    assert app._store is not None
    assert bus.queue_created


def test_queue_creates_the_queue_once_and_pushes() -> None:
    pushed: list[Any] = []
    created: list[int] = []
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok())

    def make_queue() -> ClosureQueue:
        created.append(1)
        return ClosureQueue(pushed.append)

    bus = CommandBus(handlers, queue=make_queue)
    bus.queue(RecalculateSales(1))
    bus.queue(RecalculateSales(2))
    assert pushed == [RecalculateSales(1), RecalculateSales(2)]
    assert created == [1]


def test_queueing_a_command_without_a_handler_fails_before_the_queue_is_touched() -> None:
    created: list[int] = []
    bus = CommandBus(HandlerContainer(), queue=lambda: created.append(1) or ClosureQueue(print))
    with pytest.raises(HandlerNotFound, match=r"no handler is bound for command Unbound"):
        bus.queue(Unbound(1))
    assert created == []


def test_a_bus_without_a_queue_says_how_to_give_it_one() -> None:
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok())
    with pytest.raises(BusError, match=r"queue=lambda"):
        CommandBus(handlers).queue(RecalculateSales(1))


def test_dispatching_without_a_handler_names_the_fix() -> None:
    handlers = HandlerContainer()
    handlers.bind(CancelTicket, lambda: lambda c: Result.ok())
    with pytest.raises(HandlerNotFound, match=r"Unbound \(bound: CancelTicket\); bind one"):
        CommandBus(handlers).dispatch(Unbound(1))


def test_the_bus_refuses_queue_jobs_and_the_job_dispatcher_refuses_commands() -> None:
    handlers = HandlerContainer()
    handlers.bind(RecalculateSalesJob, lambda: lambda j: Result.ok())
    handlers.bind(RecalculateSales, lambda: lambda c: Result.ok())
    bus = CommandBus(handlers, queue=lambda: ClosureQueue(print))
    jobs = QueueJobDispatcher(handlers)
    with pytest.raises(BusError, match="not a Command"):
        bus.dispatch(RecalculateSalesJob(1))  # type: ignore[arg-type]
    with pytest.raises(BusError, match="not a Command"):
        bus.queue(RecalculateSalesJob(1))  # type: ignore[arg-type]
    with pytest.raises(BusError, match="not a QueueJob"):
        jobs.dispatch(RecalculateSales(1))
    assert jobs.dispatch(RecalculateSalesJob(1)).succeeded


def test_a_raised_result_failure_becomes_the_result() -> None:
    seen: list[Result[Any]] = []

    def handler(command: RecalculateSales) -> Result[int]:
        Result.fail(SalesError.EVENT_NOT_FOUND).raise_if_failed()
        return Result.ok(1)  # pragma: no cover

    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: handler)
    bus = CommandBus(handlers).through([lambda m, next: seen.append(next(m)) or seen[-1]])
    result = bus.dispatch(RecalculateSales(1))
    assert result.errors.contains(SalesError.EVENT_NOT_FOUND)
    assert seen == [result]


def test_a_handler_must_answer_with_a_result() -> None:
    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: lambda c: None)
    with pytest.raises(InvalidResult, match="returned None"):
        CommandBus(handlers).dispatch(RecalculateSales(1))
    handlers.bind(CancelTicket, lambda: lambda c: Result.ok())
    bus = CommandBus(handlers).through([lambda m, next: "oops"])
    with pytest.raises(InvalidResult, match="answered 'oops'"):
        bus.dispatch(CancelTicket(1))


def test_other_exceptions_propagate_from_dispatch() -> None:
    def handler(command: Any) -> Result[None]:
        raise ResultFailed(Result.fail("x")) from KeyError("boom")

    def broken(command: Any) -> Result[None]:
        raise KeyError("boom")

    handlers = HandlerContainer()
    handlers.bind(RecalculateSales, lambda: handler)
    handlers.bind(CancelTicket, lambda: broken)
    bus = CommandBus(handlers)
    assert bus.dispatch(RecalculateSales(1)).failed
    with pytest.raises(KeyError):
        bus.dispatch(CancelTicket(1))


def test_conveyor_queue_registration_refuses_what_cannot_work() -> None:
    from dataclasses import dataclass

    from conveyor import ConfigurationError

    @dataclass(frozen=True)
    class Plain:
        n: int

    app = Conveyor("memory://")
    app.register("sales.taken", lambda: None)
    queue = ConveyorQueue(app)
    with pytest.raises(BusError, match="neither a Command nor a QueueJob"):
        queue.register(Plain, "tests.plain")
    with pytest.raises(BusError, match="unique but has no identifier"):
        queue.register(RecalculateSales, "sales.recalculate", unique=True)
    with pytest.raises(ConfigurationError, match=r"already registered for 'sales\.taken'"):
        queue.register(RecalculateSales, "sales.taken")
    assert RecalculateSales not in queue.serializer  # nothing half-registered
    queue.register(RecalculateSales, "sales.recalculate")
    with pytest.raises(BusError, match="already registered with this queue"):
        queue.register(RecalculateSales, "sales.recalculate")
    assert app._store is None
