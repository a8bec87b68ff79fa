"""Schema creation and migrations on every SQL backend."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, create_engine, inspect

from conveyor import Conveyor, SystemClock
from conveyor.clock import to_ms
from conveyor.lifecycle import state_sets
from conveyor.machine import Machine
from conveyor.specfiles import machine_document
from conveyor.store.sql.schema import (
    JOB_TABLE_STORAGE,
    MIGRATIONS,
    SCHEMA_VERSION,
    build_tables,
)
from conveyor.store.sql.store import SqlStore

from .conftest import TEST_PREFIX, backend_url, require_service

STATES = state_sets(Machine(machine_document("job")))


def _reflect(url: str, prefix: str) -> dict[str, Any]:
    engine = create_engine(url)
    inspector = inspect(engine)
    shape = {
        name: (
            sorted(
                (c["name"], str(c["type"]).split("(")[0], c["nullable"])
                for c in inspector.get_columns(name)
            ),
            sorted(
                (tuple(i["column_names"]), bool(i["unique"]), _predicate(i))
                for i in inspector.get_indexes(name)
            ),
            sorted(tuple(c["column_names"]) for c in inspector.get_unique_constraints(name)),
        )
        for name in inspector.get_table_names()
        if name.startswith(prefix)
    }
    engine.dispose()
    return shape


def _predicate(index: Any) -> str:
    """A partial index's WHERE, as the database reports it ('' for a whole-table index)."""
    options = index.get("dialect_options", {})
    where = options.get("postgresql_where", options.get("sqlite_where"))
    return "" if where is None else str(where).strip("()").lower()


