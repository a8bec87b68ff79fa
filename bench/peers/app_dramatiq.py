"""Dramatiq's side: ``dramatiq app_dramatiq --processes N`` (threads: its default, 8)."""

from __future__ import annotations

import dramatiq
import jobs
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from settings import AMQP_URL, TASK_NAME, queue

QUEUE = queue("dramatiq")
broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=TASK_NAME, queue_name=QUEUE)
def job(published: float | None = None) -> None:
    jobs.run_sync(published)
