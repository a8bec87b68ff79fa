"""The consumer: claims through the store, never twice; heartbeats; hand-back; wake-ups; reload.

Spec: BROKER-011, BROKER-007, BROKER-009.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from conveyor import Conveyor, ManualClock
from conveyor.broker import Envelope
from conveyor.broker.source import BrokerSource
from conveyor.worker import Worker

from ..conftest import AppFactory
from ..core_support import running
from .conftest import settings_for
from .test_publish import depth


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def consumer(app: Conveyor, **options: Any) -> Worker:
    options.setdefault("handle_signals", False)
    options.setdefault("idle_delay", 0.05)
    made = app.worker(**options)
    assert isinstance(made, Worker)
    assert isinstance(made.source, BrokerSource)
    return made


class Gate:
    """A handler that records its runs and blocks until opened."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.started = threading.Event()
        self.open = threading.Event()

    def __call__(self, n: int) -> None:
        self.runs.append(n)
        self.started.set()
        assert self.open.wait(30), "the test never opened the gate"


def test_a_duplicate_message_for_a_running_job_never_starts_it_again(app: Conveyor) -> None:
    """BROKER-011: the claim is conditional; the duplicate is acknowledged and changes nothing."""
    gate = Gate()
    app.register("slow", gate)
    job = app.publish("slow", 1)
    first = consumer(app, worker_id="first")
    with running(first):
        assert gate.started.wait(10)
        mode = app.broker
        assert mode is not None
        assert not mode.hand_over([Envelope.of(job, app.now())] * 3), "three duplicates"
        second = consumer(app, worker_id="second")
        with running(second) as stats:
            wait_until(lambda: depth(app) == 0, what="the duplicates to be taken")
            wait_until(lambda: second.stats.cycles == 3, what="the duplicates to be settled")
            assert app.get(job.id).state == "processing"
            gate.open.set()
            wait_until(lambda: app.get(job.id).state == "finished", what="the job to finish")
        assert stats[0].jobs == 0
    assert gate.runs == [1]
    assert app.get(job.id).attempts == 1


def test_heartbeats_flow_while_a_handler_blocks(make_app: AppFactory, broker_prefix: str) -> None:
    """A handler blocking for 5 heartbeat intervals keeps its connection (no reconnect)."""
    app = make_app(broker_settings=settings_for(broker_prefix, heartbeat=1))
    app.register("sleepy", lambda: time.sleep(5))
    app.register("quick", lambda: None)
    app.publish("sleepy")
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: worker.stats.jobs == 1, timeout=20, what="the sleepy job")
        app.publish("quick")
        wait_until(lambda: worker.stats.jobs == 2, what="the next job")
        assert worker.source._generation == 1, "the connection survived the long handler"


def test_a_busy_consumer_hands_its_prefetched_messages_back(
    make_app: AppFactory, broker_prefix: str
) -> None:
    app = make_app(broker_settings=settings_for(broker_prefix, hand_back_after=0.3, prefetch=5))
    gate = Gate()
    app.register("slow", gate)
    quick: list[int] = []
    app.register("quick", quick.append)
    app.publish("slow", 0)
    busy = consumer(app, worker_id="busy")
    with running(busy):
        assert gate.started.wait(10)
        for n in range(4):
            app.publish("quick", n)
        time.sleep(0.6)  # the busy consumer takes them (prefetch 5), then hands them back
        idle = consumer(app, worker_id="idle")
        with running(idle):
            wait_until(lambda: idle.stats.jobs == 4, what="the idle consumer to run them")
            assert sorted(quick) == [0, 1, 2, 3]
            assert busy.stats.jobs == 0
            gate.open.set()
            wait_until(lambda: busy.stats.jobs == 1, what="the slow job")


def test_stopping_returns_prefetched_messages(make_app: AppFactory, broker_prefix: str) -> None:
    """A graceful stop finishes the current job and returns what it prefetched."""
    app = make_app(broker_settings=settings_for(broker_prefix, hand_back_after=60, prefetch=5))
    gate = Gate()
    app.register("slow", gate)
    app.publish("slow", 0)
    for n in range(1, 4):
        app.publish("slow", n)
    worker = consumer(app)
    with running(worker) as stats:
        assert gate.started.wait(10)
        wait_until(lambda: depth(app) == 0, what="the consumer to prefetch every message")
        worker.stop("SIGTERM")
        gate.open.set()
    assert stats[0].jobs == 1
    # RabbitMQ requeues returned messages asynchronously (a quorum queue commits it first).
    wait_until(lambda: depth(app) == 3, what="the three prefetched messages to be back")
    assert sorted(job.state for job in app.jobs()) == ["finished", "ready", "ready", "ready"]


def test_a_job_unblocked_by_another_is_handed_over_at_once(app: Conveyor) -> None:
    """BROKER-009: the dependent's message was consumed while it was blocked; finishing its
    dependency hands it over again, without the repair loop."""
    gate = Gate()
    app.register("slow", gate)
    ran: list[str] = []
    app.register("note", ran.append)
    first = app.publish("slow", 1)
    after = app.publish("note", "after", depends_on=[first.id])
    grouped = app.publish("note", "grouped", serial_group="g")
    second = app.publish("note", "second", serial_group="g")
    worker = consumer(app, worker_id="one")
    with running(worker):
        assert gate.started.wait(10)
        other = consumer(app, worker_id="two")
        with running(other):
            wait_until(lambda: "grouped" in ran and "second" in ran, what="the group")
            wait_until(lambda: depth(app) == 0, what="every message to be taken")
            assert app.get(after.id).state == "ready", "blocked, and its message is gone"
            gate.open.set()
            wait_until(lambda: app.get(after.id).state == "finished", what="the dependent")
    assert ran.index("grouped") < ran.index("second")
    assert app.get(grouped.id).state == app.get(second.id).state == "finished"


