"""Losing the database connection: the worker backs off, reconnects and carries on."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import create_engine, text

from conveyor import Conveyor
from conveyor.resilience import Backoff, is_connection_error, retry_while_unavailable

from .conftest import POSTGRES_URL, TEST_PREFIX, require_service, wipe


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
