"""A thread's store connection goes back to the pool when the thread ends.

Web servers and anyio run synchronous calls in pools of threads that come and go; each thread
that reads the store gets its own connection. Kept after its thread ended, those connections
used up the engine's pool (5 + 10 overflow), and every later thread waited 30 s for one.
"""

from __future__ import annotations

import threading

import pytest

from conveyor import Conveyor


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_threads_that_end_give_their_connections_back(app: Conveyor) -> None:
    app.register("work", lambda: None)
    job = app.publish("work")
    seen: list[str] = []

    def read() -> None:
        seen.append(app.get(job.id).id)
        with app.store.autocommit():
            pass

    for _ in range(40):  # well beyond the pool's 15 connections
        thread = threading.Thread(target=read)
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive(), "a thread waited for a connection the pool no longer had"
    assert seen == [job.id] * 40
    held = app.store._connections  # type: ignore[attr-defined]
    assert len(held) <= 2  # the test thread's own
