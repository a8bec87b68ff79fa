"""Publishing in broker mode: after the commit, confirmed, persistent; failures end broker_failed.

Spec: BROKER-012, BROKER-002, BROKER-006, BROKER-008.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from conveyor import ConfigurationError, Conveyor, ManualClock
from conveyor.broker import Envelope, InvalidEnvelope
from conveyor.broker.envelope import _surely_valid
from conveyor.schemacheck import validator

from ..conftest import AppFactory
from .conftest import AMQP_URL, settings_for


def depth(app: Conveyor, queue: str = "default", band: int = 100) -> int:
    mode = app.broker
    assert mode is not None
    name = mode.topology.queue_name(queue, band)
    return mode.broker.queue_depths([name])[name]


def take_bodies(app: Conveyor, queue: str = "default", band: int = 100) -> list[bytes]:
    """Read (and acknowledge) every message of one job queue."""
    mode = app.broker
    assert mode is not None
    name = mode.topology.queue_name(queue, band)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, properties, body = channel.basic_get(name, auto_ack=True)
            if method is None:
                return bodies
            assert properties.delivery_mode == 2, "messages are persistent"
            # AMQP-004: what an outside consumer can rely on besides the body
            assert properties.content_type == "application/json"
            assert properties.type == "conveyor.job"
            assert properties.message_id == json.loads(body)["job_id"]
            bodies.append(body)
    finally:
        if connection.is_open:  # the broker may have closed it
            connection.close()


def store_engine(app: Conveyor) -> Engine:
    """The SQL store's engine (the broker tests run over SQL stores only)."""
    engine = getattr(app.store, "engine", None)
    assert isinstance(engine, Engine)
    return engine


def bodies_when(app: Conveyor, count: int, timeout: float = 10.0) -> list[bytes]:
    """Messages of the default queue, read until ``count`` have come (hand-overs from a
    caller's bare Connection arrive from a thread, a few milliseconds after its commit)."""
    bodies: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count and time.monotonic() < deadline:
        try:
            bodies.extend(take_bodies(app))
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 404:  # the queue is declared with its first message
                raise
        except pika.exceptions.ConnectionClosedByBroker as error:
            # 541 noproc: a quorum queue declared a moment ago whose process is not up yet
            if error.reply_code != 541:
                raise
        if len(bodies) < count:
            time.sleep(0.01)
    return bodies


def test_a_published_job_is_handed_over_once_committed(app: Conveyor) -> None:
    app.register("task", lambda: None)
    job = app.publish("task")
    bodies = take_bodies(app)
    assert len(bodies) == 1
    envelope = json.loads(bodies[0])
    assert list(validator("envelope").iter_errors(envelope)) == []
    assert envelope["job_id"] == job.id
    assert (envelope["queue"], envelope["priority"]) == ("default", 100)
    assert app.get(job.id).state == "ready"


def test_a_unique_key_conflict_hands_over_only_a_replaced_holder(app: Conveyor) -> None:
    """UKEY-007: a discarded duplicate sends no message; a replaced holder is handed over."""
    app.register("task", lambda n: None)
    unique = {"key": "k"}
    holder = app.publish("task", {"n": 1}, unique=unique)
    assert len(take_bodies(app)) == 1
    assert app.publish("task", {"n": 2}, unique=unique).conflict == "discarded"
    assert take_bodies(app) == []
    replaced = app.publish("task", {"n": 3}, unique={**unique, "conflict": "replace"})
    assert (replaced.id, replaced.conflict) == (holder.id, "replaced")
    assert [json.loads(body)["job_id"] for body in take_bodies(app)] == [holder.id]


def test_the_queues_are_durable_quorum_queues(app: Conveyor) -> None:
    app.register("task", lambda: None)
    app.publish("task")
    mode = app.broker
    assert mode is not None
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        name = mode.topology.queue_name("default", 100)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(name, durable=True, arguments={"x-queue-type": "classic"})
        assert refused.value.reply_code == 406, "the queue exists as a quorum queue"
    finally:
        if connection.is_open:
            connection.close()


