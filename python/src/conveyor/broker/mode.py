"""Broker mode of an app: what is handed over after a commit, the repair loop, consumers.

An app with a ``broker_url`` creates one :class:`BrokerMode` on first use. The app calls
:meth:`BrokerMode.after_commit` with the jobs every committed operation touched; that hands over
the jobs that are claimable and due, and one message for each job a finished or failed job may
have unblocked (its serial group, unique siblings and dependents; spec.md#BROKER-009). It never
raises: jobs whose message was not confirmed become ``broker_failed`` (spec.md#BROKER-002), and
when even that cannot be recorded the repair loop finds them as jobs without a message.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..counting import BROKER_REPAIRS
from ..errors import (
    BrokerUnavailable,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
    StaleLease,
)
from ..model import Job
from ..priority import PriorityRange
from ..resilience import describe, is_transient
from ..source import SourceOptions, StoreOperations
from .base import Broker, BrokerHost, Failed
from .control import ControlRequest
from .envelope import Envelope
from .settings import AUTO_PREFETCH, BrokerSettings
from .source import BrokerSource, Bucket, ConsumerSettings
from .topology import Bands, Topology

log = logging.getLogger("conveyor.broker")

# How long jobs published on a bare Connection are looked for after its commit began; a
# transaction rolled back (or committed later) leaves them to the repair loop.
VISIBILITY_WAIT = 5.0

# States the repair loop requeues (spec.md#BROKER-005); temporarily_failed and waiting once due.
WARN_EVERY = 10  # seconds between warnings about jobs left broker_failed
REQUEUED_STATES = ("broker_failed", "back_to_broker", "temporarily_failed", "waiting")
# Claimable states whose job may not have been handed over since it entered them: a failed
# hand-over, or an operator's UPDATE of the state (spec.md#BROKER-010).
UNSENT_STATES = frozenset(("broker_failed", "back_to_broker"))


@dataclass
class RepairReport:
    """What one run of the repair loop did."""

    rescued: int = 0
    requeued: int = 0
    republished: int = 0
    failed: int = 0
    problem: str | None = None
    republished_by_queue: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = (
            f"rescued {self.rescued}, requeued {self.requeued}, republished {self.republished} "
            f"job(s) without a message, {self.failed} not confirmed"
        )
        return f"{text}; {self.problem}" if self.problem else text


def open_broker(url: str, settings: BrokerSettings) -> Broker:
    """The broker a URL names: ``amqp://`` or ``amqps://`` (RabbitMQ), or ``memory://NAME``
    (in this process, for tests)."""
    if url.startswith("memory:"):
        from .memory import memory_broker

        return memory_broker(url)
    from .amqp import AmqpBroker

    return AmqpBroker(url, settings)


class BrokerMode:
    def __init__(self, app: BrokerHost, url: str, settings: BrokerSettings) -> None:
        self.app = app
        self.settings = settings
        self.topology = Topology(settings.prefix)
        self.broker = open_broker(url, settings)
        lifecycle = app.lifecycle
        states = lifecycle.states
        self._claimable = states.claimable
        self._leased = states.leased
        self._succeeded = states.succeeded
        self._initial = lifecycle.engine.machine.initial_state
        self._warned_lock = threading.Lock()
        # Jobs published on a caller's bare Connection, awaiting its commit (or rollback).
        self._pending: weakref.WeakKeyDictionary[Any, list[Job]] = weakref.WeakKeyDictionary()
        self._warned_at = -float(WARN_EVERY)
        self._unwarned = 0

    @property
    def display_url(self) -> str:
        return self.broker.display_url

    # -- routing --------------------------------------------------------------------------

    def bands(self) -> Bands:
        """The app's configured priorities, else its default and handler priorities."""
        app = self.app
        if app.priorities is not None:
            return Bands(app.priorities)
        return Bands({app.default_priority, *(handler.priority for handler in app.handlers)})

    def known_queues(self) -> set[str]:
        app = self.app
        return {app.default_queue, *(handler.queue for handler in app.handlers)}

    def route(self, envelope: Envelope, bands: Bands | None = None) -> str:
        band = (bands or self.bands()).band(envelope.priority)
        return self.topology.queue_name(envelope.queue, band)

    # -- handing over ---------------------------------------------------------------------

    def after_commit(
        self,
        jobs: Sequence[Job],
        dependents_read: tuple[Collection[str], Collection[str]] = ((), ()),
    ) -> dict[str, Job]:
        """Hand over what a committed operation made claimable; never raises. Returns the
        jobs it changed (left ``broker_failed``) by id, so a caller returns them as stored.

        ``dependents_read``: (ended jobs, their dependents) as the operation's writes read
        them (Transaction.dependents_read); those jobs' dependents are not looked up again.
        """
        try:
            return self._after_commit(jobs, dependents_read)
        except Exception as error:
            shown = ", ".join(job.id for job in jobs[:10])
            if is_transient(error):  # the database went away after the commit: one line
                log.warning(
                    "handing jobs %s to RabbitMQ: %s; the repair loop will hand them over",
                    shown,
                    describe(error),
                )
            else:
                log.exception(
                    "handing jobs %s to RabbitMQ failed; the repair loop will hand them over",
                    shown,
                )
            return {}

    def _after_commit(
        self, jobs: Sequence[Job], dependents_read: tuple[Collection[str], Collection[str]]
    ) -> dict[str, Job]:
        now = self.app.now()
        read_for, dependents = dependents_read
        envelopes: dict[str, Envelope] = {}
        groups: set[str] = set()
        identifiers: set[str] = set()
        keys: set[str] = set()  # concurrency keys whose slot this job freed (CONC-002)
        finished: list[str] = []
        for job in jobs:
            if job.state in self._claimable and job.available_at <= now:
                envelopes[job.id] = Envelope.of(job, now)
            elif job.state not in self._leased and job.state != self._initial:
                if job.serial_group is not None:
                    groups.add(job.serial_group)
                if job.unique and job.identifier is not None:
                    identifiers.add(job.identifier)
                if job.concurrency_key is not None:
                    keys.add(job.concurrency_key)
                if job.state in self._succeeded and job.id not in read_for:
                    finished.append(job.id)
        if groups or identifiers or finished or keys or dependents:
            with self.app.store.autocommit() as tx:
                related = tx.related_claimable(
                    now,
                    groups,
                    identifiers,
                    finished,
                    self.settings.publish_chunk,
                    keys,
                    among=dependents,
                )
            for job_id, queue, priority in related:
                envelopes.setdefault(job_id, Envelope(job_id, queue, priority, now))
        if not envelopes:
            return {}
        return self._hand_over(list(envelopes.values()))[1]

    def after_caller_commit(self, connection: Any, jobs: Sequence[Job]) -> None:
        """Jobs published inside a caller's transaction: hand them over when it commits.

        A Session has an after-commit hook. A bare Connection only announces a commit before
        sending it, so its jobs are handed over from a short-lived thread once their rows are
        visible (a rolled-back transaction leaves none, and nothing is sent); the repair loop
        remains the safety net either way.
        """
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        stored = list(jobs)
        try:
            if isinstance(connection, Session):
                event.listen(
                    connection,
                    "after_commit",
                    lambda _session: self.after_commit(stored),
                    once=True,
                )
                return
            if connection not in self._pending:  # hook this Connection's commits once
                self._pending[connection] = []
                event.listen(connection, "commit", self._on_caller_commit)
                event.listen(connection, "rollback", self._on_caller_rollback)
            self._pending[connection].extend(stored)
        except Exception:  # the repair loop hands them over instead
            log.exception("could not hook the caller's commit")

    def _on_caller_commit(self, connection: Any) -> None:
        jobs = self._pending.get(connection, [])
        self._pending[connection] = []
        self._hand_over_when_visible(jobs)

    def _on_caller_rollback(self, connection: Any) -> None:
        self._pending[connection] = []

    def _hand_over_when_visible(self, jobs: list[Job]) -> None:
        if not jobs:
            return

        def wait_and_hand_over() -> None:
            waiting = {job.id for job in jobs}
            deadline = time.monotonic() + VISIBILITY_WAIT
            delay = 0.002
            try:
                while waiting and time.monotonic() < deadline:
                    time.sleep(delay)  # the caller's COMMIT is on its way
                    delay = min(delay * 2, 0.2)
                    with self.app.store.autocommit() as tx:
                        visible = tx.get_jobs(waiting)
                    if visible:
                        waiting -= {job.id for job in visible}
                        self.after_commit(visible)
            except Exception:
                log.exception("handing over jobs published on a connection failed")

        threading.Thread(target=wait_and_hand_over, name="conveyor-hand-over", daemon=True).start()

    def hand_over(self, envelopes: Sequence[Envelope], force: bool = False) -> list[Failed]:
        """Publish envelopes; jobs not confirmed become broker_failed. Never raises."""
        return self._hand_over(envelopes, force)[0]

    def _hand_over(
        self, envelopes: Sequence[Envelope], force: bool = False
    ) -> tuple[list[Failed], dict[str, Job]]:
        """:meth:`hand_over`, also returning the jobs marked ``broker_failed`` by id."""
        bands = self.bands()
        messages = [(self.route(envelope, bands), envelope) for envelope in envelopes]
        failures = self.broker.publish_routed(messages, force)
        return failures, (self._mark_failed(failures) if failures else {})

    def _mark_failed(self, failures: Sequence[Failed]) -> dict[str, Job]:
        app = self.app
        now = app.now()
        marked: dict[str, Job] = {}
        try:
            with app.store.transaction() as tx:
                for failure in failures:
                    error = {"kind": "broker", "message": failure.reason[:4096]}
                    try:
                        outcome = app.lifecycle.fire(
                            tx,
                            failure.envelope.job_id,
                            "broker_publish_failed",
                            now,
                            {"error": error},
                        )
                    except (InvalidTransition, StaleLease, JobNotFound):
                        continue  # claimed meanwhile, or not ready: nothing to record
                    marked[failure.envelope.job_id] = outcome.jobs[0]
        except Exception:
            log.exception("could not record broker_failed on %d job(s)", len(failures))
            return {}
        with self._warned_lock:
            self._unwarned += len(marked)
            now_mono = time.monotonic()
            if now_mono - self._warned_at < WARN_EVERY:
                return marked
            count, self._unwarned, self._warned_at = self._unwarned, 0, now_mono
        log.warning(
            "%d job(s) were not handed to RabbitMQ (%s); they are broker_failed until the "
            "repair loop (conveyor process) hands them over (this warning repeats at most "
            "every %d s)",
            count,
            failures[0].reason,
            WARN_EVERY,
        )
        return marked

    # -- repair loop ----------------------------------------------------------------------

    def repair(self, stale_after: timedelta | None = None, chunk: int = 500) -> RepairReport:
        """One run of the repair loop (spec.md#BROKER-005, #BROKER-008).

        1. rescue jobs whose lease expired (their worker died);
        2. requeue ``broker_failed`` and ``back_to_broker`` jobs, and due ``temporarily_failed``
           and ``waiting`` ones, and hand them over;
        3. hand over again due, claimable jobs that may have lost their message: delayed jobs
           that became due, and jobs unchanged for ``stale_after`` (the settings' by default),
           as many per queue as the broker holds fewer messages than such jobs.
        """
        app = self.app
        report = RepairReport()
        while True:
            rescued = app.rescue_expired(limit=chunk)
            report.rescued += len(rescued)
            if len(rescued) < chunk:
                break
        try:
            self.broker.check()
        except BrokerUnavailable as error:
            report.problem = f"{error}; nothing was handed over"
            return report
        if not self._requeue(report, chunk):
            return report
        self._top_up(report, self.settings.stale_after if stale_after is None else stale_after)
        return report

    def _requeue(self, report: RepairReport, chunk: int) -> bool:
        app = self.app
        while True:
            now = app.now()
            requeued: list[Job] = []
            repaired: Counter[tuple[str, str]] = Counter()
            with app.store.transaction() as tx:
                for job in tx.due_jobs(REQUEUED_STATES, now, chunk):
                    try:
                        outcome = app.lifecycle.fire(tx, job.id, "requeue", now, known=job)
                    except (InvalidTransition, StaleLease):
                        continue
                    requeued.append(outcome.jobs[0])
                    repaired[(f"{BROKER_REPAIRS}.{job.state}", job.queue)] += 1
                if repaired:  # the metrics' totals, by the state each job was requeued from
                    tx.add_to_counters(repaired)
            report.requeued += len(requeued)
            envelopes = [Envelope.of(job, now) for job in requeued]
            failures = self.hand_over(envelopes, force=True) if envelopes else []
            if failures:
                report.failed += len(failures)
                report.problem = f"{failures[0].reason}; the rest waits for the next run"
                return False
            if len(requeued) < chunk:
                return True

    def _top_up(self, report: RepairReport, stale_after: timedelta) -> None:
        app = self.app
        now = app.now()
        with app.store.transaction() as tx:
            backlog = tx.backlog(now, now - stale_after, self.settings.publish_chunk)
        if not backlog:
            return
        bands = self.bands()
        by_queue: dict[str, list[tuple[int, int, tuple[str, ...], str, int]]] = {}
        for entry in backlog:
            name = self.topology.queue_name(entry.queue, bands.band(entry.priority))
            by_queue.setdefault(name, []).append(
                (entry.claimable, entry.needy, entry.needy_ids, entry.queue, entry.priority)
            )
        try:
            depths = self.broker.queue_depths(by_queue)
        except BrokerUnavailable as error:
            report.problem = str(error)
            return
        envelopes: list[Envelope] = []
        for name, entries in by_queue.items():
            claimable = sum(entry[0] for entry in entries)
            needy = sum(entry[1] for entry in entries)
            missing = min(needy, claimable - depths.get(name, 0))
            if missing <= 0:
                continue
            candidates = sorted(
                (int(job_id), job_id, queue, priority)
                for _, _, ids, queue, priority in entries
                for job_id in ids
            )
            for _, job_id, queue, priority in candidates[:missing]:
                envelopes.append(Envelope(job_id, queue, priority, now))
            report.republished_by_queue[name] = min(missing, len(candidates))
        if not envelopes:
            return
        failures = self.hand_over(envelopes, force=True)
        report.republished += len(envelopes) - len(failures)
        unsent = {failure.envelope.job_id for failure in failures}
        republished = [envelope for envelope in envelopes if envelope.job_id not in unsent]
        if republished:  # the metrics' totals (after the hand-over: no row lock held meanwhile)
            with app.store.transaction() as tx:
                tx.add_to_counters(
                    Counter((f"{BROKER_REPAIRS}.republished", e.queue) for e in republished)
                )
        report.failed += len(failures)
        if failures:
            report.problem = failures[0].reason

    # -- consumers ------------------------------------------------------------------------

    @staticmethod
    def had_message(before: Job) -> bool:
        """Whether a claimable job had a message of its own, judged from its row before the
        claim (spec.md#BROKER-010). A job is handed over when a change leaves it claimable and
        due; so ``broker_failed`` jobs have none, ``back_to_broker`` ones may have none (set by
        hand), and neither have jobs that became due only after their last change (a delay, a
        retry or waiting delay) until the repair loop hands them over. When in doubt, none: an
        extra message costs one claim of nothing, a missing one a wait for the repair loop."""
        return before.state not in UNSENT_STATES and before.available_at <= before.updated_at

    def messages_owed(
        self,
        queue_name: str,
        named: Collection[str],
        claimed: Sequence[Job],
        claimed_from: Mapping[str, Job],
    ) -> int:
        """How many messages to hand to the AMQP queue ``queue_name`` again after its messages
        naming the jobs ``named`` claimed ``claimed`` (spec.md#BROKER-007, #BROKER-010).

        A claimed job that a message named used its own message. A claimed job no message
        named used another job's: when it had a message of its own in the same queue, that
        one stays behind in place of the one used, and nothing is owed; when it travels through
        another queue, or had no message (published during a broker outage, say), the queue
        is owed one, or the job the used message named would wait for the repair loop.
        Counting this way, the messages of a queue stay as many as its claimable jobs that
        had one, without a message per claim that merely came out of order.
        """
        owed = 0
        for job in claimed:
            if job.id in named:
                continue
            before = claimed_from.get(job.id)
            if (
                before is None
                or not self.had_message(before)
                or self.route(Envelope.of(job, job.updated_at)) != queue_name
            ):
                owed += 1
        return owed

    def source(
        self,
        operations: StoreOperations,
        options: SourceOptions,
        *,
        concurrency: int,
        batch_size: int | None,
        prefetch: int | None = None,
        draining: bool = False,
    ) -> BrokerSource:
        """The job source of a worker consuming from the broker: the messages of its queues
        and the bands its priorities overlap, ``prefetch`` at most unacknowledged per queue
        (default: the settings', else ``concurrency`` plus the larger of ``batch_size`` and
        ``AUTO_PREFETCH``: a claim chooses the best jobs among the messages in hand)."""
        buckets = self.buckets(options.queues, options.priorities)
        if not buckets:
            raise ConfigurationError(
                f"no priority band overlaps the range {options.priorities}; the app's bands "
                f"start at {self.bands().starts}"
            )
        queues = sorted({queue for _, queue, _ in buckets})
        size = (
            prefetch or self.settings.prefetch or concurrency + max(batch_size or 0, AUTO_PREFETCH)
        )
        return BrokerSource(
            operations,
            self.broker,
            options,
            [Bucket(name, band) for name, _, band in buckets],
            [self.topology.control_name(queue) for queue in queues],
            ConsumerSettings(
                size,
                self.settings.hand_back_after,
                draining,
                f"conveyor consumer {options.worker_id}",
                self.settings.repair_every,
            ),
            self.app.now(),
            self.repair_if_due,
            self.app.now,
        )

    def repair_if_due(self) -> None:
        """One run of the repair loop, unless another consumer of this store ran it less than
        ``repair_every`` seconds ago: the first to take the store's repair lock runs it, and
        the lock (never released) expires after that interval."""
        every = self.settings.repair_every
        if every is None:
            return
        now = self.app.now()
        name = f"{self.settings.prefix}repair"
        if self.app.store.acquire_lock(name, now, now + timedelta(seconds=every)) is None:
            return
        report = self.repair()
        if report.problem:
            log.warning("repair loop: %s", report.problem)
        elif report.requeued or report.republished or report.rescued:
            log.info(
                "repair loop: %d rescued, %d requeued, %d handed over again",
                report.rescued,
                report.requeued,
                report.republished,
            )

    def consumer_queues(self, queues: Collection[str]) -> list[str]:
        """The queues a consumer subscribes to: those named, else every known one."""
        if queues:
            return sorted(set(queues))
        found = self.known_queues()
        try:
            with self.app.store.transaction() as tx:
                found.update(queue for queue, _, _ in tx.counts())
        except Exception:
            log.warning("could not list the queues in the store; using the app's", exc_info=True)
        return sorted(found)

    def buckets(self, queues: Collection[str], span: PriorityRange) -> list[tuple[str, str, int]]:
        """(AMQP queue name, queue, band) a consumer of ``queues`` and ``span`` consumes."""
        bands = self.bands()
        return [
            (self.topology.queue_name(queue, band), queue, band)
            for queue in self.consumer_queues(queues)
            for band in bands.overlapping(span)
        ]

    def reload_consumers(self, queue: str, count: int) -> None:
        """Ask ``count`` running consumers of ``queue`` to finish their job and exit."""
        request = ControlRequest("reload", self.app.now())
        self.broker.send_control(self.topology.control_name(queue), request.to_dict(), count)

    @staticmethod
    def parse_control(body: bytes) -> tuple[str, datetime]:
        """(command, requested_at) of a control message; :class:`InvalidControl`, and nothing
        else, when the body is not one."""
        request = ControlRequest.parse(body)
        return request.command, request.requested_at

    def close(self) -> None:
        self.broker.close()
