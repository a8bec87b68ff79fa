"""The worker: claims jobs into free slots, runs up to ``concurrency`` at once, records outcomes.

One coordinating thread (the one calling :meth:`Worker.run`) claims, records and decides;
sync handlers run in a pool of ``concurrency`` threads, ``async def`` handlers as tasks on the
app's event loop, and the app's heartbeat thread keeps every held lease alive. Outcomes are
recorded in the transaction of the next claim (one commit for a batch of them), or on their own
once they have waited ``record_delay``. See docs/guide/workers.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from .errors import ConfigurationError, PartlyRecorded, Refused
from .execution import (
    Executed,
    JobRunner,
    Performed,
    Report,
    resident_memory,
    timed_out,
    timeout_of,
)
from .inline import Alarm, Interrupted
from .model import Job
from .presence import Presence
from .priority import PriorityRange
from .resilience import Backoff, describe, is_transient
from .schedules import Scheduler
from .source import Claimed, JobSource
from .threads import DaemonThreads

log = logging.getLogger("conveyor.worker")

# How a job the worker gives back is recorded: ``wait`` without delay (OUT-004) returns it to
# the claimable jobs at once, with its attempt refunded, so another worker can take it now.
HANDED_BACK = Report("wait", {"delay_ms": 0})
LONGEST_RESCUE_INTERVAL = 30.0
# The adaptive batch (batch_size None): claim ahead about this much work, at most this many.
PREFETCH_SECONDS = 0.1
AUTO_BATCH_LIMIT = 100
ISOLATIONS = ("thread", "process")
# With several slots, the process's memory is read at most this often (seconds): the jobs'
# execution records and the memory limit reuse a reading this recent.
SHARED_MEMORY_READING_AGE = 0.05
# At concurrency 1, a reading is reused only this long: a job shorter than that may share
# the reading of the job before it (three system calls per job; reusing them cut a worker's
# CPU per no-op job by about 4 %), any longer one gets readings of its own.
OWN_MEMORY_READING_AGE = 0.001


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerOptions:
    """How a worker claims and runs jobs; ``app.worker(**options)`` and the CLI build one."""

    queues: tuple[str, ...] = ()
    priorities: PriorityRange | str | None = None
    # Jobs running at once: sync handlers in a pool of this many threads, async handlers as
    # tasks on the app's event loop; both kinds share the slots.
    concurrency: int = 1
    # Jobs claimed by one statement: at least the free slots; more are held (leased) until a
    # slot frees up. None (the default) adapts: the free slots while there is no backlog, and
    # while there is one, as many as the slots run in about ``PREFETCH_SECONDS`` (at most
    # ``AUTO_BATCH_LIMIT``), judged by the jobs' recent run times.
    batch_size: int | None = None
    lease: timedelta | None = None
    max_jobs: int | None = None
    max_cycles: int | None = None
    # Bytes of resident memory: the worker stops after a job once it uses more; with
    # isolation="process", a handler process that uses more is replaced after its job.
    memory_limit: int | None = None
    idle_delay: float = 1.0
    # Seconds between looks for expired leases; default half the lease, at most 30 s. The
    # worker also looks as soon as the earliest lease it knows of expires.
    rescue_interval: float | None = None
    # On stop: how long running jobs may take to finish before they are handed back.
    grace_period: float = 25.0
    stop_when_empty: bool = False
    worker_id: str = field(default_factory=default_worker_id)
    handle_signals: bool = True
    on_job: Callable[[Job], None] | None = None
    on_idle: Callable[[], None] | None = None
    # Outcomes wait to be recorded together, with the next claim, for at most this long.
    record_delay: float = 0.1
    # Seconds between the beats of the worker's record in the store (presence.py); None: no
    # record. A draining worker (stop_when_empty, process()) writes none.
    presence_every: float | None = 10.0
    # Where sync handlers run: "thread" (the worker's threads) or "process" (one handler
    # process per slot, killed at a job's timeout; isolation.py). ``async def`` handlers run
    # on the app's event loop either way.
    isolation: str = "thread"
    # "process": how handler processes import the app (module:attribute, as --app); None:
    # the module and global that hold the app in this process.
    app_spec: str | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {value}")
        for name in ("idle_delay", "grace_period", "record_delay"):
            if not getattr(self, name) >= 0:
                raise ConfigurationError(f"{name} must be 0 or more seconds")
        if self.presence_every is not None and not self.presence_every > 0:
            raise ConfigurationError("presence_every must be more than 0 seconds, or None")
        if self.rescue_interval is not None and not self.rescue_interval > 0:
            raise ConfigurationError("rescue_interval must be more than 0 seconds")
        if self.isolation not in ISOLATIONS:
            raise ConfigurationError(
                f"isolation must be one of {', '.join(ISOLATIONS)}, not {self.isolation!r}"
            )


@dataclass
class WorkerStats:
    """What a worker did: jobs run, claim cycles, rescued leases, outcomes, why it stopped."""

    jobs: int = 0
    cycles: int = 0
    rescued: int = 0
    stop_reason: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    reload_requested: bool = False


class WorkerControl:
    """Stopping, signals and statistics: what every kind of worker shares."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.priorities = (
            options.priorities
            if isinstance(options.priorities, PriorityRange)
            else PriorityRange.parse(options.priorities)
        )
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._hurried = threading.Event()
        self._stop_reason = ""

    def run(self) -> WorkerStats:
        """Work until stopped; returns the statistics."""
        raise NotImplementedError

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; running jobs finish (within the grace period), then :meth:`run`
        returns."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
        self._stopped()

    def reload(self, reason: str) -> None:
        """Stop as :meth:`stop` does, because a reload was requested (``conveyor
        reload-consumers``): the statistics say so, and the command exits with its code."""
        self.stats.reload_requested = True
        self.stop(reason)

    def hurry(self) -> None:
        """Stop without waiting for the grace period: running jobs are handed back at once."""
        self._hurried.set()
        self.stop("asked to stop at once")

    def _stopped(self) -> None:
        """Called after every stop request (from any thread, or a signal handler)."""

    def wake_after_signal(self) -> None:
        """End a signal handler that stopped this worker with this. Python runs handlers in
        the main thread, which may be between :meth:`run`'s look at the stop flag and its
        wait: a wake-up sent by the handler itself comes before that wait and is lost (the
        worker would sleep until its next timer, up to the idle delay). One sent from another
        thread takes the wait's lock only once the wait has released it."""
        threading.Thread(target=self._end_wait, name="conveyor-stop-wake", daemon=True).start()

    def _end_wait(self) -> None:
        """End :meth:`run`'s wait, if it has one (from any thread)."""

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _count(self, executed: Executed) -> None:
        options = self.options
        self.stats.jobs += 1
        state = executed.job.state
        self.stats.outcomes[state] = self.stats.outcomes.get(state, 0) + 1
        if options.on_job is not None:
            options.on_job(executed.job)
        if executed.die:
            self.stop("a handler asked the worker to die")

    def _install_signals(self) -> Callable[[], None]:
        if (
            not self.options.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return lambda: None

        def handle(signum: int, frame: FrameType | None) -> None:
            self.stop(f"received {signal.Signals(signum).name}; finishing the running jobs")
            self.wake_after_signal()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


@dataclass
class _Running:
    job: Job
    future: Future[Performed]
    timeout: float | None  # seconds; enforced here only for sync handlers (threads)
    deadline: float | None  # monotonic
    given_up: bool = False  # its outcome was recorded without it; its result is discarded
    started: float = field(default_factory=time.monotonic)
    cancel: Callable[[], object] | None = None  # cancels an async job's task


class Worker(WorkerControl):
    """Claims jobs in (priority, sequence) order within its priority range and runs them,
    up to ``concurrency`` at once."""

    def __init__(
        self,
        source: JobSource,
        runner: JobRunner,
        options: WorkerOptions,
        clock: Callable[[], datetime],
        presence: Presence | None = None,
    ) -> None:
        super().__init__(options)
        self.presence = presence  # the worker's record in the store (presence.py)
        self.source = source
        self.runner = runner
        runner.memory_age = (
            SHARED_MEMORY_READING_AGE if options.concurrency > 1 else OWN_MEMORY_READING_AGE
        )
        self.clock = clock
        lease_s = runner.lease_ms / 1000
        self.rescue_interval = options.rescue_interval or min(lease_s / 2, LONGEST_RESCUE_INTERVAL)
        self._changed = threading.Condition()
        self._news = True  # new work may be claimable (the source says so)
        self._watching = True  # the source watches for new work (no backlog)
        self._done: deque[str] = deque()  # ids of running jobs whose future completed
        self._running: dict[str, _Running] = {}
        self._buffer: deque[Job] = deque()  # claimed, not started
        self._pending: list[Performed] = []  # performed, not recorded, oldest first
        self._pending_since = 0.0
        self._claimed = 0
        self._next_rescue: float | None = None
        # The app's cron schedules (spec.md#cron), evaluated between jobs when one is due.
        self.scheduler: Scheduler | None = None
        self._next_schedule: datetime | None = None
        self._idle_since: float | None = None
        self._due_by: datetime | None = None
        self._threads: DaemonThreads | None = None
        self._backlog = False  # the last claim was full
        self._job_seconds = PREFETCH_SECONDS  # recent average run time of a job
        # At concurrency 1 in the main thread, sync handlers run in this thread (inline.py).
        self._alarm: Alarm | None = None
        self._inline: Job | None = None
        # With several slots, claims run in a thread of their own while this one keeps
        # starting the buffered jobs (None: claims run here, between jobs).
        self._claimer: DaemonThreads | None = None
        self._claiming: Future[Claimed] | None = None
        self._claiming_for: tuple[list[Performed], int] = ([], 0)
        self._claim_started = 0.0
        self._claim_seconds = 0.0  # recent average duration of a background claim
        self._made_due = False  # process(): recorded outcomes made other jobs due
        # A job ended while nothing else was known to wait (see _run_inline): its outcome is
        # recorded alone, and a claim follows only if it may have freed another job.
        self._record_first = False

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        isolated = self.options.isolation == "process"
        if isolated:
            self._isolate()  # a ConfigurationError here leaves nothing to undo
        restore = self._install_signals()
        give_back_alarm = None
        if self.options.concurrency == 1 and Alarm.available() and not isolated:
            self._alarm = Alarm()
            give_back_alarm = self._alarm.install()
        if self.options.stop_when_empty:
            # process(): every job due now, not the ones their own outcomes make due again;
            # it stops when none is left, so it never waits for new work.
            self._due_by = self.clock()
            self._watching = False
            self.source.watch(False)
        if (
            self._alarm is None
            and self.options.concurrency > 1
            and not self.options.stop_when_empty
            and self.source.claims_from_any_thread
        ):
            self._claimer = DaemonThreads(
                1, "conveyor-claim", on_exit=self.runner.host.release_thread
            )
        try:
            if self.presence is not None:
                self.presence.start(self._running_ids)
            self.source.open(self._wake)
            try:
                self._serve()
            finally:
                self._shutdown()
        finally:
            if self.presence is not None:
                self.presence.stop()
            try:
                self.source.close()
            finally:
                if self._threads is not None:
                    self._threads.shutdown()
                if self._claimer is not None:
                    self._claimer.shutdown()
                if give_back_alarm is not None:
                    give_back_alarm()
                    self._alarm = None
                self.runner.host.event_counts.flush()  # the failures it counted
                if self.runner.isolation is not None:
                    self.runner.isolation.close()
                    self.runner.isolation = None
                # This thread's connections go back to the pool: a worker may run in a thread
                # that ends now, and each such thread would otherwise keep one for ever.
                self.runner.host.release_thread()
                restore()
        self.stats.stop_reason = self._stop_reason
        return self.stats

    def _isolate(self) -> None:
        """Start the handler processes (isolation="process"): one per slot."""
        from .isolation import HandlerProcesses, app_spec_of

        options = self.options
        spec = options.app_spec or app_spec_of(self.runner.host)
        processes = HandlerProcesses(spec, options.concurrency, options.memory_limit)
        processes.start()
        self.runner.isolation = processes

    def _running_ids(self) -> list[str]:
        """The jobs this worker runs now (read by the presence thread)."""
        return list(self._running) + ([self._inline.id] if self._inline is not None else [])

    def _serve(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                self._turn()
                backoff.reset()
            except Exception as error:
                if not is_transient(error):
                    raise
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1f s", describe(error), delay)
                self._stop.wait(delay)

    def _turn(self) -> None:
        self._collect()
        self._collect_claim()
        self._maybe_rescue()
        self._maybe_schedule()
        self._start_buffered()
        if self._stop.is_set():
            return
        if self._claimer is not None:
            # Claim ahead while the buffer still feeds the slots; outcomes that waited long
            # enough are recorded by the claiming thread too, so this one never stops
            # starting jobs to write.
            if self._claiming is None:
                if self._news and self._short_of_jobs() and self._may_claim():
                    self._claim_in_background()
                elif self._pending and self._record_due():
                    self._claim_in_background(record_only=True)
            if self._check_limits():
                return
            self._wait()
            return
        if self._record_first and not self._news and self._pending:
            self._record_first = False
            if self._flush():
                with self._changed:
                    self._news = True
            return
        self._record_first = False
        if self._news and self._free() > 0 and not self._buffer and self._may_claim():
            if self._claim():
                return  # claimed: start them first
            if self._idle() and self.options.stop_when_empty:
                if self._due_since_cutoff():
                    return  # claim again, up to now
                self.stop("no due jobs left")
                return
        elif self._pending and self._record_due():
            self._flush()
        if self._check_limits():
            return
        self._wait()

    def _due_since_cutoff(self) -> bool:
        """process(): outcomes recorded since the run's cutoff made other jobs due (a batch's
        completion job, published by its last part's outcome): move the cutoff to now and
        claim again. Jobs due again through their own outcomes alone (a retry, a wait) do not
        move it, so the run ends once its outcomes stop making new work."""
        if not self._made_due:
            return False
        self._made_due = False
        self._due_by = self.clock()
        self._news = True
        return True

    def _claim(self) -> bool:
        """Record the pending outcomes and claim into the free slots; True when the loop
        should go on at once (jobs claimed, or a claim that yielded to older jobs found
        fewer than it could take)."""
        options = self.options
        limit = self._batch()
        if options.max_jobs is not None:
            limit = min(limit, options.max_jobs - self._claimed)
        pending, self._pending = self._pending, []
        due_by = self._due_by
        with self._changed:
            self._news = False
        self.runner.release(pending)
        try:
            claimed = self.source.claim(limit, pending, due_by)
        except (Refused, PartlyRecorded) as error:  # a lease, or a claimed row, moved on
            self._record_each(pending, error)
            self._wake()
            return True
        except Exception:
            self.runner.hold(pending)
            self._pending = pending + self._pending  # recorded with the next attempt
            # Nothing was claimed: claim again after the back-off. With a backlog the
            # listener is not watching, so no notification would ever set this.
            self._news = True
            raise
        self._took(claimed, pending, limit)
        return bool(claimed.jobs)

    def _short_of_jobs(self) -> bool:
        """Whether to claim ahead now: the buffer would run dry before a claim returns
        (the slots' rate times a claim's recent duration), and either a backlog waits or
        free slots are not covered by the buffer."""
        slots = self.options.concurrency
        if self._backlog:
            during_claim = slots * self._claim_seconds / max(self._job_seconds, 1e-6)
            low_water = slots + min(int(during_claim), AUTO_BATCH_LIMIT)
            return len(self._buffer) < low_water
        return len(self._buffer) < slots and self._free() > len(self._buffer)

    def _claim_in_background(self, record_only: bool = False) -> None:
        """:meth:`_claim` in the claiming thread (or, ``record_only``, a write of the pending
        outcomes alone); :meth:`_collect_claim` takes its result."""
        assert self._claimer is not None
        options = self.options
        limit = 0 if record_only else self._batch()
        if options.max_jobs is not None:
            limit = min(limit, options.max_jobs - self._claimed)
        pending, self._pending = self._pending, []
        if limit:
            with self._changed:
                self._news = False
        self.runner.release(pending)
        self._claiming_for = (pending, limit)
        self._claim_started = time.monotonic()
        future = self._claimer.submit(self.source.claim, limit, pending, self._due_by)
        self._claiming = future
        future.add_done_callback(self._claim_done)

    def _claim_done(self, _: object) -> None:
        with self._changed:
            self._changed.notify_all()

    def _collect_claim(self, wait: bool = False) -> None:
        future = self._claiming
        if future is None or not (wait or future.done()):
            return
        pending, limit = self._claiming_for
        self._claiming, self._claiming_for = None, ([], 0)
        if limit:
            took = time.monotonic() - self._claim_started
            self._claim_seconds += (took - self._claim_seconds) * 0.2
        try:
            claimed = future.result()
        except (Refused, PartlyRecorded) as error:
            self._record_each(pending, error)
            self._wake()
            return
        except Exception:
            self.runner.hold(pending)
            self._pending = pending + self._pending
            self._news = True
            raise
        self._took(claimed, pending, limit)

    def _took(self, claimed: Claimed, pending: list[Performed], limit: int) -> None:
        """Count the outcomes a claim recorded and buffer the jobs it claimed (a ``limit``
        of 0: the outcomes were only recorded)."""
        self._made_due = self._made_due or claimed.made_due > 0
        for performed, final in zip(pending, claimed.recorded, strict=True):
            self._count(self.runner.finish(performed, final))
        if not limit:
            return
        self.stats.cycles += 1
        self._buffer.extend(claimed.jobs)
        self._claimed += len(claimed.jobs)
        if claimed.jobs:
            self._idle_since = None
        # Look again at once if this claim was full (more may be due), or if it passed over
        # jobs of this worker that are due again (to let older jobs go first) and is not full.
        backlog = len(claimed.jobs) >= limit if claimed.backlog is None else claimed.backlog
        self._backlog = backlog
        if backlog or claimed.due_again:
            self._wake()
        if backlog == self._watching and not self.options.stop_when_empty:
            self._watching = not backlog
            self.source.watch(self._watching)

    def _batch(self) -> int:
        """How many jobs to claim: the free slots, or more ahead while there is a backlog."""
        free = self._free()
        options = self.options
        if options.batch_size is not None:
            return max(free, options.batch_size)
        if not self._backlog:
            return free
        ahead = int(options.concurrency * PREFETCH_SECONDS / max(self._job_seconds, 1e-6))
        return max(free, min(AUTO_BATCH_LIMIT, ahead))

    def _timed(self, seconds: float) -> None:
        """A job ran ``seconds``: the average the adaptive batch sizes itself by."""
        self._job_seconds += (seconds - self._job_seconds) * 0.2

    def _start_buffered(self) -> None:
        while (
            self._buffer
            and len(self._running) < self.options.concurrency
            and not self._stop.is_set()
        ):
            if (
                self._pending
                and self._claimer is None
                and time.monotonic() - self._pending_since >= self.options.record_delay
            ):
                self._flush()  # a slow batch: do not hold earlier outcomes back
            try:
                job = self._buffer.popleft()
            except IndexError:  # a thread slot took the last one
                break
            if self._lease_spent(job):
                continue
            self._start(job)

    def _lease_spent(self, job: Job) -> bool:
        """Whether a claimed job waited so long in the buffer (the database was away, a
        partition) that its lease ends before the heartbeat's first renewal: it is not
        started, since another worker may take it once the lease ends, but handed back
        (recorded with the next claim, refused by its fencing token if the lease is gone,
        and then rescued)."""
        left = self._lease_left_ms(job)
        if left is None or left >= self.runner.lease_ms / 3:
            return False
        log.warning(
            "job %s: its lease ends in %d ms, before it could be renewed (the worker was "
            "held up); not started, handed back",
            job.id,
            max(left, 0),
        )
        self._claimed -= 1
        self._add_pending(self.runner.abandoned(job, HANDED_BACK))
        return True

    def _lease_left_ms(self, job: Job) -> float | None:
        lease = job.lease
        if lease is None:
            return None
        return (lease.expires_at - self.clock()) / timedelta(milliseconds=1)

    def _start(self, job: Job) -> None:
        runner = self.runner
        timeout = timeout_of(job)
        is_async = runner.is_async(job)
        if self._alarm is not None and not is_async:
            self._run_inline(job, self._alarm, timeout)
            return
        running = self._entry(job, timeout, is_async)
        self._running[job.id] = running
        if is_async:  # cancelled at its timeout by perform_async itself
            runner.loop.submit(self._run_task_slot(running))
            return
        if self._threads is None:
            self._threads = DaemonThreads(
                self.options.concurrency, "conveyor-job", on_exit=runner.host.release_thread
            )
        self._threads.submit(self._run_thread_slot, running)

    def _entry(self, job: Job, timeout: float | None, is_async: bool) -> _Running:
        """The running entry of a job about to start in a slot."""
        future: Future[Performed] = Future()
        future.set_running_or_notify_cancel()  # a thread is never cancelled; a task by .cancel
        deadline = None
        if not is_async and timeout is not None and self.runner.isolation is None:
            deadline = time.monotonic() + timeout  # else the runner kills its process
        return _Running(job, future, timeout, deadline)

    # A slot, once started, runs the buffered jobs of its kind one after the other: a slot
    # that frees is filled at once by its own thread or task, not when the coordinating thread
    # next gets its turn (with many slots busy it would wait for the interpreter lock).

    def _run_thread_slot(self, running: _Running) -> None:
        perform = self.runner.perform
        next_up: _Running | None = running
        while next_up is not None:
            running = next_up
            try:
                running.future.set_result(perform(running.job))
            except BaseException as error:
                running.future.set_exception(error)
            next_up = self._ended(running, is_async=False)

    async def _run_task_slot(self, running: _Running) -> None:
        task = asyncio.current_task()
        assert task is not None
        cancel = functools.partial(asyncio.get_running_loop().call_soon_threadsafe, task.cancel)
        perform = self.runner.perform_async
        next_up: _Running | None = running
        while next_up is not None:
            running = next_up
            running.cancel = cancel
            try:
                running.future.set_result(await perform(running.job, running.timeout))
            except asyncio.CancelledError as error:  # given up (a stop's grace period ended)
                running.future.set_exception(error)
                self._ended(running, is_async=True, go_on=False)
                raise
            except BaseException as error:
                running.future.set_exception(error)
            next_up = self._ended(running, is_async=True)

    def _ended(self, running: _Running, is_async: bool, go_on: bool = True) -> _Running | None:
        """A slot's job ended: tell the coordinating thread, and take the slot's next job."""
        with self._changed:
            self._done.append(running.job.id)
            next_up = self._next_for_slot(is_async) if go_on else None
            # Wake the coordinating thread when it has something to do: a free slot, a claim
            # to start, or enough outcomes to collect; not once per job.
            if (
                next_up is None
                or len(self._done) >= self.options.concurrency
                or (self._claiming is None and self._short_of_jobs())
            ):
                self._changed.notify_all()
        return next_up

    def _next_for_slot(self, is_async: bool) -> _Running | None:
        """The buffered job a freed slot runs next (``_changed`` held): one of the slot's kind
        that the coordinating thread would start as it is."""
        if self._stop.is_set():
            return None
        try:
            job = self._buffer.popleft()
        except IndexError:
            return None
        left = self._lease_left_ms(job)
        if self.runner.is_async(job) != is_async or (
            left is not None and left < self.runner.lease_ms / 3
        ):
            self._buffer.appendleft(job)  # the coordinating thread starts or hands it back
            return None
        running = self._entry(job, timeout_of(job), is_async)
        self._running[job.id] = running
        return running

    def _run_inline(self, job: Job, alarm: Alarm, timeout: float | None) -> None:
        """Run a sync job in this thread; the alarm ends it at its timeout, or when a stop's
        grace period is over (see :meth:`_stopped`)."""
        self._inline = job
        started = time.monotonic()
        try:
            if timeout is not None:
                alarm.arm(timeout, timed_out(timeout))
            if self._stop.is_set():
                self._arm_grace(alarm)
            performed = self.runner.perform(job)
        except Interrupted as interruption:
            self.runner.heartbeat.release(job.id)
            if interruption.report is HANDED_BACK:
                log.warning(
                    "job %s still ran at the end of the grace period of %g s; handed back",
                    job.id,
                    self.options.grace_period,
                )
            performed = self.runner.abandoned(job, interruption.report)
        finally:
            alarm.disarm()
            self._inline = None
        self._timed(time.monotonic() - started)
        self._add_pending(performed)
        with self._changed:
            self._slot_freed()
        if performed.die:
            self.stop("a handler asked the worker to die")

    def _slot_freed(self) -> None:
        """A job ended (called holding ``_changed``): a slot is free, and its outcome may
        free the job behind it. When nothing was waiting at the last claim, and a new job
        would have woken this worker, only the outcome can have made a job claimable: it is
        recorded first, alone, and the worker claims only if it may have freed one."""
        if self._watching and not self._backlog and self._claimer is None:
            self._record_first = True
        else:
            self._news = True

    def _arm_grace(self, alarm: Alarm) -> None:
        grace = 0.0 if self._hurried.is_set() else self.options.grace_period
        alarm.arm(grace, HANDED_BACK)

    def _wake(self) -> None:
        with self._changed:
            self._news = True
            self._changed.notify_all()

    def _stopped(self) -> None:
        alarm = self._alarm
        if alarm is not None and self._inline is not None:
            self._arm_grace(alarm)
        self._end_wait()

    def _end_wait(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _collect(self) -> None:
        """Take the outcomes of the jobs that ended; each ended job frees a slot to claim."""
        with self._changed:
            done, self._done = self._done, deque()
            if done:
                self._slot_freed()
        for job_id in done:
            running = self._running.pop(job_id)
            try:
                performed = running.future.result()
            except BaseException as error:
                if not running.given_up:
                    self._lost(job_id, error)
                continue
            if running.given_up:
                log.info("job %s ended after its outcome was recorded; result discarded", job_id)
                continue
            self._timed(time.monotonic() - running.started)
            self._add_pending(performed)
            if performed.die:
                self.stop("a handler asked the worker to die")
        self._check_deadlines()

    @staticmethod
    def _lost(job_id: str, error: BaseException) -> None:
        """A job whose run failed outside its handlers (its outcome is unknown): its lease
        lapses and it is rescued; the worker goes on."""
        if is_transient(error):
            log.warning(
                "job %s: its outcome is unknown (%s); it is retried once its lease expires",
                job_id,
                describe(error),
            )
        elif isinstance(error, Refused):
            log.warning("job %s: %s; its result is discarded", job_id, error)
        else:
            log.error(
                "job %s: running it failed outside its handlers; it is retried once its "
                "lease expires",
                job_id,
                exc_info=error,
            )

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for running in list(self._running.values()):  # thread slots add to it
            if running.given_up or running.deadline is None or now < running.deadline:
                continue
            self._give_up(running, timed_out(running.timeout or 0))

    def _give_up(self, running: _Running, report: Report) -> None:
        """Record ``report`` for a job whose handler still runs; its slot stays taken until
        the thread ends (a thread cannot be killed), and what it returns is discarded: the
        job's lease token is no longer current (LEASE-007)."""
        running.given_up = True
        if running.cancel is not None:  # an async task is cancelled; a thread runs on
            running.cancel()
        if self.runner.isolation is not None:  # a handler process is killed
            self.runner.isolation.kill(running.job.id)
        self.runner.heartbeat.release(running.job.id)
        self._add_pending(self.runner.abandoned(running.job, report))

    def _add_pending(self, performed: Performed) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(performed)
        options = self.options
        if (
            options.memory_limit is not None
            and options.isolation == "thread"  # else it is each handler process's limit
            and resident_memory(self.runner.memory_age) > options.memory_limit
        ):
            self.stop(f"memory above {options.memory_limit} bytes")

    def _free(self) -> int:
        """Slots neither running a job nor promised to a claimed one."""
        return self.options.concurrency - len(self._running) - len(self._buffer)

    def _idle(self) -> bool:
        return not (self._running or self._buffer or self._pending or self._claiming)

    def _may_claim(self) -> bool:
        options = self.options
        return not (
            (options.max_jobs is not None and self._claimed >= options.max_jobs)
            or (options.max_cycles is not None and self.stats.cycles >= options.max_cycles)
        )

    def _record_due(self) -> bool:
        """Pending outcomes are recorded alone once nothing runs that a claim could follow,
        or once they waited record_delay."""
        waited = time.monotonic() - self._pending_since
        return not self._running or waited >= self.options.record_delay

    def _check_limits(self) -> bool:
        """Stop once a limit is reached and everything claimed has been recorded."""
        if self._may_claim() or not self._idle():
            return False
        options = self.options
        if options.max_jobs is not None and self._claimed >= options.max_jobs:
            self.stop(f"processed {self.stats.jobs} jobs (limit {options.max_jobs})")
        else:
            self.stop(f"ran {self.stats.cycles} cycles (limit {options.max_cycles})")
        return True

    def _wait(self) -> None:
        """Sleep until a job ends, new work may be claimable, a stop, or the next timer."""
        now = time.monotonic()
        timeout = self.options.idle_delay
        if self._pending and self._claiming is None:  # (with a claim in flight, its end)
            timeout = min(timeout, self._pending_since + self.options.record_delay - now)
        running = list(self._running.values())  # slots add to it
        deadlines = [r.deadline for r in running if r.deadline and not r.given_up]
        if deadlines:
            timeout = min(timeout, min(deadlines) - now)
        if self._next_rescue is not None:
            timeout = min(timeout, self._next_rescue - self.clock().timestamp())
        if self._next_schedule is not None:
            timeout = min(timeout, (self._next_schedule - self.clock()).total_seconds())
        if self._idle() and self._idle_since is None:
            self._idle_since = now
            if self.options.on_idle is not None:
                self.options.on_idle()
        with self._changed:
            woken = (
                self._done
                or self._stop.is_set()
                # news only matters while this thread could claim: with a claim in flight,
                # or the job limit reached, waking on news would spin until they end
                or (
                    self._news and self._free() > 0 and self._claiming is None and self._may_claim()
                )
                or (self._claiming is not None and self._claiming.done())
            )
            if not woken and timeout > 0:
                self._changed.wait(timeout)

    # -- recording ------------------------------------------------------------------------

    def _flush(self) -> bool:
        """Record the pending outcomes now, without claiming; True when they may have made
        other jobs claimable (Claimed.may_free), or when that is not known."""
        pending, self._pending = self._pending, []
        self.runner.release(pending)
        try:
            claimed = self.source.claim(0, pending)
        except Exception as error:
            if not isinstance(error, (Refused, PartlyRecorded)) and not is_transient(error):
                self.runner.hold(pending)
                self._pending = pending + self._pending
                raise
            self._record_each(pending, error)  # alone, each retried while the database is away
            return True
        self._made_due = self._made_due or claimed.made_due > 0
        for performed, final in zip(pending, claimed.recorded, strict=True):
            self._count(self.runner.finish(performed, final))
        return claimed.may_free

    def _record_each(
        self, pending: Sequence[Performed], error: BaseException | None = None
    ) -> None:
        """Record each outcome on its own, but those a :class:`PartlyRecorded` ``error`` says
        were recorded already."""
        recorded = error.recorded if isinstance(error, PartlyRecorded) else {}
        try:
            for performed in pending:  # each refused only if its own lease was lost
                final = recorded.get(performed.job.id)
                if final is not None:
                    self._count(self.runner.finish(performed, final))
                    continue
                self._count(self.runner.record(performed))
        finally:
            self.runner.release(pending)  # recorded, or given up: their leases may lapse

    # -- rescue ---------------------------------------------------------------------------

    def _maybe_rescue(self) -> None:
        """Look for expired leases every rescue interval, and as soon as the earliest known
        lease expires (LEASE-008), so a dead worker's jobs wait no longer than their lease."""
        now = self.clock().timestamp()
        if self._next_rescue is not None and now < self._next_rescue:
            return
        rescue = self.source.rescue()
        self.stats.rescued += len(rescue.rescued)
        for job in rescue.rescued:
            log.warning("rescued job %s whose lease expired; now %s", job.id, job.state)
        if rescue.rescued:
            self._wake()
        next_at = now + self.rescue_interval
        if rescue.next_expiry is not None:
            next_at = min(next_at, rescue.next_expiry.timestamp())
        self._next_rescue = max(next_at, now + 0.01)

    # -- schedules ------------------------------------------------------------------------

    def _maybe_schedule(self) -> None:
        """Evaluate the schedules at start and whenever a fire time comes (CRON-006); the
        runs they publish are claimed like any job."""
        if self.scheduler is None:
            return
        if self._next_schedule is not None and self.clock() < self._next_schedule:
            return
        if self.scheduler.run_due():
            self._news = True
        self._next_schedule = self.scheduler.next_due()

    # -- stopping -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Hand back what never started, give running jobs the grace period, hand back what
        still runs after it, and record every outcome."""
        try:
            self._collect_claim(wait=True)  # a claim in flight: its jobs are handed back too
        except Exception:
            log.exception("the last claim failed while the worker stopped")
        with self._changed:  # no thread slot takes one from now on: the stop is set
            buffered, self._buffer = list(self._buffer), deque()
        for job in buffered:
            self._add_pending(self.runner.abandoned(job, HANDED_BACK))
        deadline = time.monotonic() + self.options.grace_period
        while self._running and time.monotonic() < deadline and not self._hurried.is_set():
            if not [r for r in list(self._running.values()) if not r.given_up]:
                break
            with self._changed:
                if not self._done:
                    self._changed.wait(deadline - time.monotonic())
            try:
                self._collect()
            except Exception:
                log.exception("a job failed while the worker stopped")
        for running in list(self._running.values()):
            if not running.given_up:
                log.warning(
                    "job %s still runs after the grace period of %g s; handing it back",
                    running.job.id,
                    self.options.grace_period,
                )
                self._give_up(running, HANDED_BACK)
        self._record_pending()

    def _record_pending(self) -> None:
        """Stopping: record the outcomes on their own."""
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