def test_bulk_publishing_hands_over_every_job(make_app: AppFactory) -> None:
    app = make_app(broker_settings=settings_for(make_app_prefix(make_app), publish_chunk=64))
    app.register("task", lambda n: None)
    with app.bulk(size=100) as bulk:
        for n in range(300):
            app.publish("task", {"n": n})
    assert len(bulk.jobs) == 300
    assert depth(app) == 300


def make_app_prefix(make_app: AppFactory) -> str:
    probe = make_app()
    assert probe.broker is not None
    return probe.broker.settings.prefix


def test_a_delayed_job_is_handed_over_by_the_repair_loop_once_due(
    app: Conveyor, clock: ManualClock
) -> None:
    app.register("task", lambda: None)
    job = app.publish("task", delay=timedelta(minutes=5))
    assert depth(app) == 0, "not due: nothing to wake a consumer for"
    assert app.repair().republished == 0
    clock.advance(timedelta(minutes=5))
    report = app.repair()
    assert report.republished == 1
    assert json.loads(take_bodies(app)[0])["job_id"] == job.id
    assert app.repair().republished == 1, "the message was taken without a claim: again"


def test_an_unreachable_broker_leaves_jobs_broker_failed_and_raises_nothing(
    make_app: AppFactory, broker_prefix: str
) -> None:
    secret = "s3cret-Pa55word"
    app = make_app(
        broker_url=f"amqp://conveyor:{secret}@127.0.0.1:1/%2F",
        broker_settings=settings_for(broker_prefix, connect_timeout=1.0),
    )
    app.register("task", lambda: None)
    job = app.publish("task")
    with app.bulk() as bulk:
        for _ in range(3):
            app.publish("task")
    for stored in [job, *bulk.jobs]:
        assert stored.state == "broker_failed", "publish returns the job as stored"
        failed = app.get(stored.id)
        assert stored == failed
        assert failed.state == "broker_failed"
        assert failed.last_error is not None
        assert failed.last_error.kind == "broker"
        assert "127.0.0.1:1" in failed.last_error.message
        assert secret not in failed.last_error.message
        assert "***" in failed.last_error.message
    report = app.repair()
    assert report.problem is not None
    assert secret not in report.summary()
    assert app.get(job.id).state == "broker_failed", "no churn while the broker is down"


def test_the_repair_loop_hands_broker_failed_jobs_over_when_the_broker_is_back(
    make_app: AppFactory, broker_prefix: str
) -> None:
    down = make_app(
        broker_url="amqp://guest:guest@127.0.0.1:1/%2F",
        broker_settings=settings_for(broker_prefix, connect_timeout=1.0),
    )
    ran: list[int] = []
    down.register("task", ran.append)
    for n in range(5):
        down.publish("task", n)
    assert {j.state for j in down.jobs()} == {"broker_failed"}
    back = make_app()  # the same store, with the broker reachable again
    back.register("task", ran.append)
    report = back.repair()
    assert report.requeued == 5
    assert report.problem is None
    assert back.worker(stop_when_empty=True, handle_signals=False).run().jobs == 5
    assert sorted(ran) == [0, 1, 2, 3, 4]


def test_an_unconfirmed_publish_ends_broker_failed(
    make_app: AppFactory, broker_prefix: str
) -> None:
    app = make_app(broker_settings=settings_for(broker_prefix, confirm_timeout=1e-6))
    app.register("task", lambda: None)
    job = app.publish("task")
    failed = app.get(job.id)
    assert failed.state == "broker_failed"
    assert job == failed, "publish returns the job as stored"
    assert failed.last_error is not None
    assert "did not confirm" in failed.last_error.message


def test_a_queue_deleted_under_the_publisher_fails_the_publish_then_recovers(
    app: Conveyor,
) -> None:
    app.register("task", lambda: None)
    app.publish("task")
    mode = app.broker
    assert mode is not None
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().queue_delete(mode.topology.queue_name("default", 100))
    connection.close()
    lost = app.publish("task")
    assert app.get(lost.id).state == "broker_failed", "returned as unroutable"
    assert app.get(lost.id).last_error.message.endswith("does not exist")  # type: ignore[union-attr]
    again = app.publish("task")
    assert app.get(again.id).state == "ready", "the queue was declared again"
    assert app.repair().requeued == 1


