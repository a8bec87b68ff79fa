"""Losing the database connection: the worker backs off, reconnects and carries on; a
transaction that loses a conflict (deadlock, lock timeout) is run again, logged as such."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from conveyor import Conveyor, StoreUnavailable
from conveyor.resilience import (
    Backoff,
    conflict,
    describe,
    is_connection_error,
    is_transient,
    retry_while_unavailable,
)

from .conftest import POSTGRES_URL, SERVER_URLS, TEST_PREFIX, require_service, wipe


def test_backoff_doubles_and_caps() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    delays = [backoff.next_delay() for _ in range(6)]
    backoff.reset()
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.next_delay() == 0.1


def test_retry_gives_up_on_errors_that_are_not_about_the_connection() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug") as raised:
        retry_while_unavailable(broken, give_up_after=5)
    assert not is_connection_error(raised.value)
    assert calls == [1]


def test_worker_survives_its_connections_being_killed() -> None:
    """Every server connection of the worker is terminated; the next job still runs."""
    require_service("postgresql")
    name = f"conveyor-resilience-{uuid.uuid4().hex[:8]}"
    app = Conveyor(f"{POSTGRES_URL}?application_name={name}", table_prefix=f"{TEST_PREFIX}res_")
    wipe(app)
    done = threading.Event()
    idle = threading.Event()
    app.register("ping", lambda: None)
    worker = app.worker(
        idle_delay=0.2, handle_signals=False, on_job=lambda job: done.set(), on_idle=idle.set
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    admin = create_engine(POSTGRES_URL)
    try:
        assert idle.wait(10)
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).scalar_one()
        assert killed >= 1
        app.publish("ping")
        assert done.wait(timeout=30), "the worker did not recover from the lost connections"
    finally:
        worker.stop()
        runner.join(timeout=30)
        admin.dispose()
    assert app.jobs()[0].state == "finished"
    app.close()


def test_a_worker_with_a_backlog_claims_again_after_its_connections_are_killed() -> None:
    """A claim that fails on a lost connection is tried again after the back-off. With a
    backlog the worker does not listen for news, so nothing else would wake it: before, it
    waited with 180 due jobs and ran a few per minute."""
    require_service("postgresql")
    name = f"conveyor-resilience-{uuid.uuid4().hex[:8]}"
    app = Conveyor(f"{POSTGRES_URL}?application_name={name}", table_prefix=f"{TEST_PREFIX}res_")
    wipe(app)
    ran: list[int] = []
    twenty, everything = threading.Event(), threading.Event()

    def note(n: int) -> None:
        ran.append(n)
        if len(ran) == 20:
            twenty.set()

    app.register("note", note)
    for n in range(200):
        app.publish("note", n)
    worker = app.worker(
        idle_delay=30.0,  # an idle timer would hide the stall
        handle_signals=False,
        on_job=lambda job: everything.set() if len(ran) >= 200 else None,
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    admin = create_engine(POSTGRES_URL)
    try:
        assert twenty.wait(30)
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            )
        assert everything.wait(timeout=30), f"only {len(ran)} of 200 jobs ran"
    finally:
        worker.stop()
        runner.join(timeout=30)
        admin.dispose()
    assert sorted(set(ran)) == list(range(200))
    app.close()


def conflict_between_two_transactions(url: str, kind: str) -> DBAPIError:
    """Provoke a real conflict on the server and return the error one transaction got.

    ``deadlock``: two transactions update two rows in opposite orders. ``lock timeout``: a
    transaction waits for a row another one holds, with a short lock timeout.
    """
    engine = create_engine(url)
    table = f"{TEST_PREFIX}conflict_{uuid.uuid4().hex[:6]}"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)"))
        connection.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 0), (2, 0)"))
    caught: list[DBAPIError] = []

    def update(connection: Any, row: int) -> None:
        try:
            connection.execute(text(f"UPDATE {table} SET v = v + 1 WHERE id = {row}"))
        except DBAPIError as error:
            caught.append(error)

    first, second = engine.connect(), engine.connect()
    try:
        first.begin()
        second.begin()
        update(first, 1)
        if kind == "deadlock":
            update(second, 2)
            blocked = threading.Thread(target=update, args=(first, 2))
            blocked.start()
            update(second, 1)  # closes the cycle: the server rolls one of them back
            blocked.join(timeout=30)
        else:
            timeout = (
                "SET innodb_lock_wait_timeout = 1"
                if engine.dialect.name == "mysql"
                else "SET lock_timeout = '50ms'"
            )
            second.execute(text(timeout))
            update(second, 1)
    finally:
        for connection in (first, second):
            connection.rollback()
            connection.close()
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
        engine.dispose()
    assert len(caught) == 1, caught
    return caught[0]


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
@pytest.mark.parametrize("kind", ["deadlock", "lock timeout"])
def test_a_conflict_is_retried_as_a_conflict_not_as_a_lost_database(
    server: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A deadlock or lock wait timeout leaves the database up: it is retried, and logged as a
    transaction conflict, never as "database unavailable"."""
    require_service(server)
    error = conflict_between_two_transactions(SERVER_URLS[server], kind)
    expected = {"deadlock": "deadlock", "lock timeout": ("lock wait timeout", "lock not available")}
    assert conflict(error) in expected[kind]
    assert not is_connection_error(error)
    assert is_transient(error)
    attempts: list[DBAPIError] = [error]

    def action() -> str:
        if attempts:
            raise attempts.pop()
        return "done"

    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        assert retry_while_unavailable(action, give_up_after=5) == "done"
    (record,) = caplog.records
    assert record.getMessage().startswith(f"transaction conflict ({conflict(error)}")
    assert "unavailable" not in record.getMessage()


