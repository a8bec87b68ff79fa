"""Worker records: written at start, renewed by beats with the running jobs, deleted at stop;
records of dead workers deleted by the beats of the others. On every backend."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from conveyor import ConfigurationError, Conveyor, ManualClock
from conveyor.presence import STALE_BEATS, Presence


def test_a_record_is_written_renewed_and_deleted(app: Conveyor, clock: ManualClock) -> None:
    running = ["7", "12"]
    presence = Presence(app.store, app.now, "w-1", ["mail"], 4, every=3600)
    presence.start(lambda: running)
    try:
        (record,) = app.workers()
        assert record.id == "w-1"
        assert record.queues == ("mail",)
        assert record.concurrency == 4
        assert record.running == ("7", "12")
        assert record.heartbeat_at == clock.now()
        assert record.memory_bytes is not None
        assert record.memory_bytes > 0
        clock.advance(timedelta(seconds=30))
        running.remove("7")
        presence.beat()
        (record,) = app.workers()
        assert record.running == ("12",)
        assert record.heartbeat_at == clock.now()
        assert record.started_at == clock.now() - timedelta(seconds=30)
    finally:
        presence.stop()
    assert app.workers() == []


def test_the_beats_delete_the_records_of_dead_workers(app: Conveyor, clock: ManualClock) -> None:
    dead = Presence(app.store, app.now, "dead", [], 1, every=10)
    dead.beat()  # a worker that beat once, then was killed (no stop)
    alive = Presence(app.store, app.now, "alive", [], 1, every=10)
    clock.advance(timedelta(seconds=10 * STALE_BEATS - 1))
    alive.beat()
    assert [w.id for w in app.workers()] == ["alive", "dead"]
    clock.advance(timedelta(seconds=2))
    alive.beat()
    assert [w.id for w in app.workers()] == ["alive"]


def test_a_running_worker_shows_its_job(app: Conveyor) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        assert release.wait(30), "the test never released the job"

    app.register("slow", slow)
    job = app.publish("slow")
    worker = app.worker(worker_id="busy-1", handle_signals=False, idle_delay=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        worker.presence.beat()  # type: ignore[attr-defined]
        (record,) = app.workers()
        assert record.id == "busy-1"
        assert record.running == (job.id,)
    finally:
        release.set()
        worker.stop("test over")
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert app.workers() == []


def test_process_runs_write_no_record(app: Conveyor) -> None:
    seen: list[int] = []
    app.register("look", lambda: seen.append(len(app.workers())))
    app.publish("look")
    app.process(handle_signals=False)
    assert seen == [0]


def test_presence_every_must_be_positive(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="presence_every"):
        app.worker(presence_every=0)
