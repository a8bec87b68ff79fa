"""The worker's hot statements on psycopg's cursor: same results, same errors as SQLAlchemy."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from conveyor import Conveyor, ManualClock
from conveyor.priority import PriorityRange
from conveyor.store.base import ClaimQuery
from conveyor.store.sql.direct import DirectStatements

from .conftest import POSTGRES_URL, TEST_PREFIX, require_service, wipe


@pytest.fixture
def pg_app(clock: ManualClock) -> Any:
    require_service("postgresql")
    app = Conveyor(POSTGRES_URL, table_prefix=TEST_PREFIX, clock=clock)
    app.register("noop", lambda: None)
    wipe(app)
    yield app
    app.close()


def test_only_statements_that_need_no_conversion_run_directly(pg_app: Conveyor) -> None:
    store: Any = pg_app.store
    direct: DirectStatements = store.direct
    claims = store.claims
    plain = claims.statement(ClaimQuery((), _range(), None))
    queues = claims.statement(ClaimQuery(("a", "b"), _range(), None))
    assert direct.compiled(plain) is not None
    assert direct.compiled(queues) is not None  # one array parameter on PostgreSQL
    expanding = store.tables.jobs.select().where(store.tables.jobs.c.queue.in_(["a", "b"]))
    assert direct.compiled(expanding) is None
    sqlite = DirectStatements(create_engine("sqlite://").dialect)
    assert sqlite.compiled(plain) is None


def test_direct_rows_have_sqlalchemy_s_keys_and_values(pg_app: Conveyor) -> None:
    """The keys come from public API (exported_columns), and must equal SQLAlchemy's own."""
    from sqlalchemy import select

    store: Any = pg_app.store
    direct: DirectStatements = store.direct
    jobs = store.tables.jobs
    pg_app.publish("noop", queue="mail", priority=20)
    statements = [
        select(jobs.c.id, jobs.c.queue, jobs.c.priority.label("job_priority")),
        jobs.update().values(priority=jobs.c.priority).returning(jobs.c.id, jobs.c.priority),
    ]
    for statement in statements:
        compiled = direct.compiled(statement)
        assert compiled is not None
        with store.engine.begin() as connection:
            expected = [dict(row) for row in connection.execute(statement).mappings()]
            rows = direct.rows(connection, statement, {})
        assert [dict(row) for row in rows] == expected
        assert list(compiled.keys) == list(expected[0])


def test_a_claim_by_queue_runs_directly_and_filters(pg_app: Conveyor) -> None:
    wanted = pg_app.publish("noop", queue="mail")
    pg_app.publish("noop", queue="other")
    claimed = pg_app.claim("w", queues=["mail", "sms"], limit=5)
    assert [job.id for job in claimed] == [wanted.id]


def test_a_broken_unique_lock_is_sqlalchemy_s_integrity_error(pg_app: Conveyor) -> None:
    store: Any = pg_app.store
    first, second = (pg_app.publish("noop", serial_group="g") for _ in range(2))
    statement = store.claims.update_statement(frozenset({"group_lock"}), True)
    compiled = store.direct.compiled(statement)
    assert compiled is not None
    with store.transaction() as tx:
        for job in (first, second):
            parameters = {
                "set_group_lock": "g",
                "w_id": int(job.id),
                "w_state": job.state,
                "w_token": job.lease_token,
                "w_expires": None,
            }
            if job is first:
                assert store.direct.execute(tx.connection, compiled, parameters)[0] == 1
            else:
                with pytest.raises(IntegrityError), tx.connection.begin_nested():
                    store.direct.execute(tx.connection, compiled, parameters)


def test_a_lost_connection_is_invalidated_and_the_next_transaction_reconnects(
    pg_app: Conveyor,
) -> None:
    job = pg_app.publish("noop")
    store: Any = pg_app.store
    with store.transaction() as tx:
        pid = tx.connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(POSTGRES_URL)
    with killer.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()
    with pytest.raises(OperationalError) as raised:
        pg_app.claim("w")
    assert raised.value.connection_invalidated
    assert [claimed.id for claimed in pg_app.claim("w")] == [job.id]


def _range() -> PriorityRange:
    return PriorityRange.parse(None)
