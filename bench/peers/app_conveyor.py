"""Conveyor's side: ``conveyor --app app_conveyor:from_env consume``.

``BENCH_CONVEYOR_BROKER=1`` turns on broker mode (RabbitMQ); the polling and broker runs use
separate tables. ``BENCH_TASK=anoop`` or ``asleep`` registers the ``async def`` handler,
otherwise the sync one.
"""

from __future__ import annotations

import os

import jobs
from conveyor import Conveyor
from settings import AMQP_URL, NAME, TASK, TASK_NAME, conveyor_url


def prefix(broker: bool) -> str:
    return f"{NAME}_cb_" if broker else f"{NAME}_c_"


def make_app(broker: bool) -> Conveyor:
    from conveyor.broker import BrokerSettings

    app = Conveyor(
        conveyor_url(),
        table_prefix=prefix(broker),
        broker_url=AMQP_URL if broker else None,
        broker_settings=BrokerSettings(prefix=f"{NAME}.") if broker else None,
    )
    app.register(TASK_NAME, jobs.run_async if TASK in ("anoop", "asleep") else jobs.run_sync)
    return app


def from_env() -> Conveyor:
    return make_app(os.environ.get("BENCH_CONVEYOR_BROKER") == "1")
