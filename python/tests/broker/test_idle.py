"""An idle consumer: its idle waits count as cycles (``--cycles-limit``), and a stop request or
SIGTERM ends its wait at once instead of after it.

Before, only jobs counted as cycles in broker mode, so an idle ``conveyor consume
--cycles-limit 3`` never stopped; and SIGTERM was noticed only when the current wait for
messages (up to a second) ended.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pika
import pytest

from conveyor import Conveyor, WorkerStats

from ..conftest import TEST_PREFIX
from .conftest import AMQP_URL, require_amqp
from .processes import Environment, processes
from .test_consumer import consumer

# How long an idle consumer may take to return from run() once asked to stop: the time to
# cancel its subscriptions, close its connection and delete its worker record, far below the
# idle wait it was in (30 s). A loaded machine takes about 0.8 s, a quiet one under 0.1 s.
PROMPT = 3.0


def run_in_thread(worker: object, timeout: float) -> WorkerStats:
    """Run a consumer that must stop by itself within ``timeout`` seconds."""
    result: list[WorkerStats] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(worker.run())  # type: ignore[attr-defined]
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop("the test gave up")  # type: ignore[attr-defined]
        thread.join(30)
        pytest.fail(f"the consumer did not stop by itself within {timeout} s")
    assert errors == []
    return result[0]


def test_an_idle_consumer_stops_after_its_cycles_limit(app: Conveyor) -> None:
    stats = run_in_thread(consumer(app, max_cycles=3, idle_delay=0.05), timeout=10)
    assert stats.cycles == 3
    assert stats.jobs == 0
    assert stats.stop_reason == "ran 3 cycles (limit 3)"


def test_jobs_and_idle_waits_both_count_as_cycles(app: Conveyor) -> None:
    """As for a polling worker: one cycle ran the job, two found nothing."""
    ran: list[int] = []
    app.register("task", ran.append)
    app.publish("task", 1)
    stats = run_in_thread(consumer(app, max_cycles=3, idle_delay=0.05), timeout=10)
    assert ran == [1]
    assert (stats.jobs, stats.cycles) == (1, 3)


def test_an_idle_wait_is_one_cycle_delay_long(app: Conveyor) -> None:
    """As for a polling worker, a cycle is one look for work, and an idle consumer looks once
    per cycle delay (not at every turn of its connection)."""
    started = time.monotonic()
    stats = run_in_thread(consumer(app, max_cycles=3, idle_delay=0.4), timeout=10)
    assert stats.cycles == 3
    assert time.monotonic() - started >= 0.8


def test_an_idle_consumer_returns_at_once_when_stopped(app: Conveyor) -> None:
    """stop() from another thread (what SIGTERM does) ends a long idle wait at once."""
    for _ in range(3):
        worker = consumer(app, idle_delay=30)
        stopped_at: list[float] = []

        def stop_once_idle(worker: object = worker, stopped_at: list[float] = stopped_at) -> None:
            deadline = time.monotonic() + 10
            while not worker.source._receiving and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)
            stopped_at.append(time.monotonic())
            worker.stop("test")  # type: ignore[attr-defined]

        threading.Thread(target=stop_once_idle, daemon=True).start()
        run_in_thread(worker, timeout=15)
        assert time.monotonic() - stopped_at[0] < PROMPT


def test_sigterm_stops_an_idle_consumer_at_once(app: Conveyor) -> None:
    """The real signal, delivered to this process while run() waits in the main thread."""
    for _ in range(3):
        worker = consumer(app, idle_delay=30, handle_signals=True)
        sent_at: list[float] = []

        def signal_once_idle(worker: object = worker, sent_at: list[float] = sent_at) -> None:
            deadline = time.monotonic() + 10
            while not worker.source._receiving and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)
            if not worker.source._receiving:  # type: ignore[attr-defined]
                worker.stop("never subscribed")  # type: ignore[attr-defined]
                return
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)  # run() installed its handler before

        threading.Thread(target=signal_once_idle, daemon=True).start()
        stats = worker.run()
        returned = time.monotonic()
        assert sent_at, "the consumer never subscribed"
        assert stats.stop_reason.startswith("received SIGTERM")
        assert returned - sent_at[0] < PROMPT


@pytest.mark.slow
def test_consume_cycles_limit_stops_an_idle_broker_consumer(
    tmp_path: Path, broker_prefix: str
) -> None:
    """``conveyor consume --cycles-limit 3`` in broker mode exits by itself, like the polling
    worker: three cycle delays of 0.2 s, not never."""
    require_amqp()
    env = Environment.made(tmp_path, "sqlite", f"{TEST_PREFIX}idle_", broker_prefix, AMQP_URL)
    try:
        child = env.consumer("c1", "--cycles-limit", "3", "--cycle-delay", "0.2")
        with processes(child):
            assert child.wait(timeout=30) == 0, env.output("c1")
        assert "0 jobs in 3 cycles" in env.output("c1")
    finally:  # the queues the child declared
        delete_named_queues([f"{broker_prefix}default.p100", f"{broker_prefix}default.control"])


def delete_named_queues(names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()
