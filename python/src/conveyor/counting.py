"""Totals of events for the metrics, kept in the store so that every process adds to them.

Rescues and broker repairs are rare: they are added in the transaction that does them. A
worker's failed attempts are many in a bad hour: they are tallied in memory and added at most
once a second (and when the worker stops), in one short transaction, so that failing jobs do
not all queue on one counter row (docs/operations/metrics.md#counters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .model import Job

log = logging.getLogger("conveyor.metrics")

FAILURES = "failures"  # failed attempts, by queue and error kind: failures.<kind>
LEASE_RESCUES = "lease_rescues"
BROKER_REPAIRS = "broker_repairs"  # jobs the repair loop handed over again: broker_repairs.<why>
# The outcomes of an attempt that failed (a rescue counts as a lease rescue instead).
FAILED_EVENTS = frozenset({"fail_temporarily", "fail_permanently"})

Counts = Mapping[tuple[str, str], int]


def by_queue(name: str, jobs: Iterable[Job]) -> Counter[tuple[str, str]]:
    """One count of ``name`` per job, by the job's queue."""
    return Counter((name, job.queue) for job in jobs)


class PendingCounts:
    """Counts not yet added to the store's totals, written by ``write`` at most every
    ``every`` seconds; a write that fails keeps them for the next one."""

    def __init__(
        self,
        write: Callable[[Counts], None],
        every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._next_write = monotonic() + every

    def attempted(self, job: Job, event: str, error: Mapping[str, Any] | None) -> None:
        """Count an attempt of ``job`` whose outcome was ``event``, when it failed: by the
        kind of ``error``, whether or not the outcome could be recorded (a lost lease)."""
        if event not in FAILED_EVENTS:
            return
        kind = (error or {}).get("kind") or event.removeprefix("fail_")
        self.add(f"{FAILURES}.{kind}", job.queue)

    def add(self, name: str, queue: str, count: int = 1) -> None:
        with self._lock:
            self._counts[(name, queue)] += count
            due = self._monotonic() >= self._next_write
        if due:
            self.flush()

    def flush(self) -> None:
        """Add the pending counts to the store's totals now."""
        with self._lock:
            taken, self._counts = self._counts, Counter()
            self._next_write = self._monotonic() + self._every
        if not taken:
            return
        try:
            self._write(taken)
        except Exception as error:  # metrics must never stop a worker
            log.warning("could not add %d count(s) to the metrics: %s", taken.total(), error)
            with self._lock:
                self._counts.update(taken)
