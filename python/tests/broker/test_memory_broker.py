"""Broker mode on the in-memory broker (no RabbitMQ): the worker's rules hold with concurrency.

Consumers run on the same Worker as polling workers, through the broker's JobSource; these
tests drive them fast, in one process, over the memory store and ``memory://`` brokers.

Spec: BROKER-011, BROKER-006, BROKER-009, GROUP-001..003, UNIQ rules.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.broker import BrokerSettings, Envelope
from conveyor.broker.memory import MemoryBroker
from conveyor.broker.source import BrokerSource

from .test_consumer import consumer, running, wait_until


@pytest.fixture
def make_app() -> Iterator[Callable[..., Conveyor]]:
    """Apps sharing one memory broker (and, with ``store=``, one store)."""
    url = f"memory://{uuid.uuid4().hex}"
    apps: list[Conveyor] = []

    def make(**options: Any) -> Conveyor:
        options.setdefault("broker_settings", BrokerSettings(prefix="t."))
        app = Conveyor("memory://", broker_url=url, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def broker_of(app: Conveyor) -> MemoryBroker:
    mode = app.broker
    assert mode is not None
    assert isinstance(mode.broker, MemoryBroker)
    return mode.broker


def depth(app: Conveyor) -> int:
    broker = broker_of(app)
    return sum(broker.depth(name) for name in broker.declared if not name.endswith(".control"))


class Log:
    """Starts and ends of runs, by job key, with the moments they happened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str | None, float]] = []

    def add(self, kind: str, key: str, group: str | None) -> None:
        with self.lock:
            self.events.append((kind, key, group, time.monotonic()))

    def runs(self) -> list[str]:
        return [key for kind, key, _, _ in self.events if kind == "end"]

    def check_groups_serial(self) -> None:
        """No two runs of one group overlap, and each group's jobs start in publish order."""
        running: dict[str, str] = {}
        started: dict[str, list[int]] = {}
        for kind, key, group, _ in self.events:
            if group is None:
                continue
            if kind == "start":
                assert group not in running, f"{key} started while {running[group]} ran"
                running[group] = key
                started.setdefault(group, []).append(int(key.split(":")[1]))
            else:
                assert running.pop(group) == key
        for group, order in started.items():
            assert order == sorted(order), f"group {group} started out of order: {order}"


def register(app: Conveyor, log: Log) -> None:
    def sync_work(key: str, group: str | None = None, sleep: float = 0.001) -> None:
        log.add("start", key, group)
        time.sleep(sleep)
        log.add("end", key, group)

    async def async_work(key: str, group: str | None = None, sleep: float = 0.001) -> None:
        log.add("start", key, group)
        await asyncio.sleep(sleep)
        log.add("end", key, group)

    app.register("sync", sync_work)
    app.register("async", async_work)


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_serial_groups_never_overlap_and_start_in_order(
    make_app: Callable[..., Conveyor], concurrency: int
) -> None:
    app = make_app()
    log = Log()
    register(app, log)
    total = 0
    for index in range(12):
        for group in ("a", "b", "c"):
            kind = "async" if index % 2 else "sync"
            app.publish(kind, {"key": f"{group}:{index}", "group": group}, serial_group=group)
            total += 1
    for index in range(20):
        app.publish("async" if index % 3 else "sync", {"key": f"loose:{index}"})
        total += 1
    worker = consumer(app, concurrency=concurrency)
    with running(worker):
        wait_until(lambda: len(log.runs()) >= total, what="every job")
        wait_until(lambda: worker.stats.jobs == total, what="every outcome recorded")
    assert sorted(log.runs()) == sorted(set(log.runs())), "no job ran twice"
    log.check_groups_serial()
    assert {job.state for job in app.jobs(limit=1000)} == {"finished"}
    assert depth(app) == 0


def test_two_concurrent_consumers_run_each_job_once(make_app: Callable[..., Conveyor]) -> None:
    publisher = make_app()
    log = Log()
    register(publisher, log)
    for index in range(40):
        publisher.publish(
            "sync",
            {"key": f"g{index % 4}:{index}", "group": f"g{index % 4}"},
            serial_group=f"g{index % 4}",
        )
    # Two workers of one app share the store (a memory store lives in its app).
    workers = [consumer(publisher, concurrency=4, worker_id=f"w{n}") for n in range(2)]
    with running(workers[0]), running(workers[1]):
        wait_until(lambda: sum(w.stats.jobs for w in workers) == 40, what="every job")
    assert len(log.runs()) == 40 == len(set(log.runs()))
    log.check_groups_serial()


