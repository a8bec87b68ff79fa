"""The job every system runs: a no-op, or 10 ms of waiting (blocking or async).

``BENCH_TASK``: ``noop`` and ``sleep`` (time.sleep) for sync handlers; ``anoop`` and ``asleep``
(asyncio.sleep) ask Conveyor for its ``async def`` handler. Systems that only run async
handlers (pgqueuer, Procrastinate) read ``noop`` as ``anoop``.
"""

from __future__ import annotations

import asyncio
import time

import probe
from settings import SLEEP_SECONDS, TASK


def run_sync(published: float | None = None) -> None:
    probe.started(published)
    if TASK == "sleep":
        time.sleep(SLEEP_SECONDS)
    elif TASK in ("anoop", "asleep"):
        raise RuntimeError(f"BENCH_TASK={TASK} needs an async handler; this system runs sync ones")
    probe.ended()


async def run_async(published: float | None = None) -> None:
    probe.started(published)
    if TASK in ("sleep", "asleep"):
        # An async handler never blocks its loop: its "10 ms of I/O" is asyncio.sleep.
        await asyncio.sleep(SLEEP_SECONDS)
    probe.ended()
