"""The async application API on every backend, against real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from conveyor import Call, ConfigurationError, Conveyor, InvalidPayload, JobNotFound, UnknownType
from conveyor.aio import AsyncConveyor, async_url

from .conftest import AppFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def aconveyor(make_app: AppFactory) -> AsyncIterator[AsyncConveyor]:
    app = make_app()
    app.register("greet", lambda name: f"hello {name}")
    async with AsyncConveyor(app) as conveyor:
        yield conveyor


async def test_publish_get_list_cancel_retry(aconveyor: AsyncConveyor) -> None:
    job = await aconveyor.publish("greet", {"name": "ada"}, tags=["user:1"], queue="mail")
    assert (job.state, job.queue) == ("ready", "mail")
    assert (await aconveyor.get(job.id)).requests[0].payload == {"name": "ada"}
    assert [j.id for j in await aconveyor.jobs(tag="user:1")] == [job.id]
    cancelled = await aconveyor.cancel(job.id)
    assert cancelled.state == "cancelled"
    assert (await aconveyor.get(job.id)).state == "cancelled"
    retried = await aconveyor.retry(job.id)
    assert retried.state == "ready"
    assert ("mail", "ready", 1) in await aconveyor.status()
    with pytest.raises(JobNotFound):
        await aconveyor.get("999999999")


async def test_publish_job_and_identifiers(aconveyor: AsyncConveyor) -> None:
    job = await aconveyor.publish_job(
        [Call("greet", {"name": "a"}), Call("greet", {"name": "b"})], identifier="order-7"
    )
    assert len(job.requests) == 2
    assert await aconveyor.unfinished_identifiers(["order-7", "order-8"]) == {"order-7"}


async def test_a_unique_key_conflict_returns_the_holder(aconveyor: AsyncConveyor) -> None:
    """UKEY-004 from asyncio code: a duplicate within the period is not stored."""
    unique = {"fields": ["payload.name"], "period": 60}
    first = await aconveyor.publish("greet", {"name": "ada"}, unique=unique)
    again = await aconveyor.publish("greet", {"name": "ada"}, unique=unique)
    assert (again.id, again.conflict) == (first.id, "discarded")
    many = await aconveyor.publish_many("greet", [{"name": "bob"}, {"name": "ada"}], unique=unique)
    assert [job.conflict for job in many] == [None, "discarded"]
    assert len(await aconveyor.jobs()) == 2


async def test_bulk_publish_stores_every_job_in_order(aconveyor: AsyncConveyor) -> None:
    payloads = [{"name": str(i)} for i in range(11)]
    jobs = await aconveyor.publish_many("greet", payloads, size=4, tags="bulk")
    assert [j.requests[0].payload["name"] for j in jobs] == [str(i) for i in range(11)]
    assert len({j.id for j in jobs}) == 11
    listed = await aconveyor.jobs(tag="bulk")
    assert [j.id for j in listed] == [j.id for j in jobs]


async def test_an_invalid_item_in_a_bulk_publish_stores_none(aconveyor: AsyncConveyor) -> None:
    with pytest.raises(UnknownType, match="nobody"):
        await aconveyor.publish_many("nobody", [{}, {}])
    with pytest.raises(InvalidPayload, match=r"payloads\[1\]"):
        await aconveyor.publish_many("greet", [{"name": "x"}, {"name": object()}])
    assert await aconveyor.jobs() == []


async def test_cancel_of_a_running_job_records_a_request(aconveyor: AsyncConveyor) -> None:
    """CANCEL-001: the job keeps running; its worker is asked to stop."""
    job = await aconveyor.publish("greet", {"name": "ada"})
    (claimed,) = aconveyor.app.claim("w1")
    assert claimed.lease is not None
    attempt = aconveyor.app.cancellations.start(job.id, claimed.lease.token)
    asked = await aconveyor.cancel(job.id)
    assert (asked.state, asked.cancel_requested) == ("processing", True)
    assert attempt.requested  # told at once, in the app's own process


async def test_job_published_async_is_run_by_the_worker(aconveyor: AsyncConveyor) -> None:
    job = await aconveyor.publish("greet", {"name": "ada"})
    stats = aconveyor.app.process()
    assert stats.jobs == 1
    assert (await aconveyor.get(job.id)).state == "finished"


@pytest.fixture
async def caller_engine(aconveyor: AsyncConveyor) -> AsyncIterator[Any]:
    """The application's own async engine on the store's database (not Conveyor's)."""
    if aconveyor.app.url.startswith("memory:"):
        pytest.skip("the memory store has no transactions of the caller's")
    engine = create_async_engine(async_url(aconveyor.app.url))
    yield engine
    await engine.dispose()


async def test_publish_in_the_callers_connection(
    aconveyor: AsyncConveyor, caller_engine: Any
) -> None:
    async with caller_engine.connect() as connection:
        await connection.begin()
        await aconveyor.publish("greet", {"name": "gone"}, connection=connection)
        await connection.rollback()
        await connection.begin()
        kept = await aconveyor.publish("greet", {"name": "kept"}, connection=connection)
        assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        await connection.commit()
    # (SQLite may give the kept job the rolled-back one's id: compare payloads.)
    listed = await aconveyor.jobs()
    assert [(j.id, j.requests[0].payload) for j in listed] == [(kept.id, {"name": "kept"})]


async def test_publish_in_the_callers_session(aconveyor: AsyncConveyor, caller_engine: Any) -> None:
    async with AsyncSession(caller_engine) as session:
        await aconveyor.publish("greet", {"name": "gone"}, connection=session)
        await session.rollback()
        many = await aconveyor.publish_many("greet", [{"name": "a"}], connection=session)
        await session.commit()
    listed = await aconveyor.jobs()
    assert [(j.id, j.requests[0].payload) for j in listed] == [(many[0].id, {"name": "a"})]


async def test_a_sync_connection_is_refused(aconveyor: AsyncConveyor) -> None:
    with pytest.raises(ConfigurationError, match="AsyncConnection or AsyncSession"):
        await aconveyor.publish("greet", {"name": "x"}, connection=object())


def test_async_url_picks_the_async_driver() -> None:
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert async_url("mysql+pymysql://u@h/db").drivername == "mysql+aiomysql"
    assert async_url("mysql+asyncmy://u@h/db").drivername == "mysql+asyncmy"
    with pytest.raises(ConfigurationError, match="no async driver"):
        async_url("oracle://u@h/db")


def test_app_options_with_an_app_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="takes no app options"):
        AsyncConveyor(Conveyor("memory://"), default_queue="x")
