"""The seams of broker mode: what a broker offers, what a consumer holds, what the app lends.

:class:`Broker` is implemented by :class:`~conveyor.broker.amqp.AmqpBroker` (RabbitMQ over pika)
and by :class:`~conveyor.broker.memory.MemoryBroker` (in-process, for tests). Nothing in this
package imports the app or the worker: the app lends itself as a :class:`BrokerHost`, and the
worker receives a :class:`~conveyor.source.JobSource`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..handlers import HandlerRegistry
from ..lifecycle import Lifecycle
from ..model import Job
from ..store.base import Store
from .envelope import Envelope


@dataclass(frozen=True)
class Failed:
    """An envelope the broker did not confirm, and why (credentials never appear)."""

    envelope: Envelope
    reason: str


# A delivery, as a consumption hands it over: (queue name, delivery tag, body).
OnMessage = Callable[[str, int, bytes], None]


class Consumption(Protocol):
    """One consumer's connection to a broker. Every method but :meth:`call_soon` must be
    called from the one thread that polls (pika's connections are not thread-safe)."""

    def consume(self, name: str, on_message: OnMessage) -> None:
        """Start receiving the messages of queue ``name`` (declared already)."""
        ...

    def cancel(self, names: Collection[str]) -> None:
        """Stop receiving from these queues; undelivered messages stay in the broker."""
        ...

    def poll(self, timeout: float) -> None:
        """Deliver what arrived (to the ``on_message`` callbacks) and run the calls of
        :meth:`call_soon`, waiting up to ``timeout`` seconds for either."""
        ...

    def call_soon(self, call: Callable[[], None]) -> None:
        """From any thread: run ``call`` in the polling thread, ending its current wait."""
        ...

    def ack(self, tag: int, multiple: bool = False) -> None: ...

    def nack(self, tag: int, multiple: bool = False) -> None:
        """Return a message (and with ``multiple`` every earlier unsettled one) to its queue."""
        ...

    def depth(self, name: str) -> int:
        """Messages ready in queue ``name`` (not delivered to any consumer)."""
        ...

    def close(self) -> None:
        """End the connection; the broker returns every unsettled message to its queue."""
        ...


class Broker(Protocol):
    """Carries job ids; the store stays the source of truth (spec.md#BROKER-012)."""

    display_url: str
    declared: set[str]  # every queue this broker declared (for tear-down)

    def publish_routed(
        self, messages: Sequence[tuple[str, Envelope]], force: bool = False
    ) -> list[Failed]:
        """Hand ``(queue name, envelope)`` pairs over, durably and confirmed; return those
        that were not. ``force`` tries even while a recent failure would fail them at once.

        Never raises for a broker problem: a broker that is down, refuses or does not confirm
        in time fails the envelopes concerned, and the caller records that on the jobs.
        """
        ...

    def check(self) -> None:
        """Raise BrokerUnavailable unless the broker can be reached now."""
        ...

    def queue_depths(self, names: Iterable[str]) -> dict[str, int]:
        """Declare job queues (idempotently) and return their ready message counts."""
        ...

    def send_control(self, name: str, document: Mapping[str, Any], count: int) -> None:
        """Put ``count`` copies of a control request in control queue ``name``."""
        ...

    def consumption(
        self, prefetch: int, queues: Sequence[str], controls: Sequence[str], name: str
    ) -> Consumption:
        """A consumer's connection, with job ``queues`` and control queues declared and at
        most ``prefetch`` unsettled messages per queue. Raises BrokerUnavailable, or
        ConfigurationError when a queue exists with other arguments."""
        ...

    def describe(self, error: BaseException) -> str:
        """An error as one line, without credentials."""
        ...

    def is_connection_error(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection is gone (reconnect), not a bug."""
        ...

    def delete_queues(self, names: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class BrokerHost(Protocol):
    """What broker mode uses of the app (the app implements it)."""

    default_queue: str
    default_priority: int
    priorities: tuple[int, ...] | None

    @property
    def store(self) -> Store: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    @property
    def handlers(self) -> HandlerRegistry: ...

    def now(self) -> datetime: ...

    def rescue_expired(self, limit: int = 100) -> list[Job]: ...