def test_messages_lost_by_the_broker_are_handed_over_again(
    app: Conveyor, clock: ManualClock
) -> None:
    """BROKER-008: a purged queue strands no job once the jobs are older than stale_after."""
    ran: list[int] = []
    app.register("task", ran.append)
    for n in range(4):
        app.publish("task", n)
    take_bodies(app)  # the broker lost them (a purge, a deleted queue)
    assert app.repair().republished == 0, "too recent to tell from messages in flight"
    clock.advance(timedelta(minutes=2))
    assert app.repair().republished == 4
    assert app.repair().republished == 0, "the broker holds a message for each"
    assert app.worker(stop_when_empty=True, handle_signals=False).run().jobs == 4
    assert sorted(ran) == [0, 1, 2, 3]


def test_a_session_publish_is_handed_over_when_the_session_commits(app: Conveyor) -> None:
    engine = store_engine(app)
    app.register("task", lambda: None)
    with Session(engine) as session:
        job = app.publish("task", connection=session)
        assert depth(app) == 0, "not before the commit (BROKER-012)"
        session.commit()
    bodies = take_bodies(app)
    assert [json.loads(body)["job_id"] for body in bodies] == [job.id]


def test_a_connection_publish_is_handed_over_once_its_commit_is_visible(app: Conveyor) -> None:
    engine = store_engine(app)
    app.register("task", lambda: None)
    with engine.begin() as connection:
        jobs = [app.publish("task", connection=connection) for _ in range(3)]
        assert depth(app) == 0, "not before the commit (BROKER-012)"
    bodies = bodies_when(app, 3)
    assert sorted(json.loads(body)["job_id"] for body in bodies) == sorted(j.id for j in jobs)
    assert app.process().jobs == 3
    assert {app.get(job.id).state for job in jobs} == {"finished"}


def test_a_rolled_back_connection_publish_hands_nothing_over(app: Conveyor) -> None:
    engine = store_engine(app)
    app.register("task", lambda: None)
    with engine.connect() as connection:
        with connection.begin() as transaction:
            app.publish("task", connection=connection)
            transaction.rollback()
        with connection.begin():  # a later transaction commits; the rolled back job is gone
            kept = app.publish("task", connection=connection)
    bodies = bodies_when(app, 1)
    assert [json.loads(body)["job_id"] for body in bodies] == [kept.id]


ENVELOPES = st.fixed_dictionaries(
    {
        "specversion": st.sampled_from(
            ["0.1", "0.0", "0.2", "0.3", "1.0", "0.1.0", "x", 1, "0.1\n"]
        ),
        "job_id": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.text()),
        "queue": st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,63}", fullmatch=True), st.text()),
        "priority": st.one_of(st.integers(-5, 40000), st.booleans(), st.floats(0, 10)),
        "published_at": st.sampled_from(
            ["2026-01-01T09:30:00.125Z", "2026-01-01T09:30:00Z", "2026-01-01 09:30:00.125Z"]
        ),
    },
    optional={"extra": st.integers()},
)


@given(document=ENVELOPES)
@settings(max_examples=300, deadline=None)
def test_the_envelope_fast_check_never_accepts_what_the_schema_refuses(
    document: dict[str, object],
) -> None:
    # Valid: the schema (with ECMA-262 patterns) and major version 0, which this consumer reads
    # whatever the minor version (VER-005).
    readable = ("0.0", "0.1", "0.2", "0.3")
    valid = validator("envelope").is_valid(document) and document["specversion"] in readable
    if _surely_valid(document):
        assert valid
    body = json.dumps(document).encode()
    if valid:
        assert Envelope.parse(body).job_id == document["job_id"]
    else:
        with pytest.raises(InvalidEnvelope):
            Envelope.parse(body)


def test_a_broker_url_that_cannot_work_fails_when_the_app_is_made() -> None:
    """Not after a commit: a wrong scheme is a configuration error at construction."""
    with pytest.raises(ConfigurationError, match="amqp://") as refused:
        Conveyor("memory://", broker_url="http://user:Hidden-pw@localhost/")
    assert "Hidden-pw" not in str(refused.value)
