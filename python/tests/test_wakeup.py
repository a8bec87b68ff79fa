"""Idle workers wake on publish (PostgreSQL LISTEN/NOTIFY, memory store) instead of polling."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conveyor import Conveyor

from .conftest import TEST_PREFIX, backend_url, require_service, wipe


@pytest.mark.parametrize("backend", ["memory", "postgresql"])
def test_idle_worker_wakes_within_seconds_despite_a_long_poll_interval(
    backend: str, tmp_path: Path
) -> None:
    require_service(backend)
    app = Conveyor(backend_url(backend, tmp_path), table_prefix=f"{TEST_PREFIX}wake_")
    wipe(app)
    done = threading.Event()
    idle = threading.Event()
    app.register("ping", lambda: None)
    worker = app.worker(
        idle_delay=60,
        handle_signals=False,
        on_job=lambda job: done.set(),
        on_idle=idle.set,
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert idle.wait(timeout=10), "the worker never went idle"
        app.publish("ping")
        assert done.wait(timeout=10), "the worker did not wake up on publish"
    finally:
        worker.stop()
        app.publish("ping")  # wakes the worker so it sees the stop at once
        runner.join(timeout=30)
    assert not runner.is_alive()
    app.close()
