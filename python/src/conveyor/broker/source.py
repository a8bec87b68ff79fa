"""Broker mode's :class:`~conveyor.source.JobSource`: the worker claims the jobs whose messages
the broker delivered.

One thread of the source (the *connection thread*) owns the broker connection: it receives
messages into a buffer, acknowledges and returns them, and keeps the connection's heartbeats
flowing whatever the handlers do. The worker's coordinating thread calls :meth:`claim`, which
takes buffered messages (best priority band first, then in arrival order), records the
worker's pending outcomes and claims the jobs those messages name, all in one transaction and
one set-based claim statement, and only after the commit hands the acknowledgements to the
connection thread, which settles them together (``multiple`` acks where the tags allow).

A message whose job is not claimable (finished, leased by another worker, its serial group or
unique sibling busy, not due, out of this consumer's priorities) is acknowledged with the
others: the claim changes nothing for it (spec.md#BROKER-011), and the job gets a message
again when it becomes claimable (spec.md#BROKER-009, and the repair loop, #BROKER-008).

While the worker is busy, prefetched messages wait in the buffer; once they have waited
``hand_back_after`` seconds, the source returns them and stops receiving, so that idle
consumers take them, and receives again at the worker's next claim. When the worker stops,
the messages never claimed go back to the broker; the jobs claimed but not run are handed
back by the worker (recorded claimable again, which hands them to the broker anew).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ..errors import BrokerUnavailable, ConfigurationError
from ..execution import Performed
from ..model import Job
from ..resilience import Backoff
from ..source import Claimed, Rescue, SourceOptions, StoreOperations
from .base import Broker, Consumption
from .body import bounded
from .control import ControlRequest, InvalidControl
from .envelope import Envelope, InvalidEnvelope

log = logging.getLogger("conveyor.broker")

T = TypeVar("T")

# Longest single wait of the connection thread (it re-checks hand-back and stop this often).
POLL_SLICE = 0.25
# A draining worker (process()) stops after this many looks that found the queues empty.
EMPTY_ROUNDS = 2
DRAIN_WAIT = 0.05
OPEN_WAIT = 30.0  # longest wait in open() for the first connection attempt


@dataclass(frozen=True)
class Bucket:
    """An AMQP queue a consumer receives from: its name and priority band."""

    name: str
    band: int


@dataclass
class _Delivery:
    generation: int
    tag: int
    band: int
    job_id: str
    arrived: float


@dataclass(frozen=True)
class ConsumerSettings:
    prefetch: int
    hand_back_after: float
    draining: bool  # process(): stop once the queues are empty
    name: str  # shown in the broker's connection list
    repair_every: float | None = None  # seconds between runs of the repair loop


class BrokerSource:
    """Claims the jobs named by the messages a broker delivered (see the module docstring)."""

    claims_from_any_thread = False  # the coordinator's claims pace the connection thread

    def __init__(
        self,
        operations: StoreOperations,
        broker: Broker,
        options: SourceOptions,
        buckets: Sequence[Bucket],
        controls: Sequence[str],
        settings: ConsumerSettings,
        started_at: datetime,
        repair: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if settings.prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        self.operations = operations
        self.broker = broker
        self.options = options
        self.buckets = list(buckets)
        self.controls = list(controls)
        self.settings = settings
        self.started_at = started_at
        # The repair loop, run every settings.repair_every seconds (None: not by consumers).
        self.repair = repair
        self.clock = clock  # the app's, which the worker's rescue timer also follows
        self._next_repair: datetime | None = None
        self.reload_requested = False
        # Called (from the connection thread) when a reload request arrives: stops the worker.
        self.on_reload: Callable[[str], None] = lambda reason: None
        self._band_of = {bucket.name: bucket.band for bucket in self.buckets}
        self._lock = threading.Lock()
        self._buffer: deque[_Delivery] = deque()  # received, not claimed
        self._closed = threading.Event()
        self._wanted = True
        self._wake: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._failure: BaseException | None = None
        # Owned by the connection thread:
        self._consumption: Consumption | None = None
        self._generation = 0
        self._unsettled: set[int] = set()
        self._receiving = False
        self._controls_on = False
        self._last_wake = time.monotonic()
        self._claimed_at = 0.0  # when the worker last claimed (monotonic)

    # -- the JobSource protocol (coordinating thread) -------------------------------------

    def open(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._thread = threading.Thread(
            target=self._run, name="conveyor-broker-connection", daemon=True
        )
        self._thread.start()
        # Returns once receiving (or once the first attempt failed: it keeps retrying).
        self._connected.wait(OPEN_WAIT)
        if self._failure is not None:
            raise self._failure

    def watch(self, wanted: bool) -> None:
        self._wanted = wanted

    def claim(
        self, limit: int, recorded: Sequence[Performed] = (), due_by: datetime | None = None
    ) -> Claimed:
        """Claim the best ``limit`` jobs among those the buffered messages name (all of them
        in one statement), recording ``recorded`` in the same transaction; acknowledge, after
        the commit, the messages of the jobs claimed and of the jobs found not claimable."""
        if self._failure is not None:
            raise self._failure
        self._claimed_at = time.monotonic()
        if limit > 0 and not self._receiving:
            self._call_later(self._receive)
        if limit > 0 and self.settings.draining:
            self._wait_for_messages()
        first = True
        took = 0
        jobs: list[Job] = []
        outcome = Claimed([], [])
        while first or (not jobs and self._buffered()):
            taken = self._take() if limit > 0 else []
            took += len(taken)
            ids = list(dict.fromkeys(delivery.job_id for delivery in taken))
            if not ids and not (first and recorded):
                break
            try:
                claimed = self.operations.record_and_claim(
                    recorded if first else (),
                    self.options.worker_id,
                    queues=self.options.queues,
                    priorities=self.options.priorities,
                    limit=min(limit, len(ids)),
                    lease_ms=self.options.lease_ms,
                    due_by=due_by,
                    job_ids=ids,
                )
            except BaseException:
                self._put_back(taken)
                raise
            if first:
                outcome = claimed
            first = False
            jobs.extend(claimed.jobs)
            if len(claimed.jobs) < limit:
                settled = taken  # every claimable job named was claimed: the rest are not
            else:  # full: the jobs not claimed may still be claimable; keep their messages
                ids_claimed = {job.id for job in claimed.jobs}
                settled = [d for d in taken if d.job_id in ids_claimed]
                self._put_back([d for d in taken if d.job_id not in ids_claimed])
            self._settle(settled)  # committed: acknowledge (spec.md#BROKER-011)
            if len(claimed.jobs) >= limit:
                break
            if self.settings.draining and not jobs:
                self._wait_for_messages()
        # More may be waiting: a full claim, messages still buffered, a claim that took half
        # the prefetch window or more (the broker holds more behind it), or (draining) any job.
        backlog = (
            len(jobs) >= limit
            or self._buffered()
            or took * 2 >= self.settings.prefetch > 1
            or (self.settings.draining and bool(jobs))
        )
        return Claimed(outcome.recorded, jobs, outcome.due_again, backlog)

    def rescue(self) -> Rescue:
        rescue = self.operations.rescue()
        every = self.settings.repair_every
        if self.repair is None or every is None or self.settings.draining:
            return rescue
        now = self.clock()
        if self._next_repair is None or now >= self._next_repair:
            self._next_repair = now + timedelta(seconds=every)
            try:
                self.repair()
            except Exception as error:  # the next run tries again; the worker goes on
                log.warning("the repair loop failed (%s); it runs again in %g s", error, every)
        # The worker looks again at the next lease expiry or the next repair, whichever first.
        expiry = rescue.next_expiry
        wanted = self._next_repair if expiry is None else min(expiry, self._next_repair)
        return Rescue(rescue.rescued, wanted)

    def close(self) -> None:
        if self._thread is None:
            return
        self._closed.set()
        self._call_later(lambda: None)
        self._thread.join(timeout=10)
        self._thread = None

    # -- taking messages ------------------------------------------------------------------

    def _buffered(self) -> bool:
        with self._lock:
            return bool(self._buffer)

    def _take(self) -> list[_Delivery]:
        """Every buffered message, the best band first, then by arrival."""
        with self._lock:
            taken = sorted(self._buffer, key=lambda delivery: (delivery.band, delivery.tag))
            self._buffer.clear()
            return taken

    def _put_back(self, taken: list[_Delivery]) -> None:
        if taken:
            with self._lock:
                self._buffer.extendleft(reversed(taken))

    def _settle(self, taken: list[_Delivery]) -> None:
        if taken:
            self._call_later(lambda: self._ack(taken))

    def _wait_for_messages(self) -> None:
        """Draining (process()): wait until the broker delivered what its queues hold (so
        that the claim chooses among them all, in claim order), or the queues stayed empty
        for ``EMPTY_ROUNDS`` looks."""
        empty = 0
        before = -1
        while empty < EMPTY_ROUNDS and not self._closed.is_set():
            depth = self._call(self._depth)
            if depth is None:  # no connection: the connection thread reports the failure
                return
            with self._lock:
                held = len(self._buffer)
            if held >= self.settings.prefetch:
                return
            # Deliveries read with a reply are dispatched at the next turn: two empty looks
            # holding as many messages mean every delivery sent is in the buffer.
            empty = empty + 1 if depth == 0 and held == before else 0
            if depth == 0 and held and empty:
                return
            before = held
            if not empty:
                time.sleep(DRAIN_WAIT)  # deliveries are in flight to the connection thread

    # -- calls into the connection thread -------------------------------------------------

    def _call_later(self, call: Callable[[], None]) -> None:
        consumption = self._consumption
        if consumption is None:
            return  # no connection: nothing to settle (the broker returned the messages)
        try:
            consumption.call_soon(call)
        except Exception:
            log.debug("could not reach the connection thread", exc_info=True)

    def _call(self, call: Callable[[], T]) -> T | None:
        """Run ``call`` in the connection thread and return its result (None: no connection)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

        if self._consumption is None:
            return None
        self._call_later(run)
        try:
            return future.result(timeout=10)
        except Exception:
            return None

    # -- the connection thread ------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        try:
            while not self._closed.is_set():
                if self._consumption is None:
                    try:
                        self._connect()
                        backoff.reset()
                    except BrokerUnavailable as error:
                        if self.settings.draining:
                            self._failure = error
                            self._connected.set()
                            self._wake()
                            return
                        delay = backoff.next_delay()
                        log.warning("%s; retrying in %.1f s", error, delay)
                        self._connected.set()
                        self._closed.wait(delay)
                    continue
                try:
                    self._turn()
                except Exception as error:
                    if not self.broker.is_connection_error(error):
                        raise
                    log.warning(
                        "lost the connection to the broker at %s (%s); reconnecting",
                        self.broker.display_url,
                        self.broker.describe(error),
                    )
                    self._drop()
                    self._closed.wait(backoff.next_delay())
        except BaseException as error:
            log.exception("the broker connection thread failed")
            self._failure = error
            self._connected.set()
            self._wake()
        finally:
            self._disconnect()

    def _turn(self) -> None:
        consumption = self._consumption
        assert consumption is not None
        now = time.monotonic()
        timeout = POLL_SLICE
        if self._wanted and not self.settings.draining:
            # An idle worker looks every idle_delay (one cycle, as a polling worker's).
            timeout = min(timeout, max(self._last_wake + self.options.idle_delay - now, 0.0))
            if timeout <= 0:
                self._last_wake = now
                self._wake()
                timeout = POLL_SLICE
        consumption.poll(timeout)
        self._maybe_hand_back()

    def _connect(self) -> None:
        self._generation += 1
        self._unsettled.clear()
        with self._lock:
            self._buffer.clear()
        consumption = self.broker.consumption(
            self.settings.prefetch,
            [bucket.name for bucket in self.buckets],
            self.controls,
            self.settings.name,
        )
        self._consumption = consumption
        self._receive()
        if not self.reload_requested:
            for name in self.controls:
                consumption.consume(name, self._on_control)
            self._controls_on = True
        log.info(
            "consuming %s from the broker at %s (prefetch %d)",
            ", ".join(bucket.name for bucket in self.buckets),
            self.broker.display_url,
            self.settings.prefetch,
        )
        self._connected.set()

    def _receive(self) -> None:
        consumption = self._consumption
        if consumption is None or self._receiving:
            return
        for bucket in self.buckets:
            consumption.consume(bucket.name, self._on_message)
        self._receiving = True

    def _maybe_hand_back(self) -> None:
        """Return the messages that waited too long for this busy worker (module docstring)."""
        if not self._receiving or self.settings.draining:
            return
        with self._lock:
            if not self._buffer:
                return
            waited = time.monotonic() - max(self._buffer[0].arrived, self._claimed_at)
            if waited < self.settings.hand_back_after:
                return
        consumption = self._consumption
        assert consumption is not None
        consumption.cancel([bucket.name for bucket in self.buckets])
        self._receiving = False
        with self._lock:
            returned, self._buffer = list(self._buffer), deque()
        for delivery in returned:
            self._unsettled.discard(delivery.tag)
            consumption.nack(delivery.tag)
        log.info("busy: returned %d prefetched message(s) to the broker", len(returned))

    def _on_message(self, name: str, tag: int, body: bytes) -> None:
        # BROKER-006: a body that is not an envelope is acknowledged and ignored; nothing a
        # message carries may stop the consumer.
        self._unsettled.add(tag)
        try:
            envelope = Envelope.parse(body)
        except InvalidEnvelope as error:
            log.warning("ignoring a message in %s that is not a job envelope: %s", name, error)
            self._ack_tags([tag])
            return
        except Exception as error:  # the parser names every problem; stay up if it did not
            log.warning(
                "ignoring a message in %s that could not be parsed (%s)", name, _unexpected(error)
            )
            self._ack_tags([tag])
            return
        delivery = _Delivery(
            self._generation, tag, self._band_of[name], envelope.job_id, time.monotonic()
        )
        with self._lock:
            self._buffer.append(delivery)
        self._wake()

    def _on_control(self, name: str, tag: int, body: bytes) -> None:
        consumption = self._consumption
        assert consumption is not None
        if self.reload_requested:
            consumption.nack(tag)  # for another consumer
            return
        try:
            request = ControlRequest.parse(body)
        except Exception as error:  # BROKER-006 for control messages: acknowledged, ignored
            problem = str(error) if isinstance(error, InvalidControl) else _unexpected(error)
            log.warning("ignoring a message in the control queue: %s", problem)
            consumption.ack(tag)
            return
        consumption.ack(tag)
        if request.requested_at < self.started_at:
            log.info("ignoring a reload requested before this consumer started")
            return
        self.reload_requested = True
        consumption.cancel(self.controls)
        self._controls_on = False
        self.on_reload("reload requested (conveyor reload-consumers); finishing the running jobs")

    def _ack(self, taken: list[_Delivery]) -> None:
        self._ack_tags([d.tag for d in taken if d.generation == self._generation])

    def _ack_tags(self, tags: list[int]) -> None:
        """Acknowledge ``tags``: one ``multiple`` ack for those below every other unsettled
        tag, one ack each for the rest."""
        consumption = self._consumption
        if consumption is None or not tags:
            return
        mine = set(tags) & self._unsettled
        self._unsettled -= mine
        if not mine:
            return
        lowest_other = min(self._unsettled, default=None)
        below = [tag for tag in mine if lowest_other is None or tag < lowest_other]
        if len(below) > 1:
            consumption.ack(max(below), multiple=True)
        elif below:
            consumption.ack(below[0])
        for tag in mine.difference(below):
            consumption.ack(tag)

    def _depth(self) -> int:
        consumption = self._consumption
        if consumption is None:
            return 0
        return sum(consumption.depth(bucket.name) for bucket in self.buckets)

    def _drop(self) -> None:
        consumption, self._consumption = self._consumption, None
        self._receiving = False
        self._controls_on = False
        self._unsettled.clear()
        with self._lock:
            self._buffer.clear()  # unacknowledged: the broker returns them
        if consumption is not None:
            consumption.close()

    def _disconnect(self) -> None:
        """Stopping: return what was never claimed, then close."""
        consumption = self._consumption
        if consumption is not None:
            try:
                consumption.cancel([bucket.name for bucket in self.buckets])
                if self._controls_on:
                    consumption.cancel(self.controls)
                with self._lock:
                    returned, self._buffer = list(self._buffer), deque()
                for delivery in returned:
                    if delivery.tag in self._unsettled:
                        consumption.nack(delivery.tag)
                consumption.poll(0)  # run the last acknowledgements handed over
            except Exception as error:
                if not self.broker.is_connection_error(error):
                    log.exception("returning prefetched messages failed")
        self._drop()


def _unexpected(error: BaseException) -> str:
    """An error the parsers should have named, in one short line for the log."""
    return bounded(f"{type(error).__name__}: {error}", 200)
