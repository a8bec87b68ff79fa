"""Schema creation and migrations on every SQL backend."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from conveyor.lifecycle import state_sets
from conveyor.machine import Machine
from conveyor.specfiles import machine_document
from conveyor.store.sql.schema import MIGRATIONS, SCHEMA_VERSION, build_tables
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
                (tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(name)
            ),
        )
        for name in inspector.get_table_names()
        if name.startswith(prefix)
    }
    engine.dispose()
    return shape


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
