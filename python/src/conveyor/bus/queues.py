"""Queues: where commands and queue jobs are pushed for later.

Any object with ``push(message)`` is a :class:`Queue`. Two building blocks route
messages to whatever actually queues them, with queue middleware around every push:

- :class:`ClosureQueue`: a default function, plus functions bound per message type;
- :class:`ComponentQueue`: enqueuer objects from an :class:`EnqueuerContainer` (a default
  factory, plus factories bound per message type), for enqueuers with dependencies.

The Conveyor-backed queue, :class:`~conveyor.bus.ConveyorQueue`, is the default thing to
push to; these two wrap it (or anything else) when routing needs code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, Self, TypeVar

from .containers import LazyContainer, PipeContainer
from .pipeline import Pipe, Pipeline

M = TypeVar("M")


class Queue(Protocol):
    """Anything that takes a command or queue job for later execution.

    A queue that also takes keyword options (``connection=``, ``tags=``, ...) gets them
    when a caller passes some; without options only ``push(message)`` is ever called."""

    def push(self, message: Any) -> object: ...


class Enqueuer(Protocol):
    """A component that pushes messages somewhere; bound in an :class:`EnqueuerContainer`."""

    def push(self, message: Any) -> object: ...


def _lookup(table: dict[type, Any] | LazyContainer[type, Any], message_type: type) -> type | None:
    """The most specific bound class in ``message_type``'s MRO, or None."""
    for klass in message_type.__mro__:
        if klass in table:
            return klass
    return None


class ClosureQueue:
    """Pushes with a default function, or with the function bound for the message type.

    ``ClosureQueue(conveyor_queue.push)`` then
    ``.bind(Report, lambda m: conveyor_queue.push(m, queue="reporting"))``.
    """

    def __init__(
        self,
        fn: Callable[[Any], object],
        middleware: PipeContainer | None = None,
    ) -> None:
        self.default = fn
        self._bindings: dict[type, Callable[[Any], object]] = {}
        self.pipeline: Pipeline[Any, object] = Pipeline(middleware)

    def bind(self, message_type: type[M], fn: Callable[[M], object]) -> Self:
        """Use ``fn`` for ``message_type`` (and its subclasses) instead of the default."""
        self._bindings[message_type] = fn
        return self

    def through(self, pipes: Iterable[Pipe]) -> Self:
        """Queue middleware around every push, outermost first."""
        self.pipeline.through(pipes)
        return self

    def push(self, message: Any, **options: Any) -> object:
        """Push through the middleware; ``options`` (if any) go to the function too."""
        return self.pipeline.run(message, lambda passed: self._push(passed, options))

    def _push(self, message: Any, options: dict[str, Any]) -> object:
        bound = _lookup(self._bindings, type(message))
        fn: Callable[..., object] = self._bindings[bound] if bound is not None else self.default
        return fn(message, **options) if options else fn(message)


class EnqueuerContainer(LazyContainer[type, Enqueuer]):
    """Enqueuers by message type, built lazily; ``default`` serves every unbound type."""

    def __init__(self, default: Callable[[], Enqueuer]) -> None:
        super().__init__()
        self._default_factory = default
        self._default: Enqueuer | None = None

    def get(self, message_type: type) -> Enqueuer:
        """The enqueuer bound for ``message_type`` (or a base class), else the default."""
        bound = _lookup(self, message_type)
        if bound is not None:
            return self._make(bound)
        if self._default is None:
            with self._lock:
                if self._default is None:
                    self._default = self._default_factory()
        return self._default


class ComponentQueue:
    """Pushes through the enqueuer the container gives for the message's type."""

    def __init__(
        self,
        enqueuers: EnqueuerContainer,
        middleware: PipeContainer | None = None,
    ) -> None:
        self.enqueuers = enqueuers
        self.pipeline: Pipeline[Any, object] = Pipeline(middleware)

    def through(self, pipes: Iterable[Pipe]) -> Self:
        """Queue middleware around every push, outermost first."""
        self.pipeline.through(pipes)
        return self

    def push(self, message: Any, **options: Any) -> object:
        """Push through the middleware; ``options`` (if any) go to the enqueuer too."""
        return self.pipeline.run(message, lambda passed: self._push(passed, options))

    def _push(self, message: Any, options: dict[str, Any]) -> object:
        enqueuer: Any = self.enqueuers.get(type(message))
        return enqueuer.push(message, **options) if options else enqueuer.push(message)
