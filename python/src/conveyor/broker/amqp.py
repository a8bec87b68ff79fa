"""RabbitMQ over pika: confirmed, persistent publishing in batches, idempotent declarations.

Publishing runs on pooled connections, each used by one thread at a time: pika's
``BlockingConnection`` is not thread-safe, and a pool (unlike one connection per thread) does not
leak a connection per short-lived thread. Each pooled channel is in publisher-confirm mode.
pika's ``BlockingChannel`` waits for the confirm of every message before it sends the next, so
the pool drives the underlying channel directly: it sends a chunk of messages, then waits once
for all their confirms (``multiple`` acks settle many at once).

Messages are persistent (``delivery_mode=2``) and published with ``mandatory``: a message no
queue takes (its queue was deleted) comes back before its confirm and counts as failed.

After a connection failure the broker is *open-circuited* for a back-off delay (0.5 s doubling
to 5 s): publishes fail at once instead of waiting for a connect timeout in the caller's request.
The repair loop (``force=True``) always tries.

Driving the channel under ``BlockingChannel`` uses pika's ``BlockingChannel._impl``: pika has no
public way to publish a batch and then wait for its confirms. The ``amqp`` extra therefore bounds
pika to the tested range (1.3 and 1.4, ``<1.5``), and a pika without the attribute is refused with
that range instead of failing mid-publish (docs/operations/dependencies.md).

Every message this module produces masks the password of the URL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import BrokerUnavailable, ConfigurationError
from ..resilience import Backoff
from .base import Consumption, Failed, OnMessage
from .envelope import Envelope
from .settings import BrokerSettings

log = logging.getLogger("conveyor.broker")

CONTROL_ARGUMENTS: dict[str, Any] = {}  # control queues are plain durable classic queues


def masked_amqp_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: safe for logs, errors and output."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<an AMQP URL that cannot be parsed>"


def _secrets(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return sorted({password, unquote(password), quote(unquote(password), safe="")}, key=len)[::-1]


class _Timeout(Exception):
    pass


def _async_channel(channel: Any) -> Any:
    """The async channel under pika's BlockingChannel (module docstring: why, and the range)."""
    impl = getattr(channel, "_impl", None)
    if impl is None or not hasattr(impl, "confirm_delivery"):
        import pika

        raise ConfigurationError(
            f"pika {getattr(pika, '__version__', '?')} is outside the range Conveyor's publisher "
            "is tested with (pika >=1.3,<1.5): install it with pip install 'conveyor-queue[amqp]'"
        )
    return impl


def _nothing() -> None:
    """A no-op callback whose only effect is to end a process_data_events wait."""


