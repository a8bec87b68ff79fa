"""Idle workers wake on publish (PostgreSQL LISTEN/NOTIFY, memory store) instead of polling."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor

from .conftest import TEST_PREFIX, backend_url, require_service, wipe
from .core_support import running


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


def test_a_full_claim_with_nothing_behind_it_is_no_backlog(app: Conveyor, backend: str) -> None:
    """A claim of one job that leaves nothing behind does not make the worker claim again at
    once (to find nothing); one that leaves jobs behind does. The SQL stores read it in the
    claim's own statement; the memory store leaves it to the worker (a full claim)."""
    app.register("task", lambda: None)
    app.publish("task")
    alone = app.record_and_claim([], "w1", limit=1)
    assert len(alone.jobs) == 1
    assert alone.backlog is (None if backend == "memory" else False)
    app.publish("task")
    app.publish("task")
    behind = app.record_and_claim([], "w1", limit=1)
    assert len(behind.jobs) == 1
    assert behind.backlog is (None if backend == "memory" else True)


def test_an_idle_worker_records_a_plain_job_s_outcome_without_claiming_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken for one job with nothing behind it, a worker claims once: the job's outcome is
    then written alone (it frees no other job), not with a claim that would find nothing."""
    require_service("postgresql")
    import psycopg

    app = Conveyor(backend_url("postgresql", tmp_path), table_prefix=f"{TEST_PREFIX}alone_")
    wipe(app)
    claims: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        # the claim's read, or the claim in one statement (plannedclaim.py)
        if str(query).lstrip().startswith(("SELECT j.id", "WITH stats")):
            claims.append(threading.current_thread().name)
        return execute(cursor, query, *args, **kwargs)

    idle = threading.Event()
    app.register("ping", lambda: None)
    with running(app.worker(idle_delay=60, handle_signals=False, on_idle=idle.set)):
        assert idle.wait(timeout=10), "the worker never went idle"
        monkeypatch.setattr(psycopg.Cursor, "execute", recording)
        job = app.publish("ping")
        assert app.wait(job.id, timeout=10).state == "finished"
        monkeypatch.undo()
    assert len(claims) == 1, claims
    app.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql", "mariadb"])
def test_a_backlog_drains_without_waiting_for_the_poll_interval(
    backend: str, tmp_path: Path
) -> None:
    """Jobs published up front (no notification comes while they wait): every claim that
    leaves jobs behind says so, including claims that also record outcomes, so the worker
    never waits for its poll interval while jobs are due."""
    require_service(backend)
    app = Conveyor(backend_url(backend, tmp_path), table_prefix=f"{TEST_PREFIX}drain_")
    wipe(app)
    app.register("task", lambda: None)
    jobs = app.publish_many("task", [None] * 250)
    with running(app.worker(idle_delay=600, handle_signals=False, batch_size=40)):
        assert app.wait(jobs[-1].id, timeout=30).state == "finished"
    assert all(app.get(job.id).state == "finished" for job in jobs)
    app.close()


def test_a_large_full_claim_is_taken_as_a_backlog_without_counting(
    app: Conveyor, backend: str
) -> None:
    """A claim of COUNT_AHEAD_BELOW jobs or more does not count the claim index behind it
    (that second walk of the index would double the claim's cost on a table with dead
    entries): the store says nothing, and the worker takes a full claim as a backlog."""
    from conveyor.store.sql.claim import COUNT_AHEAD_BELOW

    app.register("task", lambda: None)
    app.publish_many("task", [None] * COUNT_AHEAD_BELOW)
    full = app.record_and_claim([], "w1", limit=COUNT_AHEAD_BELOW)
    assert len(full.jobs) == COUNT_AHEAD_BELOW
    assert full.backlog is None
    app.publish_many("task", [None] * (COUNT_AHEAD_BELOW - 1))
    small = app.record_and_claim([], "w1", limit=COUNT_AHEAD_BELOW - 1)
    assert len(small.jobs) == COUNT_AHEAD_BELOW - 1
    assert small.backlog is (None if backend == "memory" else False)
