"""The application object: handlers, publishing, operations and workers over one store."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .cancellation import Cancellations
from .clock import Clock, SystemClock, duration_ms, from_ms
from .counting import Counts, PendingCounts
from .engine import JobEngine
from .errors import (
    ConfigurationError,
    InvalidRequest,
    JobNotFound,
    PartlyRecorded,
    StaleLease,
    WaitTimeout,
)
from .eventloop import LoopThread
from .handlers import Handler, HandlerRegistry
from .heartbeat import Heartbeat
from .hooks import AroundAttempt, AroundPublish, Hooks, Publishing, around
from .lifecycle import Lifecycle, Outcome
from .model import Batch, Job, WorkerRecord
from .notify import LoggingNotifier, Notifier
from .operations import Operations, job_filter, split_options, stored
from .priority import PriorityRange
from .publishing import (
    Call,
    JobFactory,
    PublishOptions,
    handler_rate_period_ms,
    handler_result_ttl_ms,
    handler_timeout_ms,
)
from .results import progress_document
from .retry import RetryPolicy, resolve
from .schedules import Schedule, ScheduledRun, Scheduler, make_schedule
from .source import Claimed, Rescue
from .store.base import ClaimQuery, Store, Transaction
from .uniqueness import Unique, as_unique
from .urls import open_store, with_driver

if TYPE_CHECKING:
    from .broker.mode import BrokerMode, RepairReport
    from .broker.settings import BrokerSettings
    from .execution import JobRunner, Performed
    from .worker import WorkerControl, WorkerStats

log = logging.getLogger("conveyor")

QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")


def checked_queue(queue: object) -> str:
    """A queue name as LIMIT-001 allows it, or :class:`InvalidRequest` naming the rule."""
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise InvalidRequest(
            f"queue {queue!r} is not a queue name: use 1 to 64 lower-case letters, digits, "
            "'_', '-', '.' or ':', starting with a letter or digit (LIMIT-001)"
        )
    return queue


F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "sqlite:///conveyor.db"
# app.wait() reads the job at least this often, also where the store announces ends.
WAIT_POLL_SECONDS = 0.5


def _joined(first: Outcome, second: Outcome) -> Outcome:
    """What two writes changed, for the caller: jobs, notifications, dependents read."""
    return Outcome(
        jobs=[*first.jobs, *second.jobs],
        notifications=[*first.notifications, *second.notifications],
        dependents_read=(
            first.dependents_read[0] | second.dependents_read[0],
            first.dependents_read[1] | second.dependents_read[1],
        ),
    )


@dataclass(frozen=True)
class _ClaimedAlone:
    """A claim made by the store's one statement in autocommit (Conveyor._claim_alone)."""

    jobs: list[Job]
    complete: bool
    more: bool | None  # Transaction.more_waiting after it