class _Circuit:
    """After a failure, fail fast for a back-off delay instead of reconnecting per publish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backoff = Backoff(first=0.5, cap=5.0)
        self._open_until = 0.0
        self._reason = ""

    def blocked(self) -> str | None:
        with self._lock:
            if time.monotonic() < self._open_until:
                return self._reason
            return None

    def trip(self, reason: str) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self._backoff.next_delay()
            self._reason = reason

    def close(self) -> None:
        with self._lock:
            self._backoff.reset()
            self._open_until = 0.0


class _Session:
    """One connection and one confirm-mode channel, used by one thread at a time."""

    def __init__(
        self, parameters: Any, settings: BrokerSettings, noted: Callable[[str], None]
    ) -> None:
        import pika

        self.settings = settings
        self._noted = noted
        self.connection = pika.BlockingConnection(parameters)
        try:
            self.channel = self.connection.channel()
            self.declared: set[str] = set()
            self._settled: dict[int, bool] = {}
            self._pending: set[int] = set()
            self._returned: set[str] = set()
            self._next_tag = 1
            selected: list[bool] = []

            def on_selected(_frame: Any) -> None:
                selected.append(True)
                # Like a confirm, Confirm.SelectOk does not end process_data_events by itself:
                # without this wake-up every new connection waited a whole _wait slice.
                self.connection.add_callback_threadsafe(_nothing)

            impl = _async_channel(self.channel)
            impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_selected)
            self._wait(lambda: bool(selected), settings.confirm_timeout)
            impl.add_on_return_callback(self._on_return)
            self._properties = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, type="conveyor.job"
            )
        except BaseException:
            self.close()
            raise

    @property
    def healthy(self) -> bool:
        return bool(self.connection.is_open and self.channel.is_open)

    def _on_confirm(self, frame: Any) -> None:
        import pika

        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [tag for tag in self._pending if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            self._pending.discard(tag)
            self._settled[tag] = ok
        if not self._pending:
            # Confirms arrive as I/O callbacks, which do not end process_data_events by
            # themselves: a ready event does, so the waiting publisher returns at once.
            self.connection.add_callback_threadsafe(_nothing)

    def _on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        self._returned.add(method.routing_key)

    def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            self.connection.process_data_events(time_limit=min(remaining, 0.25))

    def ping(self) -> None:
        """Read whatever the broker sent meanwhile (a close, a blocked notice)."""
        self.connection.process_data_events(time_limit=0)

    def declare(self, name: str, arguments: Mapping[str, Any]) -> int:
        """Declare a durable queue (idempotent) and return its ready message count."""
        import pika

        try:
            result = self.channel.queue_declare(name, durable=True, arguments=dict(arguments))
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 406:
                raise ConfigurationError(
                    f"RabbitMQ refused to declare queue {name!r} with arguments "
                    f"{dict(arguments)}: {error.reply_text}. The queue exists with other "
                    "arguments: delete it (rabbitmqctl delete_queue) once it is empty, or set "
                    "BrokerSettings.queue_arguments to match it"
                ) from None
            raise
        self.declared.add(name)
        self._noted(name)
        return int(result.method.message_count)

    def publish(
        self,
        messages: Sequence[tuple[str, bytes]],
        timeout: float,
        arguments: Mapping[str, Any] | None = None,
        properties: Any = None,
        message_ids: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Publish ``(queue name, body)`` pairs to queues declared with ``arguments`` (the job
        queues' by default); per message, None when confirmed, else why not. Job messages
        carry their job's id as ``message_id`` (spec.md#AMQP-004)."""
        import pika

        for name in {name for name, _ in messages} - self.declared:
            self.declare(name, self.settings.queue_arguments if arguments is None else arguments)
        impl = _async_channel(self.channel)
        tags = []
        self._returned.clear()
        for index, (name, body) in enumerate(messages):
            tag = self._next_tag
            self._next_tag += 1
            self._pending.add(tag)
            chosen = properties or self._properties
            if properties is None and message_ids is not None:
                chosen = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    type="conveyor.job",
                    message_id=message_ids[index],
                )
            impl.basic_publish(
                exchange="",
                routing_key=name,
                body=body,
                properties=chosen,
                mandatory=True,
            )
            tags.append(tag)
        try:
            self._wait(lambda: not self._pending, timeout)
        except _Timeout:
            self._pending.clear()
            raise
        results: list[str | None] = []
        for (name, _), tag in zip(messages, tags, strict=True):
            ok = self._settled.pop(tag, False)
            if name in self._returned:
                self.declared.discard(name)
                results.append(f"RabbitMQ returned the message: queue {name!r} does not exist")
            elif not ok:
                results.append("RabbitMQ refused the message (basic.nack)")
            else:
                results.append(None)
        return results

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:  # closing a broken connection must not fail
            log.debug("closing a broker connection failed", exc_info=True)


