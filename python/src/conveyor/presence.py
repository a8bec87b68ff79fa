"""A worker's presence in the store: a record written when it starts, renewed by a beat every
few seconds with the jobs it runs and its memory, and deleted when it stops.

Operators see live workers (the dashboard's Workers page, ``app.workers()``), as Sidekiq's Busy
page and Oban's producers show them. A worker that dies leaves its record behind until the
beats of the others delete it, once it is ``STALE_BEATS`` beats old. The record is for display
only: leases, not records, decide who owns a job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from .execution import resident_memory
from .model import WorkerRecord
from .store.base import Store

log = logging.getLogger("conveyor.presence")

BEAT_SECONDS = 10.0
# A record not renewed for this many beats belongs to a worker that died.
STALE_BEATS = 6


class Presence:
    """Announces one worker in the store from a thread of its own."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        worker_id: str,
        queues: Sequence[str],
        concurrency: int,
        every: float = BEAT_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.every = every
        self.started_at = clock()
        self.record = WorkerRecord(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            heartbeat_at=self.started_at,
            queues=tuple(queues),
            concurrency=concurrency,
        )
        self._running: Callable[[], Sequence[str]] = tuple
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, running: Callable[[], Sequence[str]]) -> None:
        """Write the record now, then renew it every ``every`` seconds until :meth:`stop`."""
        self._running = running
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="conveyor-presence", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Write the record with what the worker does now; delete records of dead workers.
        A store that cannot be reached is logged and tried again at the next beat."""
        now = self.clock()
        try:
            running = tuple(sorted(set(self._running()), key=_by_number))
        except RuntimeError:  # the running jobs changed while they were read: next beat
            running = self.record.running
        self.record = WorkerRecord(
            **{
                **self.record.__dict__,
                "heartbeat_at": now,
                "running": running,
                "memory_bytes": resident_memory(),
            }
        )
        try:
            with self.store.transaction() as tx:
                tx.save_worker(self.record)
                tx.delete_workers(seen_before=now - timedelta(seconds=self.every * STALE_BEATS))
        except Exception as error:
            log.warning("could not write the presence of worker %s: %s", self.record.id, error)

    def stop(self) -> None:
        """Stop beating and delete the record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + 5)
        try:
            with self.store.transaction() as tx:
                tx.delete_workers([self.record.id])
        except Exception as error:
            log.warning("could not delete the presence of worker %s: %s", self.record.id, error)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.every):
                self.beat()
                # the connection goes back to the pool between beats (seconds apart)
                self.store.release_thread()
        finally:
            self.store.release_thread()


def _by_number(job_id: str) -> tuple[int, str]:
    return (int(job_id), job_id) if job_id.isdigit() else (0, job_id)
