"""An in-process broker for tests: broker mode without RabbitMQ (``broker_url="memory://NAME"``).

Apps given the same ``memory://NAME`` in one process share one :class:`MemoryBroker`, as apps
on one RabbitMQ share its queues. It keeps RabbitMQ's rules that broker mode relies on: a
message is delivered to one consumer at a time, at most ``prefetch`` unsettled per consumer and
queue, and a message not acknowledged when its consumer closes goes back to its queue. Nothing
is durable, and nothing ever fails unless a test says so (:attr:`MemoryBroker.failing`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from ..errors import BrokerUnavailable
from .base import Consumption, Failed, OnMessage
from .envelope import Envelope

_BROKERS: dict[str, MemoryBroker] = {}
_REGISTRY_LOCK = threading.Lock()


def memory_broker(url: str) -> MemoryBroker:
    """The process's broker for ``url`` (``memory://NAME``), made on first use."""
    with _REGISTRY_LOCK:
        broker = _BROKERS.get(url)
        if broker is None:
            broker = _BROKERS[url] = MemoryBroker(url)
        return broker


class MemoryBroker:
    """A :class:`~conveyor.broker.base.Broker` in this process's memory."""

    def __init__(self, url: str = "memory://") -> None:
        self.display_url = url
        self.declared: set[str] = set()
        self.failing: str | None = None  # set by a test: every publish fails with this reason
        self.published = 0  # messages taken, for tests
        self._lock = threading.Condition()
        self._queues: dict[str, deque[tuple[int, bytes]]] = {}
        self._next_id = 1
        self._consumptions: list[MemoryConsumption] = []

    # -- the Broker protocol --------------------------------------------------------------

    def publish_routed(
        self, messages: Sequence[tuple[str, Envelope]], force: bool = False
    ) -> list[Failed]:
        if self.failing is not None:
            return [Failed(envelope, self.failing) for _, envelope in messages]
        with self._lock:
            for name, envelope in messages:
                self.put(name, envelope.to_bytes())
        return []

    def put(self, name: str, body: bytes) -> None:
        """Add a message (any body) to queue ``name``; tests use it for poison messages."""
        with self._lock:
            self.declared.add(name)
            self._queues.setdefault(name, deque()).append((self._next_id, body))
            self._next_id += 1
            self.published += 1
            self._lock.notify_all()

    def check(self) -> None:
        if self.failing is not None:
            raise BrokerUnavailable(self.failing)

    def queue_depths(self, names: Iterable[str]) -> dict[str, int]:
        self.check()
        with self._lock:
            depths = {}
            for name in names:
                self.declared.add(name)
                depths[name] = len(self._queues.setdefault(name, deque()))
            return depths

    def send_control(self, name: str, document: Mapping[str, Any], count: int) -> None:
        import json

        body = json.dumps(dict(document)).encode()
        for _ in range(count):
            self.put(name, body)

    def consumption(
        self, prefetch: int, queues: Sequence[str], controls: Sequence[str], name: str
    ) -> Consumption:
        self.check()
        with self._lock:
            for queue in (*queues, *controls):
                self.declared.add(queue)
                self._queues.setdefault(queue, deque())
            consumption = MemoryConsumption(self, prefetch)
            self._consumptions.append(consumption)
            return consumption

    def describe(self, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"

    def is_connection_error(self, error: BaseException) -> bool:
        return isinstance(error, BrokerUnavailable)

    def delete_queues(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in list(names):
                self._queues.pop(name, None)
                self.declared.discard(name)

    def close(self) -> None:
        """Apps share the broker: closing one app's mode leaves the queues in place."""

    # -- for consumptions and tests -------------------------------------------------------

    def depth(self, name: str) -> int:
        with self._lock:
            return len(self._queues.get(name, ()))

    def _take(self, name: str) -> tuple[int, bytes] | None:
        queue = self._queues.get(name)
        return queue.popleft() if queue else None

    def _return(self, name: str, message: tuple[int, bytes]) -> None:
        queue = self._queues.setdefault(name, deque())
        queue.appendleft(message)  # RabbitMQ requeues at (about) the original position
        self._lock.notify_all()


class MemoryConsumption:
    """One consumer of a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, prefetch: int) -> None:
        self.broker = broker
        self.prefetch = prefetch
        self._callbacks: dict[str, OnMessage] = {}
        self._unsettled: dict[int, tuple[str, tuple[int, bytes]]] = {}  # tag -> (queue, message)
        self._per_queue: dict[str, int] = {}
        self._calls: deque[Callable[[], None]] = deque()
        self._next_tag = 1
        self._closed = False

    def consume(self, name: str, on_message: OnMessage) -> None:
        self._callbacks[name] = on_message

    def cancel(self, names: Collection[str]) -> None:
        for name in names:
            self._callbacks.pop(name, None)

    def call_soon(self, call: Callable[[], None]) -> None:
        with self.broker._lock:
            self._calls.append(call)
            self.broker._lock.notify_all()

    def poll(self, timeout: float) -> None:
        lock = self.broker._lock
        with lock:
            ready = self._ready()
            if not ready and not self._calls and timeout > 0:
                lock.wait(timeout)
                ready = self._ready()
            calls, self._calls = self._calls, deque()
        for name, tag, body in ready:
            callback = self._callbacks.get(name)
            if callback is not None:
                callback(name, tag, body)
        for call in calls:
            call()

    def _ready(self) -> list[tuple[str, int, bytes]]:
        """Take the messages this consumer may receive now (the broker's lock is held)."""
        if self._closed:
            return []
        ready = []
        for name in list(self._callbacks):
            while self._per_queue.get(name, 0) < self.prefetch:
                message = self.broker._take(name)
                if message is None:
                    break
                tag = self._next_tag
                self._next_tag += 1
                self._unsettled[tag] = (name, message)
                self._per_queue[name] = self._per_queue.get(name, 0) + 1
                ready.append((name, tag, message[1]))
        return ready

    def _settle(self, tag: int, multiple: bool) -> list[tuple[str, tuple[int, bytes]]]:
        tags = [t for t in self._unsettled if t <= tag] if multiple else [tag]
        settled = []
        for each in sorted(tags):
            entry = self._unsettled.pop(each, None)
            if entry is None:
                raise BrokerUnavailable(f"unknown delivery tag {each} (PRECONDITION_FAILED)")
            self._per_queue[entry[0]] -= 1
            settled.append(entry)
        return settled

    def ack(self, tag: int, multiple: bool = False) -> None:
        with self.broker._lock:
            self._settle(tag, multiple)
            self.broker._lock.notify_all()

    def nack(self, tag: int, multiple: bool = False) -> None:
        with self.broker._lock:
            for name, message in reversed(self._settle(tag, multiple)):
                self.broker._return(name, message)

    def depth(self, name: str) -> int:
        return self.broker.depth(name)

    def close(self) -> None:
        with self.broker._lock:
            if self._closed:
                return
            self._closed = True
            for name, message in sorted(self._unsettled.values(), reverse=True):
                self.broker._return(name, message)
            self._unsettled.clear()
            if self in self.broker._consumptions:
                self.broker._consumptions.remove(self)