class AmqpConsumption:
    """A consumer's ``BlockingConnection`` and channel; used by its polling thread only, but
    for :meth:`call_soon` (pika's ``add_callback_threadsafe``)."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.channel = channel
        self._tags: dict[str, str] = {}

    def consume(self, name: str, on_message: OnMessage) -> None:
        def deliver(_channel: Any, method: Any, _properties: Any, body: bytes) -> None:
            on_message(name, method.delivery_tag, body)

        self._tags[name] = self.channel.basic_consume(name, deliver, auto_ack=False)

    def cancel(self, names: Collection[str]) -> None:
        for name in names:
            tag = self._tags.pop(name, None)
            if tag is not None:
                self.channel.basic_cancel(tag)

    def poll(self, timeout: float) -> None:
        self.connection.process_data_events(time_limit=max(timeout, 0.0))

    def call_soon(self, call: Callable[[], None]) -> None:
        self.connection.add_callback_threadsafe(call)

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.channel.basic_ack(tag, multiple=multiple)

    def nack(self, tag: int, multiple: bool = False) -> None:
        self.channel.basic_nack(tag, multiple=multiple, requeue=True)

    def depth(self, name: str) -> int:
        return int(self.channel.queue_declare(name, passive=True).method.message_count)

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:  # closing a broken connection must not fail
            log.debug("closing a consumer connection failed", exc_info=True)


class AmqpBroker:
    """A :class:`~conveyor.broker.base.Broker` over RabbitMQ (pika, ``amqp://`` URLs)."""

    def __init__(self, url: str, settings: BrokerSettings) -> None:
        try:
            import pika  # noqa: F401 - fail early, with the fix, when pika is missing
        except ModuleNotFoundError:
            raise ConfigurationError(
                "broker mode needs pika: pip install 'conveyor-queue[amqp]'"
            ) from None
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ConfigurationError(
                f"broker URL {masked_amqp_url(url)} is not amqp:// or amqps://; use e.g. "
                "amqp://USER:PASSWORD@HOST:5672/VHOST"
            )
        self.url = url
        self.settings = settings
        self.display_url = masked_amqp_url(url)
        self._secrets = _secrets(url)
        self._idle: list[_Session] = []
        self._lock = threading.Lock()
        self._closed = False
        self._circuit = _Circuit()
        self.declared: set[str] = set()  # every queue this broker declared (for tear-down)

    # -- connections ----------------------------------------------------------------------

    def parameters(self, heartbeat: int | None = 0, name: str = "conveyor publisher") -> Any:
        """pika connection parameters; ``heartbeat=None`` keeps the URL's or the settings'.
        ``name`` shows in RabbitMQ's connection list (``rabbitmqctl list_connections``)."""
        import pika

        parameters = pika.URLParameters(self.url)
        query = urlsplit(self.url).query
        timeout = self.settings.connect_timeout
        if "connection_attempts" not in query:
            parameters.connection_attempts = 1
        if "socket_timeout" not in query:
            parameters.socket_timeout = timeout
        if "stack_timeout" not in query:
            parameters.stack_timeout = timeout
        if "blocked_connection_timeout" not in query:
            parameters.blocked_connection_timeout = self.settings.confirm_timeout
        if heartbeat is not None:
            parameters.heartbeat = heartbeat
        elif "heartbeat" not in query:
            parameters.heartbeat = self.settings.heartbeat
        parameters.client_properties = {"connection_name": name}
        return parameters

    def describe(self, error: BaseException) -> str:
        """An error as one line, without the password."""
        detail = str(error) or repr(error)  # pika's connection errors keep the cause in args
        name = type(error).__name__
        text = detail if detail.startswith(name) else f"{name}: {detail}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())[:500]

    def unavailable(self, error: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"cannot use RabbitMQ at {self.display_url}: {self.describe(error)}; check that it "
            "is running and that the broker URL (CONVEYOR_BROKER_URL) is right"
        )

    def connect(self, heartbeat: int | None = None, name: str = "conveyor consumer") -> Any:
        """A new ``BlockingConnection`` (for consumers); raises BrokerUnavailable."""
        import pika

        try:
            return pika.BlockingConnection(self.parameters(heartbeat, name))
        except (pika.exceptions.AMQPError, OSError) as error:
            raise self.unavailable(error) from None

    @contextmanager
    def _session(self) -> Iterator[tuple[_Session, bool]]:
        """A session for this thread's exclusive use, and whether it came from the pool."""
        with self._lock:
            if self._closed:
                raise BrokerUnavailable("the app was closed; its broker connections are gone")
            session = self._idle.pop() if self._idle else None
        pooled = session is not None
        if session is None:
            session = _Session(self.parameters(0), self.settings, self.declared.add)
        keep = False
        try:
            yield session, pooled
            keep = session.healthy
        finally:
            with self._lock:
                if keep and not self._closed:
                    self._idle.append(session)
                    session = None
            if session is not None:
                session.close()

    def _with_session(self, action: Callable[[_Session], Any], force: bool) -> Any:
        """Run ``action`` on a pooled session; retry once on a fresh connection when a pooled
        one turns out to be dead. Raises BrokerUnavailable (and trips the circuit)."""
        import pika

        if not force:
            reason = self._circuit.blocked()
            if reason is not None:
                raise BrokerUnavailable(reason)
        for attempt in (1, 2):
            pooled = False
            try:
                with self._session() as (session, pooled):
                    session.ping()
                    result = action(session)
            except ConfigurationError:
                raise
            except _Timeout:
                reason = (
                    f"RabbitMQ at {self.display_url} did not confirm within "
                    f"{self.settings.confirm_timeout:g} s"
                )
                self._circuit.trip(reason)
                raise BrokerUnavailable(reason) from None
            except (pika.exceptions.AMQPError, OSError) as error:
                if attempt == 1 and pooled:
                    continue  # a pooled connection the broker closed meanwhile: try a new one
                unavailable = self.unavailable(error)
                self._circuit.trip(str(unavailable))
                raise unavailable from None
            else:
                self._circuit.close()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the Broker protocol --------------------------------------------------------------

    def publish_routed(
        self, messages: Sequence[tuple[str, Envelope]], force: bool = False
    ) -> list[Failed]:
        """Publish ``(queue name, envelope)`` pairs, confirmed in chunks; return the envelopes
        not confirmed. ``force`` tries even while the circuit is open. Never raises."""
        failed: list[Failed] = []
        chunk = max(1, self.settings.publish_chunk)
        for start in range(0, len(messages), chunk):
            part = messages[start : start + chunk]
            bodies = [(name, envelope.to_bytes()) for name, envelope in part]
            ids = [envelope.job_id for _, envelope in part]
            try:
                results: list[str | None] = self._with_session(
                    lambda session, bodies=bodies, ids=ids: session.publish(  # type: ignore[misc]
                        bodies, self.settings.confirm_timeout, message_ids=ids
                    ),
                    force,
                )
            except (BrokerUnavailable, ConfigurationError) as error:
                failed.extend(Failed(envelope, str(error)) for _, envelope in messages[start:])
                return failed
            except Exception as error:  # a broker problem must never reach the publisher
                log.exception("publishing to RabbitMQ failed unexpectedly")
                reason = f"publishing failed: {self.describe(error)}"
                failed.extend(Failed(envelope, reason) for _, envelope in messages[start:])
                return failed
            failed.extend(
                Failed(envelope, reason)
                for (_, envelope), reason in zip(part, results, strict=True)
                if reason is not None
            )
        return failed

    def check(self) -> None:
        """Connect (even while open-circuited); raise BrokerUnavailable when that fails."""
        self._with_session(lambda session: None, force=True)

    def queue_depths(self, names: Iterable[str]) -> dict[str, int]:
        """Declare the job queues (idempotently) and return their ready message counts."""

        def count(session: _Session) -> dict[str, int]:
            return {name: session.declare(name, self.settings.queue_arguments) for name in names}

        result: dict[str, int] = self._with_session(count, force=True)
        return result

    def send_control(self, name: str, document: Mapping[str, Any], count: int) -> None:
        """Put ``count`` copies of a control document in the control queue ``name``; they
        expire after ``reload_ttl`` seconds. Raises BrokerUnavailable."""
        import pika

        body = json.dumps(dict(document)).encode()
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            type="conveyor.control",
            expiration=str(int(self.settings.reload_ttl * 1000)),
        )

        def send(session: _Session) -> None:
            results = session.publish(
                [(name, body)] * count,
                self.settings.confirm_timeout,
                arguments=CONTROL_ARGUMENTS,
                properties=properties,
            )
            problems = [reason for reason in results if reason is not None]
            if problems:
                raise BrokerUnavailable(f"RabbitMQ did not take the requests: {problems[0]}")

        self._with_session(send, force=True)

    def consumption(
        self, prefetch: int, queues: Sequence[str], controls: Sequence[str], name: str
    ) -> Consumption:
        import pika

        connection = self.connect(heartbeat=None, name=name)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=prefetch)
            for queue in queues:
                _declare(channel, queue, dict(self.settings.queue_arguments))
                self.declared.add(queue)
            for queue in controls:
                _declare(channel, queue, CONTROL_ARGUMENTS)
                self.declared.add(queue)
        except ConfigurationError:
            _close_quietly(connection)
            raise
        except (pika.exceptions.AMQPError, OSError) as error:
            _close_quietly(connection)
            raise self.unavailable(error) from None
        return AmqpConsumption(connection, channel)

    def is_connection_error(self, error: BaseException) -> bool:
        import pika

        return isinstance(error, pika.exceptions.AMQPError | OSError | BrokerUnavailable)

    def delete_queues(self, names: Iterable[str]) -> None:
        """Delete queues (tests and tear-down); missing ones are ignored."""

        def delete(session: _Session) -> None:
            for name in names:
                session.channel.queue_delete(name)
                session.declared.discard(name)

        self._with_session(delete, force=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


def _declare(channel: Any, name: str, arguments: dict[str, Any]) -> None:
    import pika

    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 406:
            raise ConfigurationError(
                f"RabbitMQ refused to declare queue {name!r} with arguments {arguments}: "
                f"{error.reply_text}. The queue exists with other arguments: delete it "
                "once empty, or set BrokerSettings.queue_arguments to match"
            ) from None
        raise


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:
        log.debug("closing a consumer connection failed", exc_info=True)
