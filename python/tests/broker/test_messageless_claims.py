"""Claimable jobs without a message of their own strand no other job (spec.md#BROKER-010).

After a RabbitMQ outage, the jobs published during it are ``broker_failed``: claimable, but
without a message. A consumer claims the jobs its messages name, so the jobs published after
the outage run at once, with their own messages, and the ``broker_failed`` ones run once the
repair loop hands them over (BROKER-005). (A consumer treating a message as a wake-up, as the
conformance adapter does, takes the best claimable job instead, and then owes the queue a
message for the job the message named: ``BrokerMode.messages_owed``, tested below.)
"""

from __future__ import annotations

import time
from datetime import timedelta

from conveyor import Conveyor, ManualClock

from ..conftest import AppFactory
from .test_consumer import consumer, running, wait_until
from .test_publish import depth

# Nothing listens on port 1: every publish of this app fails at once, as during an outage.
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"

# Far below the repair loop's stale_after (60 s), and than any repair interval.
WITHOUT_THE_REPAIR_LOOP = 10.0


def test_jobs_published_during_and_after_an_outage_run_without_a_scheduled_repair(
    make_app: AppFactory,
) -> None:
    """The newer jobs run at once on their own messages; the ones published during the
    outage (``broker_failed``, no message) are handed over by the consumers' own repair loop
    (BrokerSettings.repair_every), with no ``conveyor process`` from cron."""
    app = make_app()
    outage = make_app(broker_url=UNREACHABLE)
    ran: list[int] = []
    for each in (app, outage):
        each.register("task", ran.append)
    failed_over = [outage.publish("task", n) for n in range(5)]
    assert {app.get(job.id).state for job in failed_over} == {"broker_failed"}
    workers = [consumer(app, worker_id=f"c{n}") for n in range(2)]
    with running(workers[0]), running(workers[1]):
        started = time.monotonic()
        later = [app.publish("task", n) for n in range(5, 15)]
        wait_until(
            lambda: all(app.get(job.id).state == "finished" for job in later + failed_over),
            timeout=WITHOUT_THE_REPAIR_LOOP,
            what="the jobs published during and after the outage",
        )
        assert time.monotonic() - started < WITHOUT_THE_REPAIR_LOOP
        wait_until(lambda: depth(app) == 0, what="every message to be used up")
    assert sorted(ran) == list(range(15))


def test_a_delayed_job_that_became_due_strands_no_newer_job(
    app: Conveyor, clock: ManualClock
) -> None:
    """A delayed job gets its message from the repair loop (the consumer's own, at its
    start); the newer job's message runs the newer job whatever that loop does."""
    ran: list[str] = []
    app.register("task", ran.append)
    delayed = app.publish("task", "delayed", delay=timedelta(seconds=30))
    clock.advance(timedelta(seconds=31))
    newer = app.publish("task", "newer")
    with running(consumer(app)):
        wait_until(
            lambda: app.get(newer.id).state == "finished",
            timeout=WITHOUT_THE_REPAIR_LOOP,
            what="the newer job",
        )
        wait_until(lambda: app.get(delayed.id).state == "finished", what="the delayed job")
    assert sorted(ran) == ["delayed", "newer"]


def test_what_a_claim_owes_the_queue_it_used_a_message_of(make_app: AppFactory) -> None:
    """One message per claimed job that a message did not name and that had none of its own
    in that queue; none for a job that merely came out of order."""
    app = make_app(priorities=[10, 20])
    app.register("task", lambda n: None)
    mode = app.broker
    assert mode is not None
    here = mode.topology.queue_name("default", 20)
    sent = app.publish("task", 1, priority=20)
    unsent = app.publish("task", 2, priority=20)
    app.fire(unsent.id, "broker_publish_failed", {"error": {"kind": "broker", "message": "x"}})
    better = app.publish("task", 3, priority=10)  # travels through the p10 queue

    def owed(named: str) -> int:
        outcome = app.claim_outcome("w", priorities="20", limit=1)
        assert len(outcome.jobs) == 1
        claimed = outcome.jobs[0]
        assert outcome.claimed_from[claimed.id].id == claimed.id
        return mode.messages_owed(here, {named}, outcome.jobs, outcome.claimed_from)

    assert owed(named=sent.id) == 0, "the message named the job it claimed"
    assert owed(named="999") == 1, "broker_failed: it had no message, and used another's"
    with_message = app.publish("task", 4, priority=20)
    assert owed(named="998") == 0, "out of order: its own message stays behind"
    outcome = app.claim_outcome("w", priorities="-20", limit=1)
    assert [job.id for job in outcome.jobs] == [better.id]
    assert mode.messages_owed(here, {"997"}, outcome.jobs, outcome.claimed_from) == 1, (
        "a job of another queue used a message of this one"
    )
    assert app.get(with_message.id).state == "processing"
