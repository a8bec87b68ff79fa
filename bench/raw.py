"""Raw baselines measured in the same run as Conveyor: the fastest plain-SQL loops.

Processing: claim ``batch`` jobs with one conditional statement (``FOR UPDATE SKIP LOCKED``
where the database has it) and complete them with one more, committing each. Publishing:
one INSERT per commit, and multi-row INSERTs of 1,000 rows.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from typing import Any

from sqlalchemy.engine import make_url

TABLE = "bench_raw_jobs"


def connect(url: str) -> Any:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        import psycopg

        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True)
    if backend in ("mysql", "mariadb"):
        import pymysql

        return pymysql.connect(
            host=parsed.host, port=parsed.port or 3306, user=parsed.username,
            password=parsed.password or "", database=parsed.database, autocommit=True,
        )
    connection = sqlite3.connect(parsed.database, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def backend_of(url: str) -> str:
    name = make_url(url).get_backend_name()
    return "mariadb" if name in ("mysql", "mariadb") else name


def reset(url: str) -> None:
    connection = connect(url)
    cursor = connection.cursor()
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
    key = {
        "postgresql": "BIGSERIAL PRIMARY KEY",
        "mariadb": "BIGINT AUTO_INCREMENT PRIMARY KEY",
        "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }[backend_of(url)]
    cursor.execute(
        f"CREATE TABLE {TABLE} (id {key}, state VARCHAR(16) NOT NULL, "
        "priority INTEGER NOT NULL, payload TEXT NOT NULL)"
    )
    cursor.execute(f"CREATE INDEX {TABLE}_claim ON {TABLE} (state, priority, id)")
    connection.close()


def publish_single(url: str, count: int) -> float:
    """Seconds to insert ``count`` rows, one INSERT and one commit each."""
    connection = connect(url)
    cursor = connection.cursor()
    mark = "?" if backend_of(url) == "sqlite" else "%s"
    started = time.perf_counter()
    for _ in range(count):
        cursor.execute(
            f"INSERT INTO {TABLE} (state, priority, payload) VALUES ('ready', 100, {mark})",
            ("{}",),
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def publish_bulk(url: str, count: int, chunk: int = 1000) -> float:
    """Seconds to insert ``count`` rows as multi-row INSERTs of ``chunk`` rows."""
    connection = connect(url)
    cursor = connection.cursor()
    sqlite = backend_of(url) == "sqlite"
    started = time.perf_counter()
    for offset in range(0, count, chunk):
        rows = min(chunk, count - offset)
        values = ",".join(["('ready', 100, '{}')"] * rows)
        if sqlite:
            cursor.execute("BEGIN")
        cursor.execute(f"INSERT INTO {TABLE} (state, priority, payload) VALUES {values}")
        if sqlite:
            cursor.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def publish_bulk_same_table(url: str, count: int, chunk: int = 1000) -> float:
    """Seconds to insert ``count`` rows, as multi-row INSERTs of ``chunk`` rows, into a table
    of Conveyor's own shape (its columns and indexes), one constant job row repeated.

    What the database charges for this row shape, without any library work: the bulk
    publishing figure against it is the library's own overhead.
    """
    from conveyor import Conveyor
    from conveyor.store.sql.rows import job_values
    from conveyor.store.sql.schema import build_tables
    from sqlalchemy import create_engine, insert

    engine = create_engine(url)
    tables = build_tables("bench_rawshape_")
    tables.metadata.drop_all(engine)
    tables.metadata.create_all(engine)
    sample = Conveyor("memory://")
    sample.register("noop", lambda: None)
    row = job_values(sample.publish("noop"), (False, True, False))  # a ready job's row
    statement = insert(tables.jobs).values([row] * chunk)
    sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    engine.dispose()
    connection = connect(url)
    cursor = connection.cursor()
    sqlite = backend_of(url) == "sqlite"
    started = time.perf_counter()
    for _ in range(count // chunk):
        if sqlite:
            cursor.execute("BEGIN")
        cursor.execute(sql)
        if sqlite:
            cursor.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    engine = create_engine(url)
    tables.metadata.drop_all(engine)
    engine.dispose()
    return elapsed


def _process(url: str, batch: int) -> tuple[int, float, float]:
    connection = connect(url)
    cursor = connection.cursor()
    backend = backend_of(url)
    done = 0
    started = time.time()
    while True:
        if backend == "postgresql":
            cursor.execute(
                f"UPDATE {TABLE} SET state = 'processing' WHERE id IN (SELECT id FROM {TABLE} "
                "WHERE state = 'ready' ORDER BY priority, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING id",
                (batch,),
            )
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                cursor.execute(f"UPDATE {TABLE} SET state = 'finished' WHERE id = ANY(%s)", (ids,))
        elif backend == "mariadb":
            try:
                ids = _claim_mariadb(cursor, batch)
            except Exception as error:  # deadlock or lock wait: retry, as any real loop must
                if getattr(error, "args", (0,))[0] not in (1205, 1213):
                    raise
                cursor.execute("ROLLBACK")
                continue
            marks = ",".join(["%s"] * len(ids))
            if ids:
                cursor.execute(f"UPDATE {TABLE} SET state = 'finished' WHERE id IN ({marks})", ids)
        else:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(
                f"SELECT id FROM {TABLE} WHERE state = 'ready' ORDER BY priority, id LIMIT ?",
                (batch,),
            )
            ids = [row[0] for row in cursor.fetchall()]
            marks = ",".join("?" * len(ids))
            if ids:
                cursor.execute(f"UPDATE {TABLE} SET state = 'processing' WHERE id IN ({marks})", ids)
            cursor.execute("COMMIT")
            if ids:
                cursor.execute(f"UPDATE {TABLE} SET state = 'finished' WHERE id IN ({marks})", ids)
        if not ids:
            connection.close()
            return done, started, time.time()
        done += len(ids)


def _claim_mariadb(cursor: Any, batch: int) -> list[int]:
    cursor.execute("BEGIN")
    cursor.execute(
        f"SELECT id FROM {TABLE} WHERE state = 'ready' ORDER BY priority, id "
        "LIMIT %s FOR UPDATE SKIP LOCKED",
        (batch,),
    )
    ids = [row[0] for row in cursor.fetchall()]
    if ids:
        marks = ",".join(["%s"] * len(ids))
        cursor.execute(f"UPDATE {TABLE} SET state = 'processing' WHERE id IN ({marks})", ids)
    cursor.execute("COMMIT")
    return ids


def quiesce(url: str) -> None:
    """Before a measured phase: write out what the previous phase left dirty (PostgreSQL's
    CHECKPOINT; SQLite's WAL checkpoint), so that neither side pays for the other's work."""
    connection = connect(url)
    try:
        backend = backend_of(url)
        if backend == "postgresql":
            connection.execute("CHECKPOINT")
        elif backend == "sqlite":
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def process(url: str, jobs: int, batch: int, workers: int) -> float:
    """Jobs per second: ``workers`` processes drain ``jobs`` ready rows, ``batch`` per claim."""
    reset(url)
    publish_bulk(url, jobs)
    quiesce(url)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        results = pool.starmap(_process, [(url, batch)] * workers)
    return rate(results, jobs)


def rate(results: list[tuple[int, float, float]], expected: int) -> float:
    """Jobs per second over the span from the first worker's start to the last one's end."""
    done = sum(count for count, _, _ in results)
    assert done == expected, f"processed {done} of {expected} jobs"
    span = max(end for _, _, end in results) - min(start for _, start, _ in results)
    return done / span
