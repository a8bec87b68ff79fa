"""The worker loop: claim, run, record; with limits and a graceful stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING

from .clock import duration_ms
from .errors import Refused
from .execution import Executed, JobRunner, Performed, resident_memory
from .model import Job
from .priority import PriorityRange
from .resilience import Backoff, describe, is_transient

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerOptions:
    queues: tuple[str, ...] = ()
    priorities: PriorityRange | str | None = None
    batch_size: int = 1
    lease: timedelta | None = None
    max_jobs: int | None = None
    max_cycles: int | None = None
    memory_limit: int | None = None
    idle_delay: float = 1.0
    rescue_interval: float = 30.0
    stop_when_empty: bool = False
    worker_id: str = field(default_factory=default_worker_id)
    handle_signals: bool = True
    on_job: Callable[[Job], None] | None = None
    on_idle: Callable[[], None] | None = None
    # Outcomes wait to be recorded together, with the next claim, for at most this long
    # before the worker starts another job; 0 records each job before the next one starts.
    record_delay: float = 0.1


@dataclass
class WorkerStats:
    jobs: int = 0
    cycles: int = 0
    rescued: int = 0
    stop_reason: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)


class Worker:
    """Claims jobs in (priority, sequence) order within its priority range and runs them."""

    def __init__(self, app: Conveyor, options: WorkerOptions) -> None:
        self.app = app
        self.options = options
        self.priorities = (
            options.priorities
            if isinstance(options.priorities, PriorityRange)
            else PriorityRange.parse(options.priorities)
        )
        lease = options.lease or app.lease
        self.lease_ms = duration_ms(lease)
        self.runner = JobRunner(app, options.worker_id, self.lease_ms)
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._last_rescue: float | None = None
        self._pending: list[Performed] = []  # outcomes not yet recorded, oldest first
        self._pending_since = 0.0  # when the oldest of them was performed (monotonic)

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the current job, then return from :meth:`run`."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> WorkerStats:
        restore = self._install_signals()
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    self._cycle()
                    backoff.reset()
                except Exception as error:
                    if not is_transient(error):
                        raise
                    delay = backoff.next_delay()
                    log.warning("%s; retrying in %.1f s", describe(error), delay)
                    self._stop.wait(delay)
        finally:
            try:
                self._record_pending()
            finally:
                restore()
        self.stats.stop_reason = self._stop_reason
        return self.stats

    def _cycle(self) -> None:
        options = self.options
        self.stats.cycles += 1
        self._maybe_rescue()
        limit = options.batch_size
        if options.max_jobs is not None:
            limit = min(limit, options.max_jobs - self.stats.jobs - len(self._pending))
        jobs = self._claim_next(limit)
        for job in jobs:
            if self._pending and time.monotonic() - self._pending_since >= options.record_delay:
                self._flush()  # a slow batch: do not hold earlier outcomes back
            performed = self.runner.perform(job)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(performed)
            if not self._may_defer(performed):
                self._flush()
        # What is still pending is recorded with the next claim, in one commit (see
        # Conveyor.record_and_claim).
        self._check_limits()
        if not jobs and not self._stop.is_set():
            if options.stop_when_empty:
                self.stop("no due jobs left")
            else:
                self.app.store.wait_for_work(options.idle_delay, options.on_idle)

    def _claim_next(self, limit: int) -> list[Job]:
        options = self.options
        if not self._pending:
            return self.app.claim(
                options.worker_id,
                queues=options.queues,
                priorities=self.priorities,
                limit=limit,
                lease_ms=self.lease_ms,
            )
        pending, self._pending = self._pending, []
        try:
            jobs = self._record(pending, limit)
        except Refused:  # nothing was written: a lease, or a claimed row, moved on
            self._record_each(pending)
            return self._claim_next(limit)
        except Exception:
            self._pending = pending  # recorded with the next attempt, or alone on stop
            raise
        return jobs

    def _flush(self) -> None:
        """Record the pending outcomes now, without claiming."""
        pending, self._pending = self._pending, []
        try:
            self._record(pending, 0)
        except Exception as error:
            if not (isinstance(error, Refused) or is_transient(error)):
                raise
            self._record_each(pending)  # alone, each retried while the database is away

    def _record(self, pending: list[Performed], limit: int) -> list[Job]:
        """Record outcomes in one transaction, with a claim of ``limit`` jobs (0: none)."""
        options = self.options
        self.runner.release(pending)
        try:
            finals, jobs = self.app.record_and_claim(
                pending,
                options.worker_id,
                queues=options.queues,
                priorities=self.priorities,
                limit=limit,
                lease_ms=self.lease_ms,
            )
        except Exception:
            self.runner.hold(pending)
            raise
        for performed, final in zip(pending, finals, strict=True):
            self._count(self.runner.finish(performed, final))
        return jobs

    def _record_each(self, pending: list[Performed]) -> None:
        try:
            for performed in pending:  # each refused only if its own lease was lost
                self._count(self.runner.record(performed))
        finally:
            self.runner.release(pending)  # recorded, or given up: their leases may lapse

    def _may_defer(self, performed: Performed) -> bool:
        """Whether the worker goes on right away, so that the outcome can ride along."""
        options = self.options
        return not (
            performed.die
            or self._stop.is_set()
            or (
                options.max_jobs is not None
                and self.stats.jobs + len(self._pending) >= options.max_jobs
            )
            or (options.max_cycles is not None and self.stats.cycles >= options.max_cycles)
            or (options.memory_limit is not None and resident_memory() > options.memory_limit)
        )

    def _record_pending(self) -> None:
        """Stopping between a job and the next claim: record the outcomes on their own."""
        pending = self._pending
        if not pending:
            return
        try:
            self._flush()
        except Exception:
            log.exception(
                "jobs %s: their outcomes could not be recorded; they run again once their "
                "leases expire",
                ", ".join(performed.job.id for performed in pending),
            )
        finally:
            self.runner.release(pending)  # let those leases lapse: the jobs must be rescued

    def _count(self, executed: Executed) -> None:
        options = self.options
        self.stats.jobs += 1
        state = executed.job.state
        self.stats.outcomes[state] = self.stats.outcomes.get(state, 0) + 1
        if options.on_job is not None:
            options.on_job(executed.job)
        if executed.die:
            self.stop("a handler asked the worker to die")

    def _maybe_rescue(self) -> None:
        moment = self.app.now().timestamp()
        if self._last_rescue is None or moment - self._last_rescue >= self.options.rescue_interval:
            self._last_rescue = moment
            rescued = self.app.rescue_expired()
            self.stats.rescued += len(rescued)
            for job in rescued:
                log.warning("rescued job %s whose lease expired; now %s", job.id, job.state)

    def _check_limits(self) -> None:
        options = self.options
        if options.max_jobs is not None and self.stats.jobs >= options.max_jobs:
            self.stop(f"processed {self.stats.jobs} jobs (limit {options.max_jobs})")
        elif options.max_cycles is not None and self.stats.cycles >= options.max_cycles:
            self.stop(f"ran {self.stats.cycles} cycles (limit {options.max_cycles})")
        elif options.memory_limit is not None and resident_memory() > options.memory_limit:
            self.stop(f"memory above {options.memory_limit} bytes")

    def _install_signals(self) -> Callable[[], None]:
        if (
            not self.options.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return lambda: None

        def handle(signum: int, frame: FrameType | None) -> None:
            self.stop(f"received {signal.Signals(signum).name}; finishing the current job")

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
