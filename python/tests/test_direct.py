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
    _terminate_this_thread_s_backend(pg_app)
    with pytest.raises(OperationalError) as raised:
        pg_app.claim("w")
    assert raised.value.connection_invalidated
    assert [claimed.id for claimed in pg_app.claim("w")] == [job.id]


def _terminate_this_thread_s_backend(app: Conveyor) -> None:
    """End, from another session, the server process of this thread's store connection."""
    store: Any = app.store
    with store.transaction() as tx:
        pid = tx.connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(POSTGRES_URL)
    with killer.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()


def _range() -> PriorityRange:
    return PriorityRange.parse(None)


def test_a_lone_outcome_that_ends_its_job_carries_its_notice_in_its_write(
    pg_app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RESULT-004's notice rides on the outcome's own write: one statement, not two."""
    import psycopg

    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(" ".join(str(query).split()))
        return execute(cursor, query, *args, **kwargs)

    job = pg_app.publish("noop")
    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    assert pg_app.process(limit=1).jobs == 1
    monkeypatch.undo()
    assert pg_app.get(job.id).state == "finished"
    writes = [s for s in sent if s.startswith("WITH written AS (UPDATE")]
    assert len(writes) == 1
    assert "pg_notify" in writes[0]
    assert not [s for s in sent if s.startswith("SELECT pg_notify")], sent


def test_a_single_publish_is_one_statement_without_begin_or_commit(
    pg_app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that needs no other row is inserted in autocommit, its wake-up in the same
    statement; a tagged one still takes a transaction, and the connection's transactions
    still roll back afterwards."""
    import psycopg

    commits: list[bool] = []
    commit = psycopg.Connection.commit

    def counting(connection: Any) -> None:
        commits.append(True)
        commit(connection)

    monkeypatch.setattr(psycopg.Connection, "commit", counting)
    alone = pg_app.publish("noop")
    assert commits == []
    tagged = pg_app.publish("noop", tags=["mail"])
    assert commits == [True]
    monkeypatch.undo()
    assert [pg_app.get(job.id).state for job in (alone, tagged)] == ["ready", "ready"]
    store: Any = pg_app.store

    def delete_then_fail() -> None:
        with store.transaction() as tx:
            tx.connection.execute(store.tables.jobs.delete())
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        delete_then_fail()
    assert len(pg_app.jobs()) == 2


def test_a_single_publish_on_a_lost_connection_raises_and_the_next_reconnects(
    pg_app: Conveyor,
) -> None:
    pg_app.publish("noop")
    _terminate_this_thread_s_backend(pg_app)
    with pytest.raises(OperationalError) as raised:
        pg_app.publish("noop")
    assert raised.value.connection_invalidated
    job = pg_app.publish("noop")
    assert [found.id for found in pg_app.jobs()][-1] == job.id
    assert len(pg_app.jobs()) == 2


def test_a_busy_claim_looks_for_due_delayed_jobs_only_when_its_probe_finds_one(
    pg_app: Conveyor, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim carries a probe of the earliest delayed job: while none is due, the claim is
    one statement; once one is, it is promoted and claimed in its place in claim order."""
    import psycopg

    store: Any = pg_app.store
    due_sql = store.direct.compiled(store.claims.due_statement()).sql
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    from datetime import timedelta

    later = pg_app.publish("noop", priority=1, delay=timedelta(seconds=5))
    ready = [pg_app.publish("noop", priority=5) for _ in range(3)]
    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    assert [job.id for job in pg_app.claim("w", limit=1)] == [ready[0].id]
    assert due_sql not in sent
    clock.advance(timedelta(seconds=5))
    assert [job.id for job in pg_app.claim("w", limit=1)] == [later.id]
    assert sent.count(due_sql) == 1
