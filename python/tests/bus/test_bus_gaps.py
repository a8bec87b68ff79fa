"""Queueing returns the job, joins the caller's transaction (sync and async), takes per-push
options, refuses handlers bound as factories, and carries attrs and pydantic commands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from conveyor import Conveyor, RetryPolicy
from conveyor.aio import async_url
from conveyor.bus import (
    CommandBus,
    ConveyorQueue,
    HandlerContainer,
    InTransaction,
    InvalidBinding,
    InvalidMessage,
    QueueJobDispatcher,
    Result,
    queue_inside,
)

from .messages import Notify, RecalculateSales
from .structured_messages import Address, Line, PlaceOrder, ShipOrder
from .support import wire_sales


@pytest.fixture
def caller_engine(app: Conveyor) -> Iterator[Engine]:
    """The application's own engine on the store's database."""
    if app.url.startswith("memory:"):
        pytest.skip("the memory store has no transactions of the caller's")
    engine = create_engine(app.url)
    yield engine
    engine.dispose()


def test_queue_returns_the_job_without_building_the_handler(app: Conveyor) -> None:
    built: list[str] = []
    handlers = HandlerContainer()

    def factory() -> Any:
        built.append("handler")
        return lambda message: Result.ok(None)

    handlers.bind(RecalculateSales, factory)
    queue = ConveyorQueue(app)
    bus = CommandBus(handlers, queue=lambda: queue)
    queue.dispatch_to(commands=bus).register(RecalculateSales, "sales.recalculate")

    job = bus.queue(RecalculateSales(3))

    assert job.id == app.jobs()[0].id
    assert built == []  # the web process never built the handler
    app.process()
    assert built == ["handler"]
    assert app.get(job.id).state == "finished"


def test_a_push_takes_tags_dependencies_batch_and_a_retry_policy(app: Conveyor) -> None:
    sales = wire_sales(app)
    first = sales.bus.queue(RecalculateSales(1))
    batch = app.open_batch()
    job = sales.bus.queue(
        RecalculateSales(2),
        tags=["event:2"],
        depends_on=[first.id],
        batch=batch,
        retry=RetryPolicy("constant", 5000, 5000, max_attempts=2),
    )
    stored = app.get(job.id)
    assert stored.tags == ("event:2",)
    assert stored.depends_on == (first.id,)
    assert stored.batch_id == batch.id
    assert stored.retry_policy.max_attempts == 2
    assert [j.id for j in app.jobs(tag="event:2")] == [job.id]


def test_a_push_joins_the_callers_connection(app: Conveyor, caller_engine: Engine) -> None:
    sales = wire_sales(app)
    with caller_engine.connect() as connection:
        sales.bus.queue(RecalculateSales(1), connection=connection)
        connection.rollback()
        with queue_inside(connection):
            kept = sales.bus.queue(RecalculateSales(2))
        connection.commit()
    assert [(j.id, j.requests[0].payload["data"]) for j in app.jobs()] == [
        (kept.id, {"event_id": 2})
    ]


def test_a_failed_handler_in_a_transaction_leaves_no_queued_job(
    app: Conveyor, caller_engine: Engine
) -> None:
    """The handler queues a follow-up job, then fails: the job is rolled back with it."""
    queue = ConveyorQueue(app)
    job_handlers = HandlerContainer()
    job_handlers.bind(Notify, lambda: lambda message: Result.ok(None))
    jobs = QueueJobDispatcher(job_handlers)
    handlers = HandlerContainer()

    def recalculate(message: RecalculateSales) -> Result[Any]:
        queue.push(Notify(message.event_id))
        return Result.fail("the report is locked") if message.event_id < 0 else Result.ok(None)

    handlers.bind(RecalculateSales, lambda: recalculate)
    bus = CommandBus(handlers, queue=lambda: queue).through(
        [InTransaction(caller_engine.begin, queue_inside=True)]
    )
    queue.dispatch_to(commands=bus, jobs=jobs).register(Notify, "users.notify")

    assert bus.dispatch(RecalculateSales(-1)).failed
    assert app.jobs() == []
    assert bus.dispatch(RecalculateSales(5)).succeeded
    assert [j.requests[0].payload["data"] for j in app.jobs()] == [{"user_id": 5}]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_queue_async_joins_the_callers_session(app: Conveyor, anyio_backend: str) -> None:
    sales = wire_sales(app)
    if app.url.startswith("memory:"):
        job = await sales.bus.queue_async(RecalculateSales(1))
        assert app.get(job.id).state == "ready"
        return
    engine = create_async_engine(async_url(app.url))
    try:
        async with AsyncSession(engine) as session:
            await sales.bus.queue_async(RecalculateSales(1), connection=session)
            await session.rollback()
            kept = await sales.bus.queue_async(RecalculateSales(2), connection=session, tags="x")
            await session.commit()
        alone = await sales.bus.queue_async(RecalculateSales(3))
    finally:
        await engine.dispose()
        await sales.queue.async_app.engine.dispose()
    listed = app.jobs()
    assert [(j.id, j.requests[0].payload["data"]["event_id"]) for j in listed] == [
        (kept.id, 2),
        (alone.id, 3),
    ]
    app.process()
    assert sales.log == ["command 2", "command 3"]


def test_binding_the_handler_instead_of_a_factory_is_refused() -> None:
    handlers = HandlerContainer()

    def handle(message: RecalculateSales) -> Result[Any]:
        return Result.ok(None)

    class NeedsRepository:
        def __init__(self, repository: object) -> None:
            self.repository = repository

    with pytest.raises(InvalidBinding, match=r"needs the argument\(s\) message.*lambda: "):
        handlers.bind(RecalculateSales, handle)
    with pytest.raises(InvalidBinding, match="repository"):
        handlers.bind(RecalculateSales, NeedsRepository)  # type: ignore[arg-type]
    assert RecalculateSales not in handlers

    @dataclass
    class NoDependencies:
        def __call__(self, message: RecalculateSales) -> Result[Any]:
            return Result.ok(message.event_id)

    handlers.bind(RecalculateSales, NoDependencies)
    handlers.bind(RecalculateSales, lambda: handle)
    assert CommandBus(handlers).dispatch(RecalculateSales(4)).succeeded


def test_pydantic_and_attrs_commands_travel_and_are_rebuilt(app: Conveyor) -> None:
    received: list[Any] = []
    handlers = HandlerContainer()
    handlers.bind(PlaceOrder, lambda: lambda m: Result.ok(received.append(m)))
    handlers.bind(ShipOrder, lambda: lambda m: Result.ok(received.append(m)))
    queue = ConveyorQueue(app)
    bus = CommandBus(handlers, queue=lambda: queue)
    queue.dispatch_to(commands=bus)
    queue.register(PlaceOrder, "shop.place_order").register(ShipOrder, "shop.ship_order")
    order = PlaceOrder(
        order_id=7,
        placed_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        lines=[Line(sku="a", price=Decimal("9.50"))],
    )
    shipping = ShipOrder(7, Address("Lyon"), "rail")

    bus.queue(order)
    bus.queue(shipping)
    app.process()

    assert received == [order, shipping]


def test_a_pydantic_command_is_validated_when_rebuilt() -> None:
    from conveyor.bus import MessageSerializer

    serializer = MessageSerializer()
    serializer.register(PlaceOrder, "shop.place_order")
    data = {"order_id": 0, "placed_at": "2026-01-02T03:04:00+00:00", "lines": []}
    with pytest.raises(InvalidMessage, match="PlaceOrder refused the data"):
        serializer.decode("shop.place_order", 1, data)
    with pytest.raises(InvalidMessage, match="not a dataclass, an attrs class or a pydantic"):
        serializer.register(int, "numbers")


def test_structured_payloads_publish_as_their_fields(app: Conveyor) -> None:
    app.register("ship", lambda order_id, address, _carrier: None)
    job = app.publish("ship", ShipOrder(7, Address("Lyon")))
    assert app.get(job.id).requests[0].payload == {
        "order_id": 7,
        "address": {"city": "Lyon"},
        "_carrier": "post",
    }
    line = app.publish("ship", {"line": Line(sku="a", price=Decimal("1.5"))})
    assert line.requests[0].payload == {"line": {"sku": "a", "price": {"$decimal": "1.5"}}}
