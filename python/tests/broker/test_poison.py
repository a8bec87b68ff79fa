"""Poison messages in the real queues: the consumer acknowledges and ignores each, stays up, and
runs the good job queued behind them (spec.md#BROKER-006).

Before, a date that matched the schema's pattern but was no date, or JSON nested 100,000 deep,
killed ``conveyor consume`` before the acknowledgement, and RabbitMQ handed the message to the
next consumer, which died too.
"""

from __future__ import annotations

import json
import logging

import pika
import pytest

from conveyor import Conveyor

from .conftest import AMQP_URL
from .test_consumer import consumer, running, wait_until
from .test_publish import depth

DEEP = 100_000
ENVELOPE = {
    "specversion": "0.2",
    "job_id": "1",
    "queue": "default",
    "priority": 100,
    "published_at": "2026-01-01T00:00:00.000Z",
}

POISON = [
    json.dumps({**ENVELOPE, "published_at": "2026-13-45T25:61:61.000Z"}).encode(),
    json.dumps({**ENVELOPE, "published_at": "0000-01-01T00:00:00.000Z"}).encode(),
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"9" * 5000,
    b"\xff not json",
]
CONTROL_POISON = [
    json.dumps({"command": "reload", "requested_at": "2026-13-45T25:61:61.000Z"}).encode(),
    json.dumps({"command": "reload", "requested_at": "0000-01-01T00:00:00.000Z"}).encode(),
    json.dumps({"command": "reload", "requested_at": [[[1]]]}).encode(),
    b"[" * DEEP + b"]" * DEEP,
    b'{"command":"reload","requested_at":' + b"[" * DEEP + b"]" * DEEP + b"}",
    b"9" * 5000,
]


def put_raw(app: Conveyor, name: str, bodies: list[bytes], arguments: dict[str, object]) -> None:
    """Publish bodies as they are into the AMQP queue ``name`` (declared if missing)."""
    mode = app.broker
    assert mode is not None
    mode.broker.declared.add(name)  # deleted with the test's queues
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(name, durable=True, arguments=arguments)
        for body in bodies:
            channel.basic_publish("", name, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def ready_messages(name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return int(connection.channel().queue_declare(name, passive=True).method.message_count)
    finally:
        connection.close()


def ignored(caplog: pytest.LogCaptureFixture, what: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage().startswith(what))


def test_poison_in_the_job_queue_is_acknowledged_and_the_good_job_runs(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    app.register("task", ran.append)
    mode = app.broker
    assert mode is not None
    name = mode.topology.queue_name("default", 100)
    put_raw(app, name, POISON, dict(mode.settings.queue_arguments))
    good = app.publish("task", 1)
    caplog.set_level(logging.WARNING, logger="conveyor.broker")
    # Prefetch 1: the good job's message reaches the consumer only once each poison message
    # before it is settled.
    worker = consumer(app, prefetch=1)
    with running(worker):
        wait_until(lambda: app.get(good.id).state == "finished", what="the good job")
        assert not worker.stopping, worker._stop_reason
        wait_until(lambda: depth(app) == 0, what="every message to be taken")
    assert ran == [1]
    assert ignored(caplog, "ignoring a message in") == len(POISON), "each once, acknowledged"
    assert all(len(record.getMessage()) < 600 for record in caplog.records)


def test_poison_in_the_control_queue_is_acknowledged_and_a_real_request_still_works(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    app.register("task", ran.append)
    mode = app.broker
    assert mode is not None
    control = mode.topology.control_name("default")
    put_raw(app, control, CONTROL_POISON, {})
    good = app.publish("task", 1)
    caplog.set_level(logging.WARNING, logger="conveyor.broker")
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: app.get(good.id).state == "finished", what="the good job")
        wait_until(
            lambda: (
                ignored(caplog, "ignoring a message in the control queue") == len(CONTROL_POISON)
            ),
            what="every poison control message to be ignored",
        )
        assert not worker.stopping, worker._stop_reason
        app.reload_consumers("default", 1)
        wait_until(lambda: worker.stats.reload_requested, what="the real reload request")
    assert ran == [1]
    assert ready_messages(control) == 0, "the poison was acknowledged, not returned"
