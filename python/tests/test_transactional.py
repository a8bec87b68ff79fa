"""Transactional enqueue: the job exists if and only if the caller's transaction commits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from conveyor import Conveyor, ManualClock, NotSupported

from .conftest import _factory, require_service

metadata = MetaData()
orders = Table(
    "tx_orders", metadata, Column("id", Integer, primary_key=True), Column("item", String(50))
)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def sql_app(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Conveyor]:
    require_service(request.param)
    factory = _factory(request.param, tmp_path, clock)
    app = next(factory)()
    app.register("ship", lambda order: None)
    metadata.create_all(app.store.engine)  # type: ignore[attr-defined]
    with app.store.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(orders.delete())
    yield app
    for _ in factory:  # runs the factory's cleanup (closes the apps)
        pass


def test_rolled_back_connection_leaves_no_job(sql_app: Conveyor) -> None:
    engine = create_engine(sql_app.store.engine.url)  # type: ignore[attr-defined]
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(orders.insert().values(id=1, item="book"))
        sql_app.publish("ship", {"order": 1}, connection=connection)
        transaction.rollback()
    engine.dispose()

    assert sql_app.jobs() == []


def test_committed_session_stores_data_and_job_together(sql_app: Conveyor) -> None:
    engine = create_engine(sql_app.store.engine.url)  # type: ignore[attr-defined]
    with Session(engine) as session, session.begin():
        session.execute(orders.insert().values(id=2, item="lamp"))
        job = sql_app.publish("ship", {"order": 2}, connection=session)
    with engine.connect() as connection:
        stored_orders = connection.execute(select(orders.c.id)).scalars().all()
    engine.dispose()

    assert stored_orders == [2]
    assert [j.id for j in sql_app.jobs()] == [job.id]


def test_memory_store_refuses_connection_publish() -> None:
    app = Conveyor("memory://")
    app.register("ship", lambda order: None)
    with pytest.raises(NotSupported, match="needs an SQL store"):
        app.publish("ship", {"order": 3}, connection=object())


def test_publish_many_in_a_rolled_back_transaction_leaves_no_job(sql_app: Conveyor) -> None:
    engine = create_engine(sql_app.store.engine.url)  # type: ignore[attr-defined]
    with engine.connect() as connection:
        transaction = connection.begin()
        jobs = sql_app.publish_many("ship", [{"order": n} for n in range(5)], connection=connection)
        assert len(jobs) == 5
        transaction.rollback()
    with engine.connect() as connection, connection.begin():
        kept = sql_app.publish_many("ship", [{"order": n} for n in range(3)], connection=connection)
    engine.dispose()
    assert sorted(job.id for job in sql_app.jobs()) == sorted(job.id for job in kept)
