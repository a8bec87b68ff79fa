"""PostgreSQL session settings of Conveyor's statements: no JIT, on its own engine and on a
caller's, without changing the caller's own sessions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import create_engine

from conveyor import Conveyor, ManualClock
from conveyor.store.base import ClaimQuery
from conveyor.store.sql.store import SqlStore

from .conftest import POSTGRES_URL, TEST_PREFIX, _factory, require_service


@pytest.fixture
def app(tmp_path: Any, clock: ManualClock) -> Iterator[Conveyor]:
    require_service("postgresql")
    factory = _factory("postgresql", tmp_path, clock)
    made = next(factory)()
    made.register("noop", lambda: None)
    made.publish("noop")
    yield made
    for _ in factory:
        pass


def _claim_uses_no_jit(store: SqlStore, now: datetime) -> None:
    """Inside a Conveyor transaction: JIT is off, and the claim's plan, even costed past any
    threshold, compiles nothing."""
    with store.transaction() as tx:
        assert tx.connection.exec_driver_sql("SHOW jit").scalar() == "off"
        tx.connection.exec_driver_sql("SET LOCAL jit_above_cost = 0")
        statement = store.claims.statement(ClaimQuery())
        parameters = store.claims.parameters(ClaimQuery(), 2**62, 10)
        compiled = statement.compile(dialect=tx.connection.dialect)
        plan = tx.connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", parameters
        ).scalar()
        assert "JIT" not in str(plan)
        assert [c.job.id for c in tx.candidates(ClaimQuery(), now, 1)]


def test_own_engine_claims_without_jit(app: Conveyor) -> None:
    store: Any = app.store
    _claim_uses_no_jit(store, app.now())


def test_caller_engine_claims_without_jit_and_keeps_its_own_setting(app: Conveyor) -> None:
    engine = create_engine(POSTGRES_URL, pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        default = connection.exec_driver_sql("SHOW jit").scalar()
    own: Any = app.store
    store = SqlStore(POSTGRES_URL, own.states, table_prefix=TEST_PREFIX, engine=engine)
    try:
        _claim_uses_no_jit(store, app.now())
        store.release_thread()
        with engine.connect() as connection:  # the one pooled connection Conveyor used
            assert connection.exec_driver_sql("SHOW jit").scalar() == default
    finally:
        store.close()
