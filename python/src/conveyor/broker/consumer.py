"""The broker consumer (``conveyor consume`` in broker mode).

Two threads per consumer:

- the *connection thread* (the one calling :meth:`BrokerConsumer.run`) owns the pika
  ``BlockingConnection``: it receives messages, acknowledges them and keeps calling
  ``process_data_events``, so AMQP heartbeats flow however long a handler blocks;
- the *job thread* claims through the store and runs the job with the same
  :class:`~conveyor.execution.JobRunner` as the polling worker, then reports back through a queue
  (waking the connection thread with ``add_callback_threadsafe``).

A message is a wake-up for its queue and priority band (spec.md#BROKER-007): the job thread
claims the first claimable job, in (priority, sequence) order, among the consumer's queues whose
priority is in the consumer's range and no worse than the message's band. The claim is the
store's conditional claim, so a redelivered or duplicated message never starts a job twice
(spec.md#BROKER-003). When it claimed, with a message naming another job, a job of another band
or queue, or one without a message of its own (``broker_failed``, say, published during an
outage), it hands a new message to the message's queue first, so the job the message was for
keeps one (spec.md#BROKER-007, #BROKER-010).

The message is acknowledged once the claim is committed (or found nothing to claim), at the
connection thread's next turn: when the job ends, or ``BUSY_WAIT`` seconds later at most. From
then on the job's lease and fencing token protect it exactly as without a broker, and the lease
decides recovery (a job whose consumer dies is rescued when its lease expires). Holding the
message until a long job ends would add nothing (its redelivery finds the job leased and claims
nothing) and would make RabbitMQ close the channel of any job running longer than its
``consumer_timeout``.

While one job runs, messages prefetched for the consumer would wait for it; after
``hand_back_after`` seconds the consumer cancels its subscriptions and returns them, so that
idle consumers take them, and subscribes again when the job ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..clock import duration_ms
from ..errors import BrokerUnavailable, ConfigurationError
from ..execution import Executed, resident_memory
from ..lifecycle import Outcome
from ..resilience import Backoff, describe, is_transient
from ..worker import WorkerControl, WorkerOptions, WorkerStats
from .amqp import CONTROL_ARGUMENTS
from .body import bounded
from .control import InvalidControl
from .envelope import Envelope, InvalidEnvelope

if TYPE_CHECKING:
    from ..app import Conveyor
    from .mode import BrokerMode

log = logging.getLogger("conveyor.broker")

T = TypeVar("T")

IDLE_WAIT = 1.0  # longest single wait for messages while idle
BUSY_WAIT = 0.5  # while a job runs: how often the connection thread looks at its state
EMPTY_ROUNDS = 2  # consecutive empty looks before a draining consumer (process()) stops


@dataclass
class _Delivery:
    generation: int
    tag: int
    queue_name: str
    band: int
    envelope: Envelope | None
    order: int


class BrokerConsumer(WorkerControl):
    """Consumes job messages from RabbitMQ; same options and statistics as :class:`Worker`."""

    def __init__(
        self, app: Conveyor, options: WorkerOptions, mode: BrokerMode, prefetch: int
    ) -> None:
        super().__init__(options)
        self.app = app
        self.lease_ms = duration_ms(options.lease or app.lease)
        self.runner = app.runner(options.worker_id, self.lease_ms)
        self._last_rescue: float | None = None
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        self.mode = mode
        self.prefetch = prefetch
        self.reload_requested = False
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[list[_Delivery] | None] = queue.SimpleQueue()
        self._connection: Any = None
        self._channel: Any = None
        self._generation = 0
        self._buffer: list[_Delivery] = []
        self._arrivals = 0
        self._token_tags: list[str] = []
        self._control_tags: list[str] = []
        self._cancel_control = False
        self._busy: list[_Delivery] | None = None
        self._busy_since = 0.0
        self._failure: BaseException | None = None
        self._started_at = app.now()
        self._idle_since: float | None = None  # when the current idle cycle began (monotonic)
        self._buckets: list[tuple[str, str, int]] = []
        self._band_of: dict[str, int] = {}
        self._controls: list[str] = []

    def hurry(self) -> None:
        """Stop at once: the running job's lease lapses and it is rescued."""
        raise KeyboardInterrupt

    # -- the connection thread ------------------------------------------------------------

    def run(self) -> WorkerStats:
        restore = self._install_signals()
        self._buckets = self.mode.buckets(self.options.queues, self.priorities)
        if not self._buckets:
            raise ConfigurationError(
                f"no priority band overlaps the range {self.priorities}; the app's bands start "
                f"at {self.mode.bands().starts}"
            )
        self._band_of = {name: band for name, _, band in self._buckets}
        queues = sorted({queue for _, queue, _ in self._buckets})
        self._controls = [self.mode.topology.control_name(queue) for queue in queues]
        worker = threading.Thread(target=self._work, name="conveyor-consumer-job", daemon=True)
        worker.start()
        waker = threading.Thread(
            target=self._wake_when_stopped, name="conveyor-consumer-waker", daemon=True
        )
        waker.start()
        try:
            self._loop()
        finally:
            if not self._stop.is_set():
                self.stop("the consumer failed")  # ends the waker
            self._tasks.put(None)
            self._disconnect(return_messages=True)
            restore()
            if self._busy is None:
                worker.join(timeout=5)
        if self._failure is not None:
            raise self._failure
        self.stats.stop_reason = self._stop_reason
        return self.stats

    def _loop(self) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        empty_rounds = 0
        while True:
            self._handle_events()
            if self._failure is not None:
                return
            if self._busy is None and self._stop.is_set():
                return
            if self._channel is None:
                try:
                    self._connect()
                    backoff.reset()
                except BrokerUnavailable as error:
                    if self.options.stop_when_empty and self._busy is None:
                        raise  # process(): report it rather than wait for the broker
                    delay = backoff.next_delay()
                    log.warning("%s; retrying in %.1f s", error, delay)
                    self._handle_events(wait=delay)
                continue
            try:
                if self._cancel_control:
                    self._stop_control()
                if self._busy is not None:
                    self._connection.process_data_events(time_limit=BUSY_WAIT)
                    if self._token_tags and self._busy_too_long():
                        self._unsubscribe(return_messages=True)
                    continue
                if not self._token_tags:
                    self._subscribe()
                if self._buffer:
                    empty_rounds = 0
                    self._start(self._take())
                    continue
                self._rescue()
                if self.options.stop_when_empty:
                    self._connection.process_data_events(time_limit=0.02)
                    if self._buffer or not self._events.empty():
                        continue
                    empty_rounds = empty_rounds + 1 if self._queues_empty() else 0
                    if empty_rounds >= EMPTY_ROUNDS:
                        self.stop("no due jobs left")
                    continue
                if self.options.on_idle is not None:
                    self.options.on_idle()
                self._idle_wait()
            except Exception as error:
                if not _is_amqp_error(error):
                    raise
                self._lost(error)
                self._handle_events(wait=backoff.next_delay())

    def _idle_wait(self) -> None:
        """Wait for messages; each ``idle_delay`` without one is a cycle, as a polling
        worker's empty claim and wait is (``--cycles-limit`` counts them)."""
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        delay = max(self.options.idle_delay, 0.05)
        remaining = self._idle_since + delay - now
        self._connection.process_data_events(time_limit=min(max(remaining, 0.0), IDLE_WAIT))
        if self._buffer or self._stop.is_set():
            return
        if time.monotonic() - self._idle_since >= delay:
            self._idle_since = None
            self.stats.cycles += 1
            self._check_limits()

    def _wake_when_stopped(self) -> None:
        """Wake the connection thread as soon as :meth:`stop` is called, so that an idle
        consumer stops at once rather than after its idle wait. A thread of its own, because
        a signal handler must not take pika's locks (the thread it interrupts may hold them):
        the handler only sets the stop event, and this thread, waiting on it, does the rest."""
        self._stop.wait()
        self._post("wake")

    def _busy_too_long(self) -> bool:
        return time.monotonic() - self._busy_since > self.mode.settings.hand_back_after

    def _connect(self) -> None:
        broker = self.mode.broker
        self._generation += 1
        self._buffer.clear()
        self._token_tags = []
        self._control_tags = []
        connection = broker.connect(
            heartbeat=None, name=f"conveyor consumer {self.options.worker_id}"
        )
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            arguments = dict(self.mode.settings.queue_arguments)
            for name, _, _ in self._buckets:
                self._declare(channel, name, arguments)
            for name in self._controls:
                self._declare(channel, name, CONTROL_ARGUMENTS)
            if not self.reload_requested:
                self._control_tags = [
                    channel.basic_consume(name, self._on_control, auto_ack=False)
                    for name in self._controls
                ]
        except ConfigurationError:
            _close_quietly(connection)
            raise
        except Exception as error:
            _close_quietly(connection)
            if _is_amqp_error(error):
                raise broker.unavailable(error) from None
            raise
        self._connection, self._channel = connection, channel
        log.info(
            "consuming %s from RabbitMQ at %s (prefetch %d)",
            ", ".join(name for name, _, _ in self._buckets),
            broker.display_url,
            self.prefetch,
        )

    def _declare(self, channel: Any, name: str, arguments: dict[str, Any]) -> None:
        import pika

        try:
            channel.queue_declare(name, durable=True, arguments=arguments)
            self.mode.broker.declared.add(name)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 406:
                raise ConfigurationError(
                    f"RabbitMQ refused to declare queue {name!r} with arguments {arguments}: "
                    f"{error.reply_text}. The queue exists with other arguments: delete it "
                    "once empty, or set BrokerSettings.queue_arguments to match"
                ) from None
            raise

    def _subscribe(self) -> None:
        for name, _, _ in self._buckets:
            tag = self._channel.basic_consume(name, partial(self._on_message, name), auto_ack=False)
            self._token_tags.append(tag)

    def _unsubscribe(self, return_messages: bool) -> None:
        """Cancel the job-queue subscriptions; pika returns what it had not dispatched, and
        ``return_messages`` returns the prefetched messages not started yet."""
        tags, self._token_tags = self._token_tags, []
        for tag in tags:
            self._channel.basic_cancel(tag)
        if return_messages:
            buffered, self._buffer = self._buffer, []
            for delivery in buffered:
                self._channel.basic_nack(delivery.tag, requeue=True)

    def _stop_control(self) -> None:
        self._cancel_control = False
        tags, self._control_tags = self._control_tags, []
        for tag in tags:
            self._channel.basic_cancel(tag)

    def _on_message(self, name: str, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # BROKER-006: a body that is not an envelope is acknowledged (with the batch it came
        # in) and ignored; nothing a message carries may stop the consumer.
        try:
            envelope: Envelope | None = Envelope.parse(body)
        except InvalidEnvelope as error:
            log.warning("ignoring a message in %s that is not a job envelope: %s", name, error)
            envelope = None
        except Exception as error:  # the parser names every problem; stay up if it did not
            log.warning(
                "ignoring a message in %s that could not be parsed (%s)", name, _unexpected(error)
            )
            envelope = None
        self._arrivals += 1
        self._buffer.append(
            _Delivery(
                self._generation,
                method.delivery_tag,
                name,
                self._band_of[name],
                envelope,
                self._arrivals,
            )
        )

    def _on_control(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        if self.reload_requested:
            channel.basic_nack(method.delivery_tag, requeue=True)  # for another consumer
            return
        try:
            _, requested_at = self.mode.parse_control(body)
        except Exception as error:  # BROKER-006 for control messages: acknowledged, ignored
            problem = str(error) if isinstance(error, InvalidControl) else _unexpected(error)
            log.warning("ignoring a message in the control queue: %s", problem)
            channel.basic_ack(method.delivery_tag)
            return
        channel.basic_ack(method.delivery_tag)
        if requested_at < self._started_at:
            log.info("ignoring a reload requested before this consumer started")
            return
        self.reload_requested = True
        self._cancel_control = True
        self.stop("reload requested (conveyor reload-consumers); finishing the current job")

    def _take(self) -> list[_Delivery]:
        """Buffered messages of the best band (lowest priority number), oldest first: one, or
        up to ``batch_size`` (never more jobs than ``max_jobs`` still allows)."""
        band = min(delivery.band for delivery in self._buffer)
        size = self.options.batch_size or 1
        if self.options.max_jobs is not None:
            size = min(size, max(self.options.max_jobs - self.stats.jobs, 1))
        taken = sorted(
            (delivery for delivery in self._buffer if delivery.band == band),
            key=lambda delivery: delivery.order,
        )[: max(size, 1)]
        for delivery in taken:
            self._buffer.remove(delivery)
        return taken

    def _start(self, deliveries: list[_Delivery]) -> None:
        self._idle_since = None
        self._busy = deliveries
        self._busy_since = time.monotonic()
        self._tasks.put(deliveries)

    def _queues_empty(self) -> bool:
        for name, _, _ in self._buckets:
            result = self._channel.queue_declare(name, passive=True)
            if result.method.message_count:
                return False
        return True

    def _maybe_rescue(self) -> None:
        moment = self.app.now().timestamp()
        interval = self.options.rescue_interval or min(self.lease_ms / 2000, 30.0)
        if self._last_rescue is None or moment - self._last_rescue >= interval:
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

    def _rescue(self) -> None:
        try:
            self._maybe_rescue()
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("could not rescue expired leases: %s", describe(error))

    def _lost(self, error: BaseException) -> None:
        log.warning(
            "lost the connection to RabbitMQ at %s (%s); reconnecting",
            self.mode.broker.display_url,
            self.mode.broker.describe(error),
        )
        self._drop_connection()

    def _drop_connection(self) -> None:
        connection = self._connection
        self._connection = self._channel = None
        self._token_tags = []
        self._control_tags = []
        self._buffer.clear()  # unacknowledged: RabbitMQ returns them when the connection ends
        if connection is not None:
            _close_quietly(connection)

    def _disconnect(self, return_messages: bool) -> None:
        if self._channel is None:
            return
        try:
            if self._channel.is_open:
                self._unsubscribe(return_messages)
                self._stop_control()
        except Exception as error:
            if not _is_amqp_error(error):
                raise
        self._drop_connection()

    # -- events from the job thread -------------------------------------------------------

    def _post(self, *event: Any, wake: bool = True) -> None:
        self._events.put(event)
        connection = self._connection
        if wake and connection is not None:
            try:
                connection.add_callback_threadsafe(_nothing)
            except Exception:  # a closed connection: the loop polls the queue anyway
                log.debug("could not wake the connection thread", exc_info=True)

    def _handle_events(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                remaining = deadline - time.monotonic()
                event = self._events.get(timeout=remaining) if remaining > 0 else None
                if event is None:
                    event = self._events.get_nowait()
            except queue.Empty:
                return
            self._dispatch(event)
            if wait > 0 and self._busy is None and self._stop.is_set():
                return

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "settle":
            delivery, requeue = event[1], event[2]
            self._settle(delivery, requeue)
        elif kind == "ran":
            self._ran(event[1])
        elif kind == "done":
            self._finished()
        elif kind == "failed":
            self._busy = None
            self._failure = event[2]
        # "wake": nothing to do; its arrival ended the connection thread's wait

    def _settle(self, delivery: _Delivery, requeue: bool) -> None:
        if delivery.generation != self._generation or self._channel is None:
            return  # its connection is gone, and RabbitMQ returned the message already
        try:
            if requeue:
                self._channel.basic_nack(delivery.tag, requeue=True)
            else:
                self._channel.basic_ack(delivery.tag)
        except Exception as error:
            if not _is_amqp_error(error):
                raise
            self._lost(error)

    def _ran(self, executed: Executed) -> None:
        self.stats.jobs += 1
        state = executed.job.state
        self.stats.outcomes[state] = self.stats.outcomes.get(state, 0) + 1
        if self.options.on_job is not None:
            self.options.on_job(executed.job)
        if executed.die:
            self.stop("a handler asked the worker to die")

    def _finished(self) -> None:
        self._busy = None
        self.stats.cycles += 1
        self._check_limits()

    # -- the job thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            deliveries = self._tasks.get()
            if deliveries is None:
                return
            try:
                self._handle(deliveries)
            except BaseException as error:
                log.exception("the consumer's job thread failed")
                self._post("failed", deliveries, error)

    def _handle(self, deliveries: list[_Delivery]) -> None:
        """Claim one job per message (all of one band), settle the messages, run the jobs."""
        valid = [delivery for delivery in deliveries if delivery.envelope is not None]
        for delivery in deliveries:
            if delivery.envelope is None:
                self._post("settle", delivery, False, wake=False)
        if not valid:
            self._post("done")
            return
        band, queue_name = valid[0].band, valid[0].queue_name
        span = self.mode.bands().claim_span(band, self.priorities)
        outcome = self._claim(
            lambda: self.app.claim_outcome(
                self.options.worker_id,
                queues=self.options.queues,
                priorities=span,
                limit=len(valid),
                lease_ms=self.lease_ms,
            )
        )
        if outcome is None:  # stopped while the database was unreachable
            for delivery in valid:
                self._post("settle", delivery, True, wake=False)
            self._post("done")
            return
        jobs = outcome.jobs
        returned = self._restore_messages(queue_name, valid, outcome)
        # Acknowledgements wait for the connection thread's next turn (the jobs' end, or
        # BUSY_WAIT at most): waking it for each one would slow the job thread down.
        for delivery in valid:
            self._post("settle", delivery, id(delivery) in returned, wake=False)
        for job in jobs:
            try:
                executed = self.runner.run(job)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning(
                    "job %s: its outcome could not be recorded (%s); its lease will expire "
                    "and it will be retried",
                    job.id,
                    describe(error),
                )
                continue
            self._post("ran", executed, wake=False)
        self._post("done")

    def _restore_messages(
        self, queue_name: str, valid: list[_Delivery], outcome: Outcome
    ) -> set[int]:
        """BROKER-007, BROKER-010: hand the queue the messages its claims owe it, naming the
        jobs whose messages were used by others (those not claimed first). Returns the ids of
        the deliveries to return instead, because their new message was not confirmed."""
        envelopes = {id(d): d.envelope for d in valid if d.envelope is not None}
        named = {envelope.job_id for envelope in envelopes.values()}
        owed = self.mode.messages_owed(queue_name, named, outcome.jobs, outcome.claimed_from)
        if not owed:
            return set()
        claimed = {job.id for job in outcome.jobs}
        spare = sorted(
            (d for d in valid if id(d) in envelopes),
            key=lambda d: envelopes[id(d)].job_id in claimed,  # unclaimed ones first
        )[:owed]
        now = self.app.now()
        again = [(queue_name, envelopes[id(d)].again(now)) for d in spare]
        failed = {id(failure.envelope) for failure in self.mode.broker.publish_routed(again)}
        return {
            id(d) for d, (_, envelope) in zip(spare, again, strict=True) if id(envelope) in failed
        }

    def _claim(self, claim: Callable[[], T]) -> T | None:
        backoff = Backoff()
        while True:
            try:
                return claim()
            except Exception as error:
                if not is_transient(error):
                    raise
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1f s", describe(error), delay)
                if self._stop.wait(delay):
                    return None


def _nothing() -> None:
    """Scheduled with add_callback_threadsafe only to wake process_data_events."""


def _unexpected(error: BaseException) -> str:
    """An error the parsers should have named, in one short line for the log."""
    return bounded(f"{type(error).__name__}: {error}", 200)


def _is_amqp_error(error: BaseException) -> bool:
    import pika

    return isinstance(error, pika.exceptions.AMQPError | OSError | BrokerUnavailable)


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:
        log.debug("closing a consumer connection failed", exc_info=True)