class BulkPublisher:
    """Buffers publishes and writes them as multi-row inserts of ``size`` jobs."""

    def __init__(self, app: Conveyor, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(
                f"bulk size must be a whole number of at least 1, not {size!r}"
            )
        self.app = app
        self.size = size
        self.pending: list[Job] = []
        self.jobs: list[Job] = []

    def add(self, job: Job) -> None:
        self.pending.append(job)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, []
            self.jobs.extend(self.app._store_jobs(pending))


class Conveyor:
    """A Conveyor application.

    With no arguments it stores jobs in ``conveyor.db`` (SQLite) in the working directory,
    or at ``CONVEYOR_URL`` when that is set. Nothing is opened until first use. A URL without
    a driver (``postgres://``, ``mysql://``) means the extras' driver
    (:func:`~conveyor.urls.with_driver`).

    ``broker_url`` (or ``CONVEYOR_BROKER_URL``), an ``amqp://`` URL, turns on broker mode: job
    ids are handed to RabbitMQ after each commit, workers consume them, and :meth:`repair`
    hands over what the broker missed (docs/operations/broker.md). ``broker_settings`` tunes it.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        default_queue: str = "default",
        default_priority: int = 100,
        priorities: Collection[int] | None = None,
        default_retry: str | RetryPolicy | None = None,
        waiting_delay: timedelta = timedelta(seconds=1),
        lease: timedelta = timedelta(minutes=5),
        notifier: Notifier | None = None,
        table_prefix: str = "conveyor_",
        broker_url: str | None = None,
        broker_settings: BrokerSettings | None = None,
    ) -> None:
        self.url = with_driver(url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL)
        self.broker_url = broker_url or os.environ.get("CONVEYOR_BROKER_URL") or None
        self.broker_settings = broker_settings
        self.clock: Clock = clock or SystemClock()
        self.default_queue = default_queue
        self.default_priority = default_priority
        self.priorities = tuple(sorted(priorities)) if priorities is not None else None
        if self.priorities is not None and default_priority not in self.priorities:
            self.default_priority = self.priorities[0]
        self.default_retry = resolve(default_retry)
        self.lease = lease
        self.notifier: Notifier = notifier or LoggingNotifier()
        self.table_prefix = table_prefix
        self.handlers = HandlerRegistry()
        self.hooks = Hooks()
        # Failed attempts, added to the store's totals at most once a second (counting.py).
        self.event_counts = PendingCounts(self.add_to_counters)
        self.engine = JobEngine()
        self.lifecycle = Lifecycle(self.engine, duration_ms(waiting_delay))
        self.factory = JobFactory(
            self.handlers,
            self.engine.machine.initial_state,
            self.engine.requests.machine.initial_state,
            self.priorities,
        )
        self.operations = Operations(self.factory, self.lifecycle)
        self._store = store
        self._store_lock = threading.Lock()
        self._local = threading.local()
        self._broker_mode: BrokerMode | None = None
        # The attempts this app's workers run, told of cancel requests by the heartbeat's
        # answers (CANCEL-002) and by cancel() in this process.
        self.cancellations = Cancellations()
        self.heartbeat_thread = Heartbeat(self.heartbeat, self.cancellations.request)
        self.loop = LoopThread()
        # Cron schedules declared with cron() / schedule(), run by this app's workers.
        self.scheduler = Scheduler(self, self._deliver)
        if self.broker_url is not None:
            _ = self.broker  # a wrong URL or a missing pika fails here, not after a commit

    # -- store ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store, opened (and its schema created) on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(
                        self.url,
                        self.lifecycle.states,
                        self.table_prefix,
                        # Broker mode wakes consumers through the broker, not the store.
                        announce=self.broker_url is None,
                    )
        return self._store

    @property
    def broker(self) -> BrokerMode | None:
        """Broker mode (None without a ``broker_url``), set up on first use."""
        if self.broker_url is None:
            return None
        if self._broker_mode is None:
            with self._store_lock:
                if self._broker_mode is None:
                    from .broker.mode import BrokerMode
                    from .broker.settings import BrokerSettings

                    settings = self.broker_settings or BrokerSettings()
                    self._broker_mode = BrokerMode(self, self.broker_url, settings)
        return self._broker_mode

    def release_thread(self) -> None:
        """Return the calling thread's database connections to the pool: a thread that used
        the app and is about to end calls it (worker threads do)."""
        if self._store is not None:
            self._store.release_thread()

    def close(self) -> None:
        """Stop the app's heartbeat and event loop, and close the broker and the store."""
        if self._store is not None:
            self.event_counts.flush()
        self.heartbeat_thread.close()
        self.loop.close()
        if self._broker_mode is not None:
            self._broker_mode.close()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self.clock.now()

    # -- handlers -------------------------------------------------------------------------

    def handler(
        self,
        type: str | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        retry: str | RetryPolicy | None = None,
        pass_context: bool = False,
        timeout: timedelta | float | None = None,
        result_ttl: timedelta | float | None = None,
        concurrency_key: str | Callable[[Any], str] | None = None,
        concurrency_limit: int | None = None,
        rate_key: str | Callable[[Any], str] | None = None,
        rate_limit: int | None = None,
        rate_period: timedelta | float | None = None,
        unique: Unique | Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function under ``type`` (default: its qualified name)."""

        def register(function: F) -> F:
            self.register(
                type or f"{function.__module__}.{function.__qualname__}",
                function,
                queue=queue,
                priority=priority,
                retry=retry,
                pass_context=pass_context,
                timeout=timeout,
                result_ttl=result_ttl,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit,
                rate_key=rate_key,
                rate_limit=rate_limit,
                rate_period=rate_period,
                unique=unique,
            )
            return function

        return register

    def register(
        self,
        type: str,
        function: Callable[..., Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        retry: str | RetryPolicy | None = None,
        pass_context: bool = False,
        timeout: timedelta | float | None = None,
        result_ttl: timedelta | float | None = None,
        concurrency_key: str | Callable[[Any], str] | None = None,
        concurrency_limit: int | None = None,
        rate_key: str | Callable[[Any], str] | None = None,
        rate_limit: int | None = None,
        rate_period: timedelta | float | None = None,
        unique: Unique | Mapping[str, Any] | None = None,
    ) -> Handler:
        """Register ``function`` under ``type``, with the defaults of its jobs: queue,
        priority, retry policy, ``timeout`` (how long one attempt may run) and ``result_ttl``
        (how long the value it returns stays readable once the job finished), and a
        concurrency limit: at most ``concurrency_limit`` of its jobs with one
        ``concurrency_key`` (a string, or a function of the payload) run at once, across
        every worker; and a rate limit: at most ``rate_limit`` of its jobs with one ``rate_key``
        start per ``rate_period`` (seconds or a timedelta), across every worker; and a
        unique key (:class:`~conveyor.uniqueness.Unique`, or a mapping of its fields): a job
        published while another with the same key holds it is not stored."""
        uniqueness = None if unique is None else as_unique(unique)
        if unique is not None and uniqueness is None:
            raise ConfigurationError(
                f"handler {type!r}: unique takes a Unique or a mapping of its fields"
            )
        rate_given = [value is not None for value in (rate_key, rate_limit, rate_period)]
        if any(rate_given) and not all(rate_given):
            raise ConfigurationError(
                f"handler {type!r}: rate_key, rate_limit and rate_period go together; give "
                "all three, or none"
            )
        if (concurrency_key is None) != (concurrency_limit is None):
            raise ConfigurationError(
                f"handler {type!r}: concurrency_key and concurrency_limit go together; give "
                "both, or neither"
            )
        chosen = self.default_priority if priority is None else priority
        if self.priorities is not None and chosen not in self.priorities:
            raise ConfigurationError(
                f"handler {type!r} asks for priority {chosen}, which is not one of the "
                f"configured priorities {list(self.priorities)}"
            )
        handler = Handler(
            type=type,
            function=function,
            queue=queue or self.default_queue,
            priority=chosen,
            retry_policy=resolve(retry) if retry is not None else self.default_retry,
            pass_context=pass_context,
            timeout_ms=None if timeout is None else handler_timeout_ms(type, timeout),
            result_ttl_ms=None if result_ttl is None else handler_result_ttl_ms(type, result_ttl),
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            rate_key=rate_key,
            rate_limit=rate_limit,
            rate_period_ms=None
            if rate_period is None
            else handler_rate_period_ms(type, rate_period),
            uniqueness=uniqueness,
        )
        self.handlers.add(handler)
        return handler

    # -- cron schedules -------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        type: str,
        payload: Any = None,
        *,
        tz: str = "UTC",
        overlap: str = "allow",
        missed: str = "skip",
        **options: Any,
    ) -> Schedule:
        """Publish ``type(payload)`` at each time the five-field ``cron`` expression names in
        the IANA time zone ``tz`` (spec.md#cron). Every worker of the app runs the schedule
        and the store lets one publish each run, however many run it. ``overlap``: ``allow``,
        ``skip`` (no run while the previous one is unfinished) or ``queue`` (runs wait for
        each other); ``missed``: ``skip`` or ``run_once`` (one run after a downtime).
        ``options`` are publish options (queue, priority, retry, tags, metadata, ...)."""
        return self.scheduler.add(
            make_schedule(name, cron, type, payload, tz, overlap, missed, options)
        )

    def cron(
        self,
        expression: str,
        *,
        name: str | None = None,
        tz: str = "UTC",
        overlap: str = "allow",
        missed: str = "skip",
        **options: Any,
    ) -> Callable[[F], F]:
        """Register the decorated function as a handler (under ``name``, its qualified name
        by default) and run it on the schedule :meth:`schedule` describes."""

        def register(function: F) -> F:
            chosen = name or f"{function.__module__}.{function.__qualname__}"
            handler_options = {
                key: options[key] for key in ("queue", "priority", "retry") if key in options
            }
            self.register(chosen, function, **handler_options)
            self.schedule(
                chosen, expression, chosen, tz=tz, overlap=overlap, missed=missed, **options
            )
            return function

        return register

    def run_schedules(self) -> list[ScheduledRun]:
        """Evaluate the schedules whose fire time has come (every one on the first call), as
        workers do between jobs; returns the runs this call published or skipped."""
        return self.scheduler.run_due()

    # -- publishing -----------------------------------------------------------------------

    def publish(self, type: str, payload: Any = None, **options: Any) -> Job:
        """Publish a job with one request. See :class:`PublishOptions` for the options."""
        return self.publish_job([Call(type, payload)], **options)

    def publish_job(self, calls: Sequence[Call], **options: Any) -> Job:
        """Publish one job made of several requests run in order.

        ``connection=`` (a SQLAlchemy ``Connection`` or ``Session`` on the store's database)
        publishes inside the caller's transaction: the job exists if and only if the
        caller's transaction commits.
        """
        publish_options, connection = split_options(options)
        job = self.operations.build(calls, publish_options, self.now())
        return self._publish_built([job], connection)[0]

    def publish_many(self, type: str, payloads: Iterable[Any], **options: Any) -> list[Job]:
        """Publish one job of ``type`` per payload, all with the same options, in one
        transaction: every job is stored, or none (a bad payload raises before any is).

        The fast way to enqueue many jobs at once: the options are checked once, not per job,
        and the rows are written together. Takes the options of :meth:`publish`, including
        ``connection=``; inside :meth:`bulk`, the jobs join its buffer instead.
        """
        publish_options, connection = split_options(options)
        jobs = self.operations.build_many(type, payloads, publish_options, self.now())
        return self._publish_built(jobs, connection) if jobs else []

    def _publish_built(self, jobs: list[Job], connection: Any) -> list[Job]:
        bulk: BulkPublisher | None = getattr(self._local, "bulk", None)
        if bulk is not None and connection is None:
            for job in jobs:
                bulk.add(job)
            return jobs
        return self._store_jobs(jobs, connection)

    def _store_jobs(self, jobs: Sequence[Job], connection: Any = None) -> list[Job]:
        with around(self.hooks.around_publish, Publishing(list(jobs))) as publishing:
            publish = self.operations.publish(publishing.jobs, self.now())
            alone = None
            if connection is None and len(publishing.jobs) == 1:
                alone = self.lifecycle.publish_alone(self.store, publishing.jobs[0])
            if alone is not None:
                outcome = alone
            elif connection is not None:
                outcome = publish(self._joined(connection))
            else:
                with self.store.transaction() as tx:
                    outcome = publish(tx)
            changed = self._deliver(outcome, caller_transaction=connection)
            publishing.stored = stored(outcome, len(publishing.jobs), changed)
        return publishing.stored

    def _joined(self, connection: Any) -> Transaction:
        return self.store.join(connection)

    @contextmanager
    def bulk(self, size: int = 500) -> Iterator[BulkPublisher]:
        """Buffer every publish of this thread and insert them ``size`` at a time.

        Jobs published inside get their ids when their chunk is written; ``bulk.jobs``
        holds the stored jobs after the block.
        """
        if getattr(self._local, "bulk", None) is not None:
            raise ConfigurationError("bulk() blocks cannot be nested")
        publisher = BulkPublisher(self, size)
        self._local.bulk = publisher
        try:
            yield publisher
        finally:
            self._local.bulk = None
        publisher.flush()

    # -- batches --------------------------------------------------------------------------

    def open_batch(self, completion: Call | None = None, **completion_options: Any) -> Batch:
        """Create an open batch; jobs join it with ``publish(..., batch=batch)``."""
        now = self.now()
        stored_completion = None
        if completion is not None:
            if any(completion_options.get(name) for name in ("batch", "batch_id", "depends_on")):
                raise InvalidRequest(
                    "a batch's completion job cannot join a batch or depend on jobs (BATCH-001); "
                    "publish it without batch and depends_on"
                )
            job = self.factory.build([completion], PublishOptions.of(completion_options), now)
            stored_completion = job.to_dict()
        batch = Batch(
            id="",
            state=self.lifecycle.batches.machine.initial_state,
            total=0,
            created_at=now,
            completion=stored_completion,
        )
        with self.store.transaction() as tx:
            return tx.insert_batch(batch)

    def seal_batch(self, batch: Batch | str) -> Batch:
        """Declare that every job has been added; the batch finishes when all are terminal."""
        batch_id = batch.id if isinstance(batch, Batch) else batch
        with self.store.transaction() as tx:
            outcome = self.lifecycle.seal(tx, batch_id, self.now())
            sealed = tx.get_batch(batch_id)
        self._deliver(outcome)
        assert sealed is not None
        return sealed

    @contextmanager
    def batch(self, completion: Call | None = None, **completion_options: Any) -> Iterator[Batch]:
        """Open a batch, yield it, and seal it when the block ends without error."""
        opened = self.open_batch(completion, **completion_options)
        yield opened
        self.seal_batch(opened)

    def get_batch(self, batch_id: str) -> Batch:
        with self.store.transaction() as tx:
            batch = tx.get_batch(batch_id)
        if batch is None:
            raise JobNotFound(f"batch {batch_id} does not exist")
        return batch

    # -- reading --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.store.transaction() as tx:
            job = self.operations.get(job_id)(tx)
        return job.result_read_at(self.now())

    def wait(self, job_id: str, timeout: timedelta | float, poll: float = WAIT_POLL_SECONDS) -> Job:
        """Block until the job reaches a terminal state and return it, with its result
        (RESULT-004); :class:`~conveyor.errors.WaitTimeout` after ``timeout`` (seconds or a
        timedelta). On PostgreSQL the job's end wakes the caller at once (NOTIFY); other
        stores read the job again every ``poll`` seconds (PostgreSQL does too, as a net)."""
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        deadline = time.monotonic() + seconds
        terminal = self.lifecycle.states.terminal
        with self.store.watch_end(str(job_id), seconds) as woken:
            while True:
                job = self.get(job_id)
                if job.state in terminal:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"job {job_id} is still {job.state} after {seconds:g} s; wait longer, "
                        "or read it later with app.get()"
                    )
                woken(min(left, poll))

    def report_progress(
        self,
        job_id: str,
        lease_token: int,
        percent: float | None = None,
        message: str | None = None,
    ) -> Job:
        """Store the progress of a job under its lease (PROGRESS-001): state, lease and
        ``updated_at`` stay as they are. StaleLease when ``lease_token`` is not the job's
        current lease's; JobNotFound when the job is not stored."""
        progress = progress_document(percent, message, self.now())
        with self.store.autocommit() as tx:
            written = tx.write_progress(str(job_id), lease_token, progress)
            job = tx.get_job(str(job_id))
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist (it may have been pruned)")
        if not written:
            raise StaleLease(
                f"job {job_id} is not leased under token {lease_token} (it is {job.state}); "
                "progress is reported only by the worker running the job"
            )
        return job

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        tag: str | None = None,
        identifier: str | None = None,
        batch: str | None = None,
        limit: int = 100,
        after_sequence: int = 0,
        serial_group: str | None = None,
    ) -> list[Job]:
        """Jobs in publish order, filtered; ``tag`` finds every job about one entity."""
        query = job_filter(
            states=states,
            queue=queue,
            tag=tag,
            identifier=identifier,
            batch=batch,
            limit=limit,
            after_sequence=after_sequence,
            serial_group=serial_group,
        )
        with self.store.transaction() as tx:
            found = self.operations.find(query)(tx)
        now = self.now()
        return [job.result_read_at(now) for job in found]

    def unfinished_identifiers(self, identifiers: Collection[str]) -> set[str]:
        """Which of ``identifiers`` still have work not done (spec.md#identifiers)."""
        with self.store.transaction() as tx:
            return self.operations.unfinished(identifiers)(tx)

    def status(self) -> list[tuple[str, str, int]]:
        """(queue, state, count) for every non-empty combination."""
        with self.store.transaction() as tx:
            return self.operations.counts()(tx)

    def ended_by_minute(self, minutes: int = 60) -> list[tuple[datetime, str, int]]:
        """(minute, state, count) of the jobs that ended in the last ``minutes`` minutes: the
        throughput and the failures over time, as the dashboard charts them."""
        if minutes < 1:
            raise InvalidRequest(f"minutes must be 1 or more, not {minutes}")
        since = self.now() - timedelta(minutes=minutes)
        with self.store.transaction() as tx:
            rows = tx.ended_by_minute(since)
        return [(from_ms(minute * 60_000), state, count) for minute, state, count in rows]

    def ended_executions(
        self, window: timedelta, limit: int = 10_000
    ) -> list[tuple[str, dict[str, Any]]]:
        """(queue, execution record) of the latest ``limit`` jobs that ended within
        ``window``: what the metrics' histograms are computed from."""
        with self.store.transaction() as tx:
            return tx.ended_executions(self.now() - window, limit)

    def add_to_counters(self, counts: Counts) -> None:
        """Add to the store's event totals (counting.py), by (name, queue)."""
        with self.store.transaction() as tx:
            tx.add_to_counters(counts)

    def counters(self) -> list[tuple[str, str, int]]:
        """(name, queue, total) of the events counted in the store: failed attempts, lease
        rescues and broker repairs (docs/operations/metrics.md#counters)."""
        with self.store.transaction() as tx:
            return tx.counters()

    # -- state changes --------------------------------------------------------------------

    def fire(self, job_id: str, event: str, params: dict[str, Any] | None = None) -> Job:
        """Fire any machine event on a job (operators and adapters)."""
        return self.report(job_id, event, params or {})

    def report(
        self,
        job_id: str,
        event: str,
        params: dict[str, Any],
        update: dict[str, Any] | None = None,
        known: Job | None = None,
    ) -> Job:
        """Fire ``event`` with ``params``; ``known`` is the caller's current copy, if any."""
        now = self.now()
        outcome = None
        if known is not None:
            with self.store.autocommit() as tx:
                outcome = self.lifecycle.fire_alone(tx, known, event, now, params, update)
        if outcome is None:
            with self.store.transaction() as tx:
                outcome = self.lifecycle.fire(tx, str(job_id), event, now, params, update, known)
        self._deliver(outcome)
        return outcome.jobs[0]

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once when it is not running (OPS-008); a ``processing`` job gets
        a cancel request its handler sees (CANCEL-001), at once when this process runs it,
        else at its worker's next heartbeat, and ends when the handler stops."""
        job = self.report(job_id, "cancel", {})
        if job.cancel_requested and job.lease is not None:
            self.cancellations.request(job.id, job.lease.token)
        return job

    def requeue(self, job_id: str) -> Job:
        return self.report(job_id, "requeue", {})

    def retry(self, job_id: str) -> Job:
        return self.report(job_id, "retry", {})

    # -- paused queues --------------------------------------------------------------------

    def pause_queue(self, queue: str) -> bool:
        """Stop every worker from claiming jobs of ``queue`` (PAUSE-001); jobs keep being
        published and running jobs finish. False when the queue was paused already."""
        name = checked_queue(queue)
        with self.store.transaction() as tx:
            return tx.pause_queue(name, self.now())

    def resume_queue(self, queue: str) -> bool:
        """Let workers claim jobs of ``queue`` again (PAUSE-003); False when it was not paused.

        In broker mode the queue's claimable jobs are handed over again at once (their
        messages were dropped by consumers while the queue was paused, PAUSE-004)."""
        name = checked_queue(queue)
        with self.store.transaction() as tx:
            resumed = tx.resume_queue(name)
        if resumed and self.broker is not None:
            self.broker.repair(stale_after=timedelta(0))
        return resumed

    def paused_queues(self) -> dict[str, datetime]:
        """Every paused queue and since when, by queue name (PAUSE-005)."""
        with self.store.transaction() as tx:
            return dict(tx.paused_queues())

    def workers(self) -> list[WorkerRecord]:
        """The running workers on this store, as their records say (presence.py), by id."""
        with self.store.transaction() as tx:
            return tx.workers()

    def heartbeat(self, job_id: str, token: int, lease_ms: int | None = None) -> Job:
        ms = lease_ms if lease_ms is not None else self.lease_ms
        return self.report(job_id, "heartbeat", {"lease_token": token, "lease_ms": ms})

    @property
    def lease_ms(self) -> int:
        return duration_ms(self.lease)

    def claim(
        self,
        worker_id: str,
        *,
        queues: Sequence[str] = (),
        priorities: PriorityRange | str | None = None,
        limit: int = 1,
        lease_ms: int | None = None,
        job_id: str | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs in (priority, sequence) order; each gets a new lease."""
        return self.claim_outcome(
            worker_id,
            queues=queues,
            priorities=priorities,
            limit=limit,
            lease_ms=lease_ms,
            job_id=job_id,
        ).jobs

    def claim_outcome(
        self,
        worker_id: str,
        *,
        queues: Sequence[str] = (),
        priorities: PriorityRange | str | None = None,
        limit: int = 1,
        lease_ms: int | None = None,
        job_id: str | None = None,
    ) -> Outcome:
        """:meth:`claim`, with the whole outcome: the claimed jobs and, in ``claimed_from``,
        each as it was before the claim (a broker consumer tells from it whether the job had
        a message of its own, spec.md#BROKER-010)."""
        query = self._claim_query(queues, priorities, job_id)
        now = self.now()
        with self.store.transaction() as tx:
            outcome = self.lifecycle.claim(
                tx, query, worker_id, lease_ms or self.lease_ms, limit, now
            )
        self._deliver(outcome)
        return outcome

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
    ) -> Claimed:
        """Record a worker's outcomes and claim its next jobs (``limit`` 0: none) that were
        due by ``due_by`` (default: now) in one transaction; with ``job_ids``, only among
        those jobs (a broker consumer claims the jobs its messages name).

        One commit for a whole batch instead of one per job: the outcomes are exactly as
        durable as when recorded alone once this returns, and a job they made claimable (a
        serial group's next job, a dependant) can be claimed in the same breath. The claim
        passes over the jobs just recorded, so a job due again at once (``Waiting(delay=0)``)
        does not starve the jobs behind it. Raises StaleLease (or another refusal), having
        changed nothing, when an outcome cannot be recorded as it stands (its lease was lost):
        record them one by one then.
        """
        query = self._claim_query(queues, priorities, None, due_by, job_ids)
        now = self.now()
        reports = [(p.current, p.event, p.params, p.update) for p in performed]
        lease_ms = lease_ms or self.lease_ms
        # Successes the store writes by one statement on its own (committed): the others,
        # and the claim, go on as if these had been recorded before.
        finished, outcome_alone = self._finish_alone(reports, now)
        left = [report for report in reports if report[0].id not in finished]
        alone = self._claim_alone(query, worker_id, lease_ms, limit, now) if not left else None
        if alone is not None and alone.complete and not reports:
            backlog = None if alone.more is None else len(alone.jobs) >= limit and alone.more
            return Claimed([], alone.jobs, 0, backlog)
        # Jobs the statement claimed are committed; should the rest of the claim fail, they
        # are rescued once their leases expire, as a worker's lost jobs are.
        taken = alone.jobs if alone is not None else []
        claim_done = alone is not None and alone.complete
        try:
            recorded_left, outcome, claimed, more = self._record_and_claim_in_transaction(
                left, query, worker_id, lease_ms, 0 if claim_done else limit - len(taken), now
            )
        except Exception as error:
            if finished:
                raise PartlyRecorded(finished) from error
            raise
        if claim_done:
            assert alone is not None
            claimed, more = Outcome(), alone.more
        if claimed is not None and taken:  # the jobs claimed alone first, all in claim order
            claimed.jobs = sorted([*taken, *claimed.jobs], key=lambda j: (j.priority, j.sequence))
        self._deliver(outcome)
        if finished:
            in_order = iter(recorded_left)
            recorded = [finished.get(known.id) or next(in_order) for known, *_ in reports]
            outcome = _joined(outcome_alone, outcome)
        else:
            recorded = recorded_left
        claimable = self.lifecycle.states.claimable
        due_again = sum(1 for job in recorded if job.state in claimable and job.available_at <= now)
        ids = {job.id for job in recorded}
        made_due = len(
            {
                job.id
                for job in outcome.jobs
                if job.id not in ids and job.state in claimable and job.available_at <= now
            }
        )
        if claimed is None:
            may_free = due_again > 0 or made_due > 0 or self._may_free(recorded, outcome)
            return Claimed(recorded, [], due_again, made_due=made_due, may_free=may_free)
        self._deliver(claimed)
        # A full claim is a backlog unless the claim's read saw nothing behind it.
        backlog = None if more is None else len(claimed.jobs) >= limit and more
        return Claimed(recorded, claimed.jobs, due_again, backlog, made_due=made_due)

    def _record_and_claim_in_transaction(
        self,
        reports: Sequence[tuple[Job, str, Mapping[str, Any], Mapping[str, Any]]],
        query: ClaimQuery,
        worker_id: str,
        lease_ms: int,
        limit: int,
        now: datetime,
    ) -> tuple[list[Job], Outcome, Outcome | None, bool | None]:
        """(jobs recorded, what the records changed, the claim or None, more waiting) of one
        transaction; none when there is nothing to record or claim."""
        if not reports and limit <= 0:
            return [], Outcome(), None, None
        with self.store.transaction() as tx:
            recorded, outcome = self.lifecycle.record_all(tx, reports, now)
            claimed = (
                self.lifecycle.claim(
                    tx, query, worker_id, lease_ms, limit, now, skip={job.id for job in recorded}
                )
                if limit > 0
                else None
            )
            more = tx.more_waiting(len(claimed.jobs)) if claimed is not None else None
        return recorded, outcome, claimed, more

    def _finish_alone(
        self,
        reports: Sequence[tuple[Job, str, Mapping[str, Any], Mapping[str, Any]]],
        now: datetime,
    ) -> tuple[dict[str, Job], Outcome]:
        """A worker's outcomes when all are successes the store writes by one statement
        (``Transaction.finish_planned``), run alone in autocommit: its own transaction, with
        no ``BEGIN`` or ``COMMIT`` round trip. The jobs it wrote, by id, and what it changed
        (delivered); nothing when the store has no such statement or some outcome needs the
        machine (all are then recorded in one transaction, as before)."""
        if not reports or self.lifecycle.finish_plan is None or not self.store.claims_alone:
            return {}, Outcome()
        with self.store.autocommit() as tx:
            finished = self.lifecycle.finish_planned(tx, reports, now, whole=True)
            if not finished:
                return {}, Outcome()
            outcome = Outcome(jobs=list(finished.values()), dependents_read=tx.dependents_read())
        self._deliver(outcome)
        return dict(finished), outcome

    def _claim_alone(
        self, query: ClaimQuery, worker_id: str, lease_ms: int, limit: int, now: datetime
    ) -> _ClaimedAlone | None:
        """A claim with no outcome to record, as the store's one statement alone, in
        autocommit: the statement is its own transaction, with no ``BEGIN`` or ``COMMIT``
        round trip of its own (an idle worker woken for a new job). None when the store has
        no such statement; not ``complete`` when its read left jobs to the machine (the
        claim then goes on in a transaction for the rest)."""
        if limit <= 0 or self.lifecycle.claim_plan is None or not self.store.claims_alone:
            return None
        with self.store.autocommit() as tx:
            planned = self.lifecycle.claim_alone(tx, query, worker_id, lease_ms, limit, now)
            if planned is None:
                return None
            more = tx.more_waiting(len(planned.jobs))
        self._deliver(Outcome(jobs=planned.jobs))
        return _ClaimedAlone(planned.jobs, planned.complete, more)

    def _may_free(self, recorded: Sequence[Job], outcome: Outcome) -> bool:
        """Whether recording these jobs may have made another job claimable: a job of a
        serial group, unique, with a concurrency key or in a batch, or one that ended with
        dependents (or whose dependents the write did not read)."""
        read_for, dependents = outcome.dependents_read
        if dependents:
            return True
        terminal = self.lifecycle.states.terminal
        return any(
            job.serial_group is not None
            or job.unique
            or job.concurrency_key is not None
            or job.batch_id is not None
            or (job.state in terminal and job.id not in read_for)
            for job in recorded
        )

    @staticmethod
    def _claim_query(
        queues: Sequence[str],
        priorities: PriorityRange | str | None,
        job_id: str | None,
        due_by: datetime | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> ClaimQuery:
        span = (
            priorities if isinstance(priorities, PriorityRange) else PriorityRange.parse(priorities)
        )
        return ClaimQuery(tuple(queues), span, job_id, due_by, job_ids=tuple(job_ids or ()))

    def rescue_expired(self, limit: int = 100) -> list[Job]:
        """Fire lease_expired on jobs whose worker stopped heart-beating."""
        return self.rescue(limit).rescued

    def rescue(self, limit: int = 100) -> Rescue:
        """:meth:`rescue_expired`, and when the earliest lease still held expires, in one
        transaction: a worker looks again then (LEASE-008)."""
        now = self.now()
        with self.store.transaction() as tx:
            outcome = self.lifecycle.rescue(tx, now, limit)
            next_expiry = tx.next_lease_expiry()
        self._deliver(outcome)
        return Rescue(outcome.jobs, next_expiry)

    def wait_for_work(self, timeout: float, ready: Callable[[], None] | None = None) -> bool:
        """Block up to ``timeout`` seconds; True when woken because new work may be due."""
        return self.store.wait_for_work(timeout, ready)

    def clear_finished(self, older_than: timedelta = timedelta(0), chunk: int = 1000) -> int:
        """Delete finished and redundant jobs older than ``older_than``, ``chunk`` per commit,
        and the unique-key claims that expired."""
        now = self.now()
        cutoff = now - older_than
        deleted = 0
        while True:
            with self.store.transaction() as tx:
                count = tx.delete_prunable(cutoff, chunk)
            deleted += count
            if count < chunk:
                break
        while True:  # expired unique-key claims hold nothing: forget them too (UKEY-003)
            with self.store.transaction() as tx:
                if tx.forget_unique_claims(now, chunk) < chunk:
                    return deleted

    # -- running --------------------------------------------------------------------------

    def execute(self, job_id: str, worker_id: str = "direct") -> Job:
        """Run one stored job now, in this thread, with full semantics (claim, lease, outcome);
        an async handler runs on the app's event loop while this thread waits."""
        claimed = self.claim(worker_id, job_id=str(job_id))
        if not claimed:
            return self.get(job_id)
        return self.runner(worker_id, self.lease_ms).run(claimed[0]).job

    def runner(self, worker_id: str, lease_ms: int) -> JobRunner:
        """A runner of this app's jobs, sharing its heartbeat and event loop."""
        from .execution import JobRunner

        return JobRunner(
            self, worker_id, lease_ms, self.heartbeat_thread, self.loop, self.cancellations
        )

    def run_now(self, type: str, payload: Any = None, **options: Any) -> Job:
        """Publish a job and run it at once in this thread (direct execution)."""
        return self.execute(self.publish(type, payload, **options).id)

    def worker(self, **options: Any) -> WorkerControl:
        """A worker over :class:`WorkerOptions`; in broker mode a consumer of RabbitMQ that
        also takes ``prefetch`` (messages held per queue)."""
        from .presence import Presence
        from .source import SourceOptions, StoreSource
        from .worker import Worker, WorkerOptions

        prefetch = options.pop("prefetch", None)
        settings = WorkerOptions(**options)
        lease_ms = duration_ms(settings.lease or self.lease)
        source_options = SourceOptions(
            settings.worker_id,
            tuple(settings.queues),
            self._claim_query((), settings.priorities, None).priorities,
            lease_ms,
            settings.idle_delay,
        )
        runner = self.runner(settings.worker_id, lease_ms)
        presence = None
        if settings.presence_every is not None and not settings.stop_when_empty:
            presence = Presence(
                self.store,
                self.now,
                settings.worker_id,
                settings.queues,
                settings.concurrency,
                every=settings.presence_every,
            )
        broker = self.broker
        if broker is None:
            worker = Worker(StoreSource(self, source_options), runner, settings, self.now, presence)
            worker.scheduler = self.scheduler if self.scheduler.schedules else None
            return worker
        source = broker.source(
            self,
            source_options,
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            prefetch=prefetch,
            draining=settings.stop_when_empty,
        )
        worker = Worker(source, runner, settings, self.now, presence)
        worker.scheduler = self.scheduler if self.scheduler.schedules else None
        source.on_reload = worker.reload
        return worker

    def process(self, limit: int | None = None, **options: Any) -> WorkerStats:
        """Run every due job, then return the worker's statistics (for cron).

        In broker mode it first runs :meth:`repair` (treating every due job as possibly
        without a message), then consumes from RabbitMQ until its queues are empty.
        """
        if self.broker is not None:
            self.repair(stale_after=timedelta(0))
        return self.worker(max_jobs=limit, stop_when_empty=True, **options).run()

    def repair(self, stale_after: timedelta | None = None) -> RepairReport:
        """Broker mode's repair loop: rescue expired leases, requeue ``broker_failed``,
        ``back_to_broker`` and due ``temporarily_failed`` and ``waiting`` jobs, and hand over
        due jobs whose message may be lost. Run it periodically (``conveyor process``)."""
        broker = self.broker
        if broker is None:
            raise ConfigurationError(
                "repair() hands jobs to a broker, and this app has none: pass broker_url= "
                "(or set CONVEYOR_BROKER_URL)"
            )
        return broker.repair(stale_after)

    def reload_consumers(self, queue: str, count: int) -> None:
        """Ask ``count`` running consumers of ``queue`` to finish their job and exit."""
        broker = self.broker
        if broker is None:
            raise ConfigurationError(
                "reload_consumers() needs broker mode: pass broker_url= (or set "
                "CONVEYOR_BROKER_URL)"
            )
        broker.reload_consumers(queue, count)

    # -- hooks and delivery ---------------------------------------------------------------

    def before_job(self, hook: Callable[[Job], Any]) -> Callable[[Job], Any]:
        self.hooks.before.append(hook)
        return hook

    def after_job(self, hook: Callable[[Job], Any]) -> Callable[[Job], Any]:
        self.hooks.after.append(hook)
        return hook

    def on_error(
        self, hook: Callable[[Job, BaseException], Any]
    ) -> Callable[[Job, BaseException], Any]:
        self.hooks.error.append(hook)
        return hook

    def job_metadata(
        self, hook: Callable[[Job], dict[str, Any] | None]
    ) -> Callable[[Job], dict[str, Any] | None]:
        self.hooks.metadata.append(hook)
        return hook

    def around_publish(self, hook: AroundPublish) -> AroundPublish:
        """Enter ``hook(publishing)``, a context manager, around each write of published jobs
        (``conveyor.hooks.Publishing``); it may change the jobs before they are stored."""
        self.hooks.around_publish.append(hook)
        return hook

    def around_attempt(self, hook: AroundAttempt) -> AroundAttempt:
        """Enter ``hook(attempt)``, a context manager, around each attempt of a job, in the
        thread (or task) that runs its handlers (``conveyor.hooks.Attempt``)."""
        self.hooks.around_attempt.append(hook)
        return hook

    def _deliver(self, outcome: Outcome, caller_transaction: Any = None) -> dict[str, Job]:
        """Notify, then hand what became claimable to the broker; returns the jobs the
        hand-over changed afterwards (left ``broker_failed``), by id."""
        for notification in outcome.notifications:
            try:
                self.notifier.notify(notification.kind, notification.job)
            except Exception:
                log.exception("notifier failed for job %s", notification.job.id)
        broker = self._broker_mode
        # UKEY-007: a holder a unique-key conflict returned unchanged gets no new message.
        jobs = [job for job in outcome.jobs if job.conflict != "discarded"]
        if broker is None or not jobs:
            return {}
        if caller_transaction is None:
            return broker.after_commit(jobs, outcome.dependents_read)
        broker.after_caller_commit(caller_transaction, jobs)
        return {}
