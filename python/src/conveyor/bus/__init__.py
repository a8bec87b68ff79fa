"""The application-side API: a command bus, queues and middleware on top of Conveyor.

Commands (public use cases) are dispatched on a :class:`CommandBus`, now with
:meth:`~CommandBus.dispatch` or later with :meth:`~CommandBus.queue`; queue jobs
(internal work) are pushed to a queue and dispatched by a :class:`QueueJobDispatcher`
when pulled. Handlers answer with a :class:`Result`. The :class:`ConveyorQueue` turns
queued messages into Conveyor jobs; :class:`ClosureQueue` and :class:`ComponentQueue`
route them in code. Middleware, ``(message, next) -> answer``, wraps pushes, dispatches
and job runs. See docs/guide/bus.md.
"""

from .containers import Handler, HandlerContainer, Middleware, PipeContainer
from .context import current_job, queue_inside
from .conveyor_queue import ConveyorQueue, Route
from .dispatchers import CommandBus, Dispatcher, QueueJobDispatcher
from .errors import (
    BusError,
    HandlerNotFound,
    InvalidBinding,
    InvalidMessage,
    InvalidResult,
    MessageNotRegistered,
    MiddlewareNotFound,
    UnknownMessageVersion,
)
from .locks import Locks, MemoryLocks, StoreLocks
from .messages import Command, QueueJob
from .middleware import (
    InTransaction,
    LogJobDispatch,
    LogMessageDispatch,
    LogPushedToQueue,
    SetupBeforeDispatch,
    WithoutOverlapping,
)
from .outcomes import OutcomePolicy
from .pipeline import Pipe, Pipeline
from .queues import ClosureQueue, ComponentQueue, Enqueuer, EnqueuerContainer, Queue
from .result import Error, ErrorList, Result, ResultFailed
from .serialization import Envelope, MessageSerializer, Registration

__all__ = [
    "BusError",
    "ClosureQueue",
    "Command",
    "CommandBus",
    "ComponentQueue",
    "ConveyorQueue",
    "Dispatcher",
    "Enqueuer",
    "EnqueuerContainer",
    "Envelope",
    "Error",
    "ErrorList",
    "Handler",
    "HandlerContainer",
    "HandlerNotFound",
    "InTransaction",
    "InvalidBinding",
    "InvalidMessage",
    "InvalidResult",
    "Locks",
    "LogJobDispatch",
    "LogMessageDispatch",
    "LogPushedToQueue",
    "MemoryLocks",
    "MessageNotRegistered",
    "MessageSerializer",
    "Middleware",
    "MiddlewareNotFound",
    "OutcomePolicy",
    "Pipe",
    "PipeContainer",
    "Pipeline",
    "Queue",
    "QueueJob",
    "QueueJobDispatcher",
    "Registration",
    "Result",
    "ResultFailed",
    "Route",
    "SetupBeforeDispatch",
    "StoreLocks",
    "UnknownMessageVersion",
    "WithoutOverlapping",
    "current_job",
    "queue_inside",
]
