"""Claimable jobs without a message of their own do not strand the jobs whose messages they
use (spec.md#BROKER-010).

After a RabbitMQ outage, the jobs published during it are ``broker_failed``: claimable, but
without a message. A message is a wake-up (BROKER-007), so the message of a job published after
the outage claims an older ``broker_failed`` job first, and the newer job was left ``ready``
without a message until the repair loop's ``stale_after`` (60 s): one 5 s outage left 319 of
1,500 jobs waiting about 70 s. A consumer now hands the used message's job a new message when
the job it claimed had none of its own.
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


def test_jobs_published_after_an_outage_do_not_wait_for_the_repair_loop(
    make_app: AppFactory,
) -> None:
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
            lambda: all(app.get(job.id).state == "finished" for job in failed_over + later),
            timeout=WITHOUT_THE_REPAIR_LOOP,
            what="every job, those published during the outage and after it",
        )
        elapsed = time.monotonic() - started
        wait_until(lambda: depth(app) == 0, what="the messages handed back to be used up")
    assert sorted(ran) == list(range(15))
    assert elapsed < WITHOUT_THE_REPAIR_LOOP


def test_a_delayed_job_that_became_due_does_not_strand_a_newer_job(
    app: Conveyor, clock: ManualClock
) -> None:
    """A delayed job gets its message from the repair loop; until then it is claimable without
    one, and the message of a newer job claims it first (it is older)."""
    ran: list[str] = []
    app.register("task", ran.append)
    delayed = app.publish("task", "delayed", delay=timedelta(seconds=30))
    clock.advance(timedelta(seconds=31))
    newer = app.publish("task", "newer")
    with running(consumer(app)):
        wait_until(
            lambda: app.get(newer.id).state == "finished",
            timeout=WITHOUT_THE_REPAIR_LOOP,
            what="the newer job, whose message the delayed job used",
        )
    assert ran == ["delayed", "newer"]
    assert app.get(delayed.id).state == "finished"


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
