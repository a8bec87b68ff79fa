"""Celery's side: ``celery -A app_celery worker`` (prefork pool, its default settings).

Only the queue name is set (so that the run uses a queue of its own); acknowledgement, prefetch
multiplier (4), pool and result settings stay at Celery's defaults.
"""

from __future__ import annotations

import jobs
from celery import Celery
from settings import AMQP_URL, TASK_NAME, queue

QUEUE = queue("celery")
app = Celery("bench", broker=AMQP_URL)
app.conf.task_default_queue = QUEUE
app.conf.broker_connection_retry_on_startup = True


@app.task(name=TASK_NAME)
def job(published: float | None = None) -> None:
    jobs.run_sync(published)