def _drop(url: str, prefix: str) -> None:
    engine = create_engine(url)
    build_tables(prefix).metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_migrated_schema_equals_fresh_schema(backend: str, tmp_path: Path) -> None:
    require_service(backend)
    url = backend_url(backend, tmp_path)
    fresh, stepped = f"{TEST_PREFIX}fresh_", f"{TEST_PREFIX}step_"
    try:
        tables = build_tables(stepped)
        engine = create_engine(url)
        build_tables(fresh).metadata.create_all(engine)
        with engine.begin() as connection:
            for migrate in MIGRATIONS:
                migrate(connection, tables)
        engine.dispose()

        def strip(shape: dict[str, Any], prefix: str) -> dict[str, Any]:
            return {name.removeprefix(prefix): value for name, value in shape.items()}

        assert strip(_reflect(url, stepped), stepped) == strip(_reflect(url, fresh), fresh)
        assert len(MIGRATIONS) == SCHEMA_VERSION
    finally:
        _drop(url, fresh)
        _drop(url, stepped)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_concurrent_first_use_creates_the_schema_once(backend: str, tmp_path: Path) -> None:
    """Several processes starting at once all succeed (the schema lock serialises them)."""
    require_service(backend)
    url = backend_url(backend, tmp_path)
    prefix = f"{TEST_PREFIX}race_"
    _drop(url, prefix)
    barrier = threading.Barrier(4)
    versions: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait()
            store = SqlStore(url, STATES, prefix)
            versions.append(store.schema_version())
            store.close()
        except BaseException as error:  # collected and re-raised below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert versions == [SCHEMA_VERSION] * 4
        store = SqlStore(url, STATES, prefix)
        with store.engine.connect() as connection:
            rows = connection.execute(store.tables.schema.select()).all()
        store.close()
        assert [row.version for row in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        _drop(url, prefix)


# Added after version 1 (versions 3, 5, 6, 8, 9), with their types.
_LATER_COLUMNS = {
    "timeout_ms": "BIGINT",
    "delay_until": "BIGINT",
    "result": "TEXT",
    "result_ttl_ms": "BIGINT",
    "progress": "TEXT",
    "concurrency_key": "VARCHAR(255)",
    "concurrency_limit": "INTEGER",
    "concurrency_slot": "INTEGER",
    "rate_key": "VARCHAR(255)",
    "rate_limit": "INTEGER",
    "rate_period_ms": "BIGINT",
    "cancel_requested_at": "BIGINT",
    "uniqueness": "TEXT",
    "unique_key": "VARCHAR(64)",
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_version_2_keeps_the_jobs_and_the_id_sequence_of_a_version_1_database(
    backend: str, tmp_path: Path
) -> None:
    """v1 -> v2 rebuilds the job table's indexes (SQLite: the table itself) with the data."""
    require_service(backend)
    url = backend_url(backend, tmp_path)
    prefix = f"{TEST_PREFIX}v1_"
    _drop(url, prefix)
    try:
        engine = create_engine(url)
        with engine.begin() as connection:
            MIGRATIONS[0](connection, build_tables(prefix))
            connection.execute(
                build_tables(prefix).schema.insert(), {"version": 1, "applied_at": 0}
            )
            # Columns of later versions, for this library to write the v1 rows; dropped again
            # below, so that the migration starts from the v1 layout with the data in it.
            for column, kind in _LATER_COLUMNS.items():
                connection.exec_driver_sql(f"ALTER TABLE {prefix}jobs ADD COLUMN {column} {kind}")
            build_tables(prefix).paused_queues.create(connection)  # read by every claim
            build_tables(prefix).rate_slots.create(connection)  # the claim reads it (v10)
        engine.dispose()
        old = SqlStore(url, STATES, prefix, create_schema=False)
        app = Conveyor(store=old)
        app.register("noop", lambda: None)
        kept, claimed, last = (app.publish("noop", serial_group="g") for _ in range(3))
        assert [job.id for job in app.claim("w", limit=1)] == [kept.id]
        app.report(kept.id, "succeed", {"lease_token": app.get(kept.id).lease_token})
        assert app.claim("w", limit=1)[0].id == claimed.id
        with old.engine.begin() as connection:  # the newest id gone: its number stays used
            connection.execute(old.tables.jobs.delete().where(old.tables.jobs.c.id == int(last.id)))
        assert old.schema_version() == 1
        with old.engine.begin() as connection:
            for column in _LATER_COLUMNS:
                connection.exec_driver_sql(f"ALTER TABLE {prefix}jobs DROP COLUMN {column}")
            build_tables(prefix).paused_queues.drop(connection)
            build_tables(prefix).rate_slots.drop(connection)
        old.close()

        app = Conveyor(url, table_prefix=prefix)
        app.register("noop", lambda: None)
        assert app.store.schema_version() == SCHEMA_VERSION
        assert app.get(kept.id).state == "finished"
        assert app.get(claimed.id).state == "processing"
        assert app.claim("w2", limit=1) == []  # the group's lock survived the copy
        assert int(app.publish("noop").id) > int(last.id)  # ids are never reused (JOB-001)
        app.close()
        fresh = f"{TEST_PREFIX}v2_"
        engine = create_engine(url)
        build_tables(fresh).metadata.create_all(engine)
        engine.dispose()
        assert _reflect(url, prefix)[f"{prefix}jobs"] == _reflect(url, fresh)[f"{fresh}jobs"]
    finally:
        _drop(url, prefix)
        _drop(url, f"{TEST_PREFIX}v2_")


def _lock_table_of_the_bus(prefix: str) -> Table:
    """``<prefix>bus_locks`` as the bus created it on first use, before schema version 4."""
    return Table(
        f"{prefix}bus_locks",
        MetaData(),
        Column("name", String(255), primary_key=True),
        Column("owner", String(64), nullable=False),
        Column("expires_at", BigInteger, nullable=False),
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_version_4_adopts_the_lock_table_the_bus_created(backend: str, tmp_path: Path) -> None:
    """A version 3 database whose bus made its lock table keeps the locks held in it; names
    then compare exactly on every database (MariaDB's default collation ignored case)."""
    require_service(backend)
    url = backend_url(backend, tmp_path)
    prefix, fresh = f"{TEST_PREFIX}v3_", f"{TEST_PREFIX}v4_"
    _drop(url, prefix)
    now = SystemClock().now()
    later = now + timedelta(minutes=1)
    try:
        tables = build_tables(prefix)
        engine = create_engine(url)
        with engine.begin() as connection:
            for migrate in MIGRATIONS[:3]:
                migrate(connection, tables)
            connection.execute(
                tables.schema.insert(), [{"version": v, "applied_at": 0} for v in (1, 2, 3)]
            )
            old = _lock_table_of_the_bus(prefix)
            old.create(connection)
            connection.execute(
                old.insert(), {"name": "report:1", "owner": "held", "expires_at": to_ms(later)}
            )
        engine.dispose()

        store = SqlStore(url, STATES, prefix)
        assert store.schema_version() == SCHEMA_VERSION
        assert store.acquire_lock("report:1", now, later) is None  # held across the upgrade
        assert store.acquire_lock("Report:1", now, later) is not None  # another name
        store.release_lock("report:1", "held")
        assert store.acquire_lock("report:1", now, later) is not None
        store.close()

        engine = create_engine(url)
        build_tables(fresh).metadata.create_all(engine)
        engine.dispose()
        shapes = _reflect(url, prefix), _reflect(url, fresh)
        assert shapes[0][f"{prefix}bus_locks"] == shapes[1][f"{fresh}bus_locks"]
    finally:
        _drop(url, prefix)
        _drop(url, fresh)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_store_locks_are_refused_to_a_second_holder_until_they_expire(
    backend: str, tmp_path: Path
) -> None:
    require_service(backend)
    url = backend_url(backend, tmp_path)
    prefix = f"{TEST_PREFIX}locks_"
    _drop(url, prefix)
    store, other = SqlStore(url, STATES, prefix), SqlStore(url, STATES, prefix)
    now = SystemClock().now()
    try:
        token = store.acquire_lock("Nightly", now, now + timedelta(seconds=30))
        assert token is not None
        assert other.acquire_lock("Nightly", now, now + timedelta(seconds=30)) is None
        assert other.acquire_lock("nightly", now, now + timedelta(seconds=30)) is not None
        other.release_lock("Nightly", "not-the-token")  # a stale token frees nothing
        expired = now + timedelta(seconds=30)
        assert other.acquire_lock("Nightly", expired, expired + timedelta(seconds=30))
        store.erase()
        assert store.acquire_lock("Nightly", now, now + timedelta(seconds=30)) is not None
        store.drop_schema()
        assert [name for name in inspect(store.engine).get_table_names() if prefix in name] == []
    finally:
        store.close()
        other.close()
        _drop(url, prefix)


def test_the_job_table_gets_its_storage_parameters_on_postgresql() -> None:
    """Version 5: fillfactor and per-table autovacuum thresholds (JOB_TABLE_STORAGE)."""
    require_service("postgresql")
    url = backend_url("postgresql", Path())
    prefix = f"{TEST_PREFIX}storage_"
    _drop(url, prefix)
    try:
        SqlStore(url, STATES, prefix).close()
        engine = create_engine(url)
        with engine.connect() as connection:
            options = connection.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = %(name)s",
                {"name": f"{prefix}jobs"},
            ).scalar_one()
        engine.dispose()
        found = dict(option.split("=", 1) for option in options)
        assert found["fillfactor"] == JOB_TABLE_STORAGE["fillfactor"]
        for name, value in JOB_TABLE_STORAGE.items():
            assert float(found[name]) == float(value)
    finally:
        _drop(url, prefix)
