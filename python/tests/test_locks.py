"""Command locks held by a database session survive a cut connection, or say they were lost.

PostgreSQL and MariaDB release a session's lock when the session ends; the tests end it from
an admin connection (``pg_terminate_backend``, ``KILL CONNECTION``), as a proxy or a restart
would, and wait on conditions with a bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conveyor import AlreadyRunning, Conveyor
from conveyor.locks import command_lock

from .conftest import SERVER_URLS, TEST_PREFIX, require_service

BOUND = 20.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)  # polling the server's lock table; the condition decides


def _holder(backend: str, key: str) -> int | None:
    """The server session holding the lock named ``key``, or None."""
    engine = create_engine(SERVER_URLS[backend])
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                row = connection.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND objid = (hashtext(:key)::bigint & 4294967295)::oid"
                    ),
                    {"key": key},
                ).first()
            else:
                row = connection.execute(
                    text("SELECT IS_USED_LOCK(:key)"), {"key": f"{engine.url.database}:{key}"}
                ).first()
            return None if row is None or row[0] is None else int(row[0])
    finally:
        engine.dispose()


def _cut(backend: str, session: int) -> None:
    engine = create_engine(SERVER_URLS[backend])
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": session})
            else:
                connection.exec_driver_sql(f"KILL CONNECTION {int(session)}")
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    require_service(backend)
    return backend


def _app(backend: str) -> Conveyor:
    return Conveyor(SERVER_URLS[backend], table_prefix=f"{TEST_PREFIX}lock_")


def test_a_cut_lock_session_takes_the_lock_again(server: str) -> None:
    holder, other = _app(server), _app(server)
    single_id = "retake"
    key = f"conveyor:{holder.table_prefix}consume:{single_id}"
    lost: list[str] = []
    with command_lock(holder, "consume", single_id, on_lost=lost.append, check_every=0.05):
        first = _holder(server, key)
        assert first is not None
        _cut(server, first)
        _until(lambda: _holder(server, key) not in (None, first), "the lock is taken again")
        with pytest.raises(AlreadyRunning), command_lock(other, "consume", single_id):
            pass  # pragma: no cover
    assert lost == []
    assert _holder(server, key) is None  # released at exit
    holder.close()
    other.close()


def test_a_lock_taken_over_after_a_cut_is_reported_lost(server: str) -> None:
    """Another instance took the lock while the session was gone: ``on_lost`` is called (the
    worker stops), and leaving the block does not raise although the session is dead."""
    holder, other = _app(server), _app(server)
    single_id = "lost"
    key = f"conveyor:{holder.table_prefix}consume:{single_id}"
    lost = threading.Event()
    reasons: list[str] = []

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        lost.set()

    with command_lock(holder, "consume", single_id, on_lost=on_lost, check_every=0.5):
        session = _holder(server, key)
        assert session is not None
        _cut(server, session)
        with command_lock(other, "consume", single_id):  # faster than the keeper
            assert lost.wait(BOUND), "losing the lock went unnoticed"
    assert "another instance holds it now" in reasons[0]
    assert "single-id 'lost'" in reasons[0]
    holder.close()
    other.close()


def test_a_consumer_whose_lock_was_taken_over_stops_with_an_error(
    server: str, tmp_path: Path
) -> None:
    """`conveyor consume --single-id`: a second instance may start once the first lost its
    session; the first notices within its check interval, stops, and exits 1 saying why."""
    prefix = f"{TEST_PREFIX}lockcli_"
    module = tmp_path / "lock_app.py"
    module.write_text(
        "from conveyor import Conveyor\n"
        f"app = Conveyor({SERVER_URLS[server]!r}, table_prefix={prefix!r})\n"
        "app.register('noop', lambda: None)\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environment["PYTHONPATH"] = str(tmp_path)
    first = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--app", "lock_app:app", "consume",
         "--single-id", "z", "--cycle-delay", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )  # fmt: skip
    other = Conveyor(SERVER_URLS[server], table_prefix=prefix)
    key = f"conveyor:{prefix}consume:z"
    try:
        _until(
            lambda: first.poll() is not None or _holder(server, key) is not None,
            "the consumer holds its lock",
        )
        assert first.poll() is None, first.communicate()
        session = _holder(server, key)
        assert session is not None
        _cut(server, session)
        with command_lock(other, "consume", "z"):
            stdout, stderr = first.communicate(timeout=BOUND)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        other.close()
    assert first.returncode == 1, stdout + stderr
    assert "another instance holds it now" in stderr
    assert "Traceback" not in stderr
