"""What every part of the peer benchmark reads from the environment.

The runner sets these for itself and for every worker process it starts, so a worker CLI
imports the same names as the runner that publishes to it.
"""

from __future__ import annotations

import os

# psycopg/asyncpg style (no SQLAlchemy driver name); Conveyor's URL is derived from it.
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
# Per-run name: every table, schema, queue and exchange this run creates starts with it.
NAME = os.environ.get("BENCH_NAME", "bp_local")
# What the job does: noop, sleep (time.sleep) or asleep (asyncio.sleep).
TASK = os.environ.get("BENCH_TASK", "noop")
SLEEP_SECONDS = float(os.environ.get("BENCH_SLEEP_SECONDS", "0.010"))
TASK_NAME = "job"


def queue(system: str) -> str:
    """The queue of one system in this run (RabbitMQ queue, Procrastinate queue)."""
    return f"{NAME}_{system}"


def conveyor_url() -> str:
    return "postgresql+psycopg://" + PG_URL.split("://", 1)[1]