def test_unique_work_runs_once(make_app: Callable[..., Conveyor]) -> None:
    app = make_app()
    log = Log()
    register(app, log)
    for index in range(6):
        app.publish("sync", {"key": f"u:{index}"}, identifier="report-1", unique=True)
    worker = consumer(app, concurrency=8)
    with running(worker):
        wait_until(
            lambda: {job.state for job in app.jobs()} <= {"finished", "redundant"},
            what="every unique job settled",
        )
    assert len(log.runs()) == 1, "one run for the unique identifier"
    states = sorted(job.state for job in app.jobs())
    assert states.count("finished") == 1
    assert set(states) <= {"finished", "redundant"}


def test_mixed_sync_and_async_handlers_run_at_once(make_app: Callable[..., Conveyor]) -> None:
    """Concurrency 4: two sync and two async handlers that each wait for all four."""
    app = make_app()
    barrier = threading.Barrier(4, timeout=10)
    ran: list[str] = []

    def sync_meet(name: str) -> None:
        barrier.wait()
        ran.append(name)

    async def async_meet(name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        ran.append(name)

    app.register("sync_meet", sync_meet)
    app.register("async_meet", async_meet)
    for name in ("s1", "s2"):
        app.publish("sync_meet", name)
    for name in ("a1", "a2"):
        app.publish("async_meet", name)
    worker = consumer(app, concurrency=4)
    with running(worker):
        wait_until(lambda: worker.stats.jobs == 4, what="the four jobs")
    assert sorted(ran) == ["a1", "a2", "s1", "s2"]
    assert worker.stats.outcomes == {"finished": 4}


def test_a_stop_hands_running_and_claimed_jobs_back_to_the_broker(
    make_app: Callable[..., Conveyor],
) -> None:
    """A stop (SIGTERM) lets running jobs finish within the grace period, hands back those
    still running after it and those claimed but not started, and returns the messages never
    claimed: every job is claimable again, with a message."""
    app = make_app()
    release = threading.Event()
    started = threading.Semaphore(0)

    def block(n: int) -> None:
        started.release()
        release.wait(20)

    app.register("block", block)
    for n in range(10):
        app.publish("block", n)
    worker = consumer(app, concurrency=2, batch_size=4, grace_period=0.2)
    with running(worker) as stats:
        for _ in range(2):
            assert started.acquire(timeout=10)
        worker.stop("SIGTERM")
        wait_until(lambda: bool(stats), what="the worker to stop")
    release.set()
    jobs = app.jobs()
    assert len(jobs) == 10
    assert all(job.state in ("ready", "waiting") for job in jobs), [job.state for job in jobs]
    assert all(job.attempts == 0 for job in jobs), "handed back: attempts refunded"
    # One message per job: the ones never claimed came back, the others were handed over anew.
    assert depth(app) == 10
    follower = consumer(app, concurrency=4)
    with running(follower):
        wait_until(lambda: follower.stats.jobs == 10, what="the jobs to run again")


def test_poison_messages_are_acknowledged_and_the_jobs_still_run(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app()
    ran: list[int] = []
    app.register("work", ran.append)
    app.publish("work", 1)
    broker = broker_of(app)
    queue = next(name for name in broker.declared if not name.endswith(".control"))
    for body in (b"", b"not json", b"[1, 2]", b'{"job_id": "1"}', bytes(range(256))):
        broker.put(queue, body)
    app.publish("work", 2)
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: worker.stats.jobs == 2, what="both jobs")
        wait_until(lambda: depth(app) == 0, what="the poison to be acknowledged")
    assert sorted(ran) == [1, 2]


def test_a_duplicate_message_starts_nothing_and_is_acknowledged(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app()
    ran: list[int] = []
    app.register("work", ran.append)
    job = app.publish("work", 1)
    mode = app.broker
    assert mode is not None
    for _ in range(3):  # duplicates of the message
        mode.hand_over([Envelope.of(job, app.now())])
    worker = consumer(app, max_cycles=50)
    with running(worker):
        wait_until(lambda: worker.stats.jobs == 1 and depth(app) == 0, what="the duplicates")
    assert ran == [1]


def test_cycles_limit_and_jobs_limit_stop_a_consumer(make_app: Callable[..., Conveyor]) -> None:
    app = make_app()
    app.register("work", lambda n: None)
    for n in range(5):
        app.publish("work", n)
    stats = consumer(app, max_jobs=3).run()
    assert stats.jobs == 3
    assert "limit 3" in stats.stop_reason
    idle = consumer(app, max_cycles=3, idle_delay=0.01).run()
    assert idle.cycles == 3


def test_process_drains_the_queues_and_returns(make_app: Callable[..., Conveyor]) -> None:
    app = make_app()
    ran: list[int] = []
    app.register("work", ran.append)
    for n in range(25):
        app.publish("work", n)
    stats = app.process(handle_signals=False, concurrency=3)
    assert stats.jobs == 25
    assert sorted(ran) == list(range(25))


def test_a_reload_request_stops_the_consumer_with_the_flag_set(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app()
    app.register("work", lambda n: None)
    worker = consumer(app)
    with running(worker) as stats:
        wait_until(lambda: bool(broker_of(app).declared), what="the consumer to declare")
        app.reload_consumers("default", 1)
        wait_until(lambda: bool(stats), what="the reload")
    assert stats[0].reload_requested


def test_consumers_hand_over_delayed_and_outage_jobs_without_a_scheduled_repair(
    make_app: Callable[..., Conveyor],
) -> None:
    """A delayed job, and a job published while the broker was down (``broker_failed``), have
    no message; a running consumer's own repair loop hands them over once due / once the
    broker is back, with no ``conveyor process`` from cron (BrokerSettings.repair_every)."""
    app = make_app(broker_settings=BrokerSettings(prefix="t.", repair_every=0.05))
    ran: list[str] = []
    app.register("work", ran.append)
    broker = broker_of(app)
    broker.failing = "connection refused (a test outage)"
    during = app.publish("work", "during the outage")
    assert during.state == "broker_failed"
    broker.failing = None
    later = app.publish("work", "delayed", delay=0.2)
    assert depth(app) == 0  # neither has a message
    with running(consumer(app)):
        wait_until(lambda: len(ran) == 2, what="both jobs to run")
    assert sorted(ran) == ["delayed", "during the outage"]
    assert app.get(during.id).state == app.get(later.id).state == "finished"


def test_a_failing_repair_loop_leaves_the_consumer_running(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app(broker_settings=BrokerSettings(prefix="t.", repair_every=0.01))
    ran: list[int] = []
    app.register("work", ran.append)
    worker = consumer(app)
    assert isinstance(worker.source, BrokerSource)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("the store went away")

    worker.source.repair = broken
    with running(worker):
        wait_until(lambda: len(calls) >= 2, what="the repair loop to run twice")
        app.publish("work", 1)
        wait_until(lambda: ran == [1], what="a job to run after repair failures")


def test_repair_every_none_leaves_handing_over_to_the_schedule(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app(broker_settings=BrokerSettings(prefix="t.", repair_every=None))
    app.register("work", lambda n: None)
    worker = consumer(app)
    assert isinstance(worker.source, BrokerSource)
    calls: list[int] = []
    worker.source.repair = lambda: calls.append(1)
    with running(worker):
        app.publish("work", 1)
        wait_until(lambda: worker.stats.jobs == 1, what="the job to run")
    assert calls == []


def test_an_envelope_of_a_later_minor_version_with_unknown_members_runs_its_job(
    make_app: Callable[..., Conveyor],
) -> None:
    """VER-005: a consumer ignores members it does not know and never drops such a message.

    The job has no message of its own (handing over failed) and no repair loop runs, so only
    the later version's message can start it."""
    app = make_app(broker_settings=BrokerSettings(prefix="t.", repair_every=None))
    ran: list[int] = []
    app.register("work", ran.append)
    broker = broker_of(app)
    broker.failing = "down"
    job = app.publish("work", 1)
    broker.failing = None
    assert app.get(job.id).state == "broker_failed"
    mode = app.broker
    assert mode is not None
    envelope = Envelope.of(job, app.now())
    later = {**envelope.to_dict(), "specversion": "0.9", "trace_id": "4bf9", "route": {"x": [1]}}
    broker.put(mode.route(envelope, mode.bands()), json.dumps(later).encode())
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: worker.stats.jobs == 1, what="the job to run")
    assert ran == [1]


@pytest.mark.parametrize("concurrency", [1, 8])
def test_the_default_prefetch_holds_a_whole_adaptive_batch(
    make_app: Callable[..., Conveyor], concurrency: int
) -> None:
    """While a backlog waits, a claim takes up to the adaptive batch's bound: by default a
    consumer holds that many messages beyond its slots, so a claim is not cut short by the
    prefetch window (at 64 beyond them, a drain made three times a polling worker's claims)."""
    from conveyor.worker import AUTO_BATCH_LIMIT

    app = make_app()
    app.register("task", lambda: None)
    worker = app.worker(concurrency=concurrency, handle_signals=False)
    source = worker.source  # type: ignore[attr-defined]
    assert isinstance(source, BrokerSource)
    assert source.settings.prefetch == concurrency + AUTO_BATCH_LIMIT
    sized = app.worker(concurrency=concurrency, batch_size=300, handle_signals=False)
    assert sized.source.settings.prefetch == concurrency + 300  # type: ignore[attr-defined]
