"""The command bus (public commands, now or queued) and the queue-job dispatcher (internal work)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .containers import HandlerContainer, PipeContainer, describe
from .errors import BusError, InvalidResult
from .messages import Command, QueueJob
from .pipeline import Pipe, Pipeline
from .result import Result, ResultFailed

if TYPE_CHECKING:
    from typing import Self

    from .queues import Queue


class Dispatcher(Protocol):
    """What a pulled message is handed to: the command bus or the queue-job dispatcher."""

    def dispatch(self, message: Any) -> Result[Any]: ...

    def handles(self, message_type: type) -> bool: ...


class _MessageDispatcher:
    """Handlers by message type behind a middleware pipeline."""

    accepts: type = object
    refusal = ""

    def __init__(
        self,
        handlers: HandlerContainer | None = None,
        middleware: PipeContainer | None = None,
    ) -> None:
        self.handlers = handlers if handlers is not None else HandlerContainer()
        self.pipeline: Pipeline[Any, Result[Any]] = Pipeline(middleware)

    def through(self, pipes: Iterable[Pipe]) -> Self:
        """Add middleware around every dispatch, outermost first; returns the dispatcher."""
        self.pipeline.through(pipes)
        return self

    def handles(self, message_type: type) -> bool:
        """True when a handler is bound for ``message_type`` (nothing is built)."""
        return message_type in self.handlers

    def check(self, message: object) -> None:
        """Raise a BusError unless ``message`` is of the accepted kind and has a handler.

        The handler is not built: a web process that only queues never constructs it."""
        if not isinstance(message, self.accepts):
            raise BusError(
                f"{describe(type(message))} is not a {self.accepts.__name__}: {self.refusal}"
            )
        if type(message) not in self.handlers:
            self.handlers.get(type(message))  # HandlerNotFound names the fix

    def dispatch(self, message: Any) -> Result[Any]:
        """Run the message's handler through the middleware, now, and return its result."""
        if not isinstance(message, self.accepts):
            self.check(message)
        if type(message) not in self.handlers:
            self.handlers.get(type(message))
        result = self.pipeline.run(message, self._execute)
        if not isinstance(result, Result):
            raise InvalidResult(
                f"the middleware around {describe(type(message))} answered {result!r}, not a "
                "Result; middleware must return what next(message) returned, or a Result"
            )
        return result

    def _execute(self, message: Any) -> Result[Any]:
        handler = self.handlers.get(type(message))
        try:
            result = handler(message)
        except ResultFailed as failed:
            return failed.result
        if not isinstance(result, Result):
            raise InvalidResult(
                f"the handler of {describe(type(message))} returned {result!r}; handlers "
                "return Result.ok(value) or Result.fail(errors)"
            )
        return result


class CommandBus(_MessageDispatcher):
    """Dispatches commands to their handlers now, or queues them for a worker.

    ``queue`` is a zero-argument factory called on the first :meth:`queue` call, so a bus
    that only dispatches never creates its queue (nor opens a connection).
    """

    accepts = Command
    refusal = (
        "the command bus takes commands only; push internal queue jobs to a queue, and "
        "subclass conveyor.bus.Command for messages the outside world may dispatch"
    )

    def __init__(
        self,
        handlers: HandlerContainer | None = None,
        middleware: PipeContainer | None = None,
        queue: Callable[[], Queue] | None = None,
    ) -> None:
        super().__init__(handlers, middleware)
        self._queue_factory = queue
        self._queue: Queue | None = None
        self._queue_lock = threading.Lock()

    def queue(self, command: Command, **options: Any) -> Any:
        """Push ``command`` onto the queue; a worker dispatches it to this bus later.

        Returns what the queue's push returned: the stored :class:`~conveyor.Job` for a
        :class:`~conveyor.bus.ConveyorQueue` (its id makes a ``Location`` header).
        ``options`` go to the push (``connection=``, ``tags=``, ``depends_on=``, ...).
        Refused here, before anything is pushed, when the command has no handler; the
        handler itself is not built.
        """
        self.check(command)
        queue: Any = self._get_queue()
        return queue.push(command, **options) if options else queue.push(command)

    async def queue_async(self, command: Command, **options: Any) -> Any:
        """:meth:`queue` from async code: awaits the queue's ``push_async`` (a
        :class:`~conveyor.bus.ConveyorQueue` has one; ``connection=`` then takes an
        ``AsyncConnection`` or ``AsyncSession``)."""
        self.check(command)
        queue = self._get_queue()
        push_async = getattr(queue, "push_async", None)
        if push_async is None:
            raise BusError(
                f"this bus's queue ({type(queue).__name__}) has no push_async, so it cannot "
                "queue from async code; give the bus a ConveyorQueue, or call queue() in a "
                "thread"
            )
        return await push_async(command, **options)

    @property
    def queue_created(self) -> bool:
        """True once the queue factory has been called."""
        return self._queue is not None

    def _get_queue(self) -> Queue:
        if self._queue is None:
            if self._queue_factory is None:
                raise BusError(
                    "this command bus has no queue; create it with "
                    "CommandBus(..., queue=lambda: make_queue())"
                )
            with self._queue_lock:
                if self._queue is None:
                    self._queue = self._queue_factory()
        return self._queue


class QueueJobDispatcher(_MessageDispatcher):
    """Dispatches internal queue jobs, pulled from a queue, to their own handlers."""

    accepts = QueueJob
    refusal = (
        "the queue-job dispatcher takes queue jobs only; dispatch commands on the command "
        "bus, and subclass conveyor.bus.QueueJob for internal work"
    )