def test_the_outcome_s_write_reads_the_dependents_it_hands_over(
    app: Conveyor, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BROKER-009 on PostgreSQL: the write that records a job's end also reads its
    dependents, so the hand-over needs no lookup of its own; the dependent still runs."""
    if backend != "postgresql":
        pytest.skip("the set-based write that reads the dependents is PostgreSQL's")
    import re

    import psycopg

    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(" ".join(str(query).split()))
        return execute(cursor, query, *args, **kwargs)

    ran: list[str] = []
    app.register("note", ran.append)
    first = app.publish("note", "first")
    after = app.publish("note", "after", depends_on=[first.id])
    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    with running(consumer(app)):
        wait_until(lambda: app.get(after.id).state == "finished", what="the dependent")
    monkeypatch.undo()
    assert ran == ["first", "after"]
    writes = [s for s in sent if s.startswith("WITH written AS (UPDATE")]
    assert writes
    assert all("depends_on_id" in s for s in writes)
    lookups = [s for s in sent if re.match(r"SELECT \S*dependencies\.job_id FROM", s)]
    assert lookups == [], "the dependents were looked up again"


def test_lower_priority_numbers_are_consumed_first(make_app: AppFactory) -> None:
    app = make_app(priorities=[10, 20, 30])
    ran: list[int] = []
    app.register("step", ran.append)
    for priority in (30, 30, 20, 10, 20, 10):
        app.publish("step", priority, priority=priority)
    assert consumer(app, stop_when_empty=True).run().jobs == 6
    assert ran == [10, 10, 20, 20, 30, 30]


def test_a_restricted_consumer_takes_only_its_priorities(make_app: AppFactory) -> None:
    app = make_app(priorities=[10, 20, 30])
    ran: list[int] = []
    app.register("step", ran.append)
    for priority in (30, 20, 10):
        app.publish("step", priority, priority=priority)
    assert consumer(app, priorities="20-", stop_when_empty=True).run().jobs == 2
    assert ran == [20, 30]
    assert consumer(app, priorities="-10", stop_when_empty=True).run().jobs == 1
    assert ran == [20, 30, 10]


def test_reload_requests_stop_that_many_running_consumers(
    app: Conveyor, clock: ManualClock
) -> None:
    app.register("task", lambda: None)
    one, two = consumer(app, worker_id="one"), consumer(app, worker_id="two")
    with running(one), running(two):
        wait_until(lambda: one.source._controls_on and two.source._controls_on)
        app.reload_consumers("default", 1)
        wait_until(lambda: one.stopping or two.stopping, what="one consumer to stop")
        time.sleep(0.3)
        assert [one.stats.reload_requested, two.stats.reload_requested].count(True) == 1
        survivor = two if one.stats.reload_requested else one
        assert not survivor.stopping
        app.publish("task")
        wait_until(lambda: survivor.stats.jobs == 1, what="the survivor to keep working")
        app.reload_consumers("default", 1)
        wait_until(lambda: survivor.stats.reload_requested, what="the second reload")
    app.reload_consumers("default", 1)  # nobody runs: the request waits in the queue
    clock.advance(timedelta(seconds=1))
    late = consumer(app, worker_id="late")  # started after the request: runs new code
    with running(late):
        time.sleep(0.5)
        assert not late.stats.reload_requested
        assert not late.stopping


def test_a_batch_claims_one_job_per_message_and_keeps_the_order(make_app: AppFactory) -> None:
    """--batch-size N: N messages of one queue claim up to N jobs in one claim."""
    app = make_app(priorities=[10, 20])
    ran: list[int] = []
    app.register("step", ran.append)
    for priority in (20, 20, 20, 10, 10, 10, 20):
        app.publish("step", priority, priority=priority)
    worker = consumer(app, stop_when_empty=True, batch_size=3, prefetch=10)
    assert worker.run().jobs == 7
    assert ran == [10, 10, 10, 20, 20, 20, 20]
    assert depth(app, "default", 10) == depth(app, "default", 20) == 0


def test_a_hand_over_that_meets_a_lost_connection_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the fault suite (pg_terminate_backend in broker mode): the database going away
    after a commit, while looking for jobs the commit made claimable, was logged at ERROR with
    a traceback, which reads as a crash; it is a one-line warning (the repair loop hands the
    jobs over)."""
    import types

    from sqlalchemy.exc import OperationalError

    from conveyor.broker.mode import BrokerMode

    mode = object.__new__(BrokerMode)

    def lost(jobs: object, dependents_read: object) -> dict[str, object]:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    mode._after_commit = lost  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="conveyor"):
        assert mode.after_commit([types.SimpleNamespace(id="7")]) == {}  # type: ignore[list-item]
    (record,) = [r for r in caplog.records if "handing jobs 7" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert "repair loop" in record.getMessage()