def test_a_locked_sqlite_database_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (v INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(OperationalError) as raised, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert conflict(raised.value) == "database locked"
    assert not is_connection_error(raised.value)
    assert is_transient(raised.value)


def test_a_lost_connection_is_still_reported_as_the_database_unavailable() -> None:
    error = StoreUnavailable("cannot reach the database at postgresql://***@db/x")
    assert is_connection_error(error)
    assert conflict(error) is None
    assert describe(error).startswith("database unavailable (StoreUnavailable")


def test_consume_started_before_its_database_exists_waits_for_it(tmp_path: Path) -> None:
    """`conveyor consume` whose database server refuses it at start retries (a warning per
    attempt) instead of exiting, then runs the job published once the database is there."""
    require_service("postgresql")
    database = f"conveyor_startup_{uuid.uuid4().hex[:10]}"
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    module = f"startup_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from conveyor import Conveyor\n"
        f"app = Conveyor({url!r})\n"
        "app.register('ping', lambda: None)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    consumer = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--app", f"{module}:app", "consume", "--jobs", "1",
         "--cycle-delay", "0.05", "--startup-wait", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    watchdog = threading.Timer(60, consumer.kill)
    watchdog.start()
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        assert consumer.stderr is not None
        first = consumer.stderr.readline()
        assert "database unavailable" in first, first
        assert "retrying in" in first, first
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        with Conveyor(url) as app:
            app.register("ping", lambda: None)
            job = app.publish("ping")
            stdout, stderr = consumer.communicate(timeout=60)
            assert consumer.returncode == 0, stdout + stderr
            assert app.get(job.id).state == "finished"
        assert "Traceback" not in stderr
    finally:
        watchdog.cancel()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def test_process_on_an_unreachable_database_exits_with_its_error_after_the_wait(
    tmp_path: Path,
) -> None:
    require_service("postgresql")
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/conveyor_missing_{uuid.uuid4().hex[:10]}"
    module = f"missing_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        f"from conveyor import Conveyor\napp = Conveyor({url!r})\napp.register('ping', print)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "--app", f"{module}:app", "process",
         "--startup-wait", "2"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "database unavailable" in result.stderr
    assert "error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr
