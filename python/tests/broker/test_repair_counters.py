"""The repair loop counts the jobs it hands over again, for the metrics (broker repairs)."""

from __future__ import annotations

from datetime import timedelta

from conveyor import Conveyor, ManualClock

from ..conftest import AppFactory
from .conftest import settings_for


def test_requeued_and_republished_jobs_are_counted_by_queue_and_reason(
    make_app: AppFactory, broker_prefix: str, clock: ManualClock
) -> None:
    down = make_app(
        broker_url="amqp://guest:guest@127.0.0.1:1/%2F",
        broker_settings=settings_for(broker_prefix, connect_timeout=1.0),
    )
    down.register("task", lambda: None, queue="mail")
    down.publish("task")
    down.publish("task")
    back: Conveyor = make_app()  # the same store, the broker reachable again
    back.register("task", lambda: None, queue="mail")
    back.publish("task", delay=timedelta(minutes=5))

    assert back.repair().requeued == 2
    clock.advance(timedelta(minutes=5))
    assert back.repair().republished == 1

    assert back.counters() == [
        ("broker_repairs.broker_failed", "mail", 2),
        ("broker_repairs.republished", "mail", 1),
    ]
