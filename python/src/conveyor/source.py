"""The worker's narrow view of where jobs come from: claim, record, rescue, and wake-ups.

A worker never sees the app. It talks to a :class:`JobSource`: :class:`StoreSource` claims
from the store directly (polling, woken by the store's notifications), and broker mode's
source (``conveyor.broker.source``) claims the jobs whose messages the broker delivered. Both
record outcomes in the store, which stays the source of truth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .execution import Performed
from .model import Job
from .priority import PriorityRange
from .resilience import describe, is_transient

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True)
class Rescue:
    """What a rescue did, and when the earliest lease still held expires (None: no lease)."""

    rescued: list[Job]
    next_expiry: datetime | None


@dataclass(frozen=True)
class Claimed:
    """The outcomes recorded (each job as written) and the jobs claimed, in one transaction;
    ``due_again`` counts recorded jobs that are claimable at once (the claim passed them
    over, so that the jobs already waiting went first); ``backlog`` says whether more work is
    waiting (None: the worker judges by whether the claim was full); ``made_due`` counts other
    jobs the outcomes made claimable at once (a batch's completion job, a released dependant)."""

    recorded: list[Job]
    jobs: list[Job]
    due_again: int = 0
    backlog: bool | None = None
    made_due: int = 0
    # Whether the outcomes may have made other jobs claimable (False only when known not to:
    # plain jobs whose dependents the store read, none of them, and nothing made due).
    may_free: bool = True


class JobSource(Protocol):
    """Where a worker's jobs come from, and where their outcomes go."""

    # Whether claim() may run in another thread than open() and rescue(), while the worker
    # starts jobs: a worker with several slots then claims ahead in a thread of its own.
    claims_from_any_thread: bool

    def open(self, wake: Callable[[], None]) -> None:
        """Start watching for work; ``wake`` is called (from any thread) whenever new work
        may be claimable. Returns once watching, so that work arriving later is not missed."""
        ...

    def watch(self, wanted: bool) -> None:
        """Whether the worker waits for new work (it has free slots and its last claim did not
        fill them); a source may stop watching while it does not, so that a busy worker is not
        woken for nothing."""
        ...

    def claim(
        self, limit: int, recorded: Sequence[Performed] = (), due_by: datetime | None = None
    ) -> Claimed:
        """Record ``recorded`` and claim up to ``limit`` jobs (0: none) that were due by
        ``due_by`` (default: now), in one transaction. Raises a Refused error, having written
        nothing, when an outcome cannot be recorded as it stands (its lease was lost)."""
        ...

    def rescue(self) -> Rescue:
        """Fire ``lease_expired`` on jobs whose lease ran out (their worker died)."""
        ...

    def close(self) -> None: ...


class StoreOperations(Protocol):
    """The app's operations a :class:`StoreSource` uses (the app implements them)."""

    def record_and_claim(
        self,
        performed: Sequence[Performed],
        worker_id: str,
        *,
        queues: Sequence[str] = (),
        priorities: PriorityRange | str | None = None,
        limit: int = 1,
        lease_ms: int | None = None,
        due_by: datetime | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> Claimed: ...

    def rescue(self, limit: int = 100) -> Rescue: ...

    def wait_for_work(self, timeout: float, ready: Callable[[], None] | None = None) -> bool: ...


@dataclass(frozen=True)
class SourceOptions:
    worker_id: str
    queues: tuple[str, ...]
    priorities: PriorityRange
    lease_ms: int
    idle_delay: float


class StoreSource:
    """Claims straight from the store; a listener thread turns the store's notifications
    (PostgreSQL LISTEN/NOTIFY, the memory store) or, for stores that cannot notify, the
    passing of ``idle_delay``, into wake-ups."""

    # The listener re-checks whether it should stop at least this often.
    SLICE = 0.25
    claims_from_any_thread = True  # each thread has its own connection

    def __init__(self, operations: StoreOperations, options: SourceOptions) -> None:
        self.operations = operations
        self.options = options
        self._closed = threading.Event()
        self._wanted = threading.Event()
        self._wanted.set()
        self._thread: threading.Thread | None = None

    def watch(self, wanted: bool) -> None:
        # A busy worker's listener sleeps here instead of waking (and taking the GIL) at
        # every notification; PostgreSQL keeps the notifications until it listens again.
        if wanted:
            self._wanted.set()
        else:
            self._wanted.clear()

    def open(self, wake: Callable[[], None]) -> None:
        listening = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(wake, listening), name="conveyor-listener", daemon=True
        )
        self._thread.start()
        listening.wait(5)  # a listener that cannot connect falls back to timed wake-ups

    def _listen(self, wake: Callable[[], None], listening: threading.Event) -> None:
        waited = 0.0
        while not self._closed.is_set():
            if not self._wanted.is_set():
                listening.set()  # nobody waits for news (a draining worker): open() returns now
                self._wanted.wait()
                waited = 0.0
                continue
            timeout = min(self.SLICE, max(self.options.idle_delay - waited, 0.001))
            try:
                news = self.operations.wait_for_work(timeout, listening.set)
            except Exception as error:
                # The database away is the worker's to report (one line); anything else is a
                # fault here, worth its traceback.
                log.warning(
                    "waiting for new jobs failed (%s); polling instead",
                    describe(error),
                    exc_info=not is_transient(error),
                )
                listening.set()
                news = False
                self._closed.wait(timeout)
            waited += timeout
            if news or waited >= self.options.idle_delay:
                waited = 0.0
                wake()

    def claim(
        self, limit: int, recorded: Sequence[Performed] = (), due_by: datetime | None = None
    ) -> Claimed:
        options = self.options
        return self.operations.record_and_claim(
            recorded,
            options.worker_id,
            queues=options.queues,
            priorities=options.priorities,
            limit=limit,
            lease_ms=options.lease_ms,
            due_by=due_by,
        )

    def rescue(self) -> Rescue:
        return self.operations.rescue()

    def close(self) -> None:
        # Not joined: the listener holds nothing of its own and ends within a slice, and a
        # draining worker (process()) must not wait that long on its way out.
        self._closed.set()
        self._wanted.set()
        self._thread = None
