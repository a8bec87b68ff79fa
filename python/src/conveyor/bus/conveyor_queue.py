"""The default queue: commands and queue jobs become Conveyor jobs.

Each registered message type becomes a Conveyor handler under its stable name, whose
payload is ``{"version": n, "data": {...fields}}``. A worker running that job decodes the
message, sends it through the job middleware and dispatches it to the command bus (a
:class:`~conveyor.bus.Command`) or the queue-job dispatcher (a
:class:`~conveyor.bus.QueueJob`); the :class:`~conveyor.bus.OutcomePolicy` turns the
result into the job's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar

from .. import codec
from ..errors import InvalidPayload
from ..handlers import JobContext
from ..outcomes import PermanentError, TemporaryError
from ..retry import RetryPolicy
from .containers import PipeContainer, describe
from .context import _caller_transaction, _current_job
from .dispatchers import Dispatcher
from .errors import (
    BusError,
    HandlerNotFound,
    InvalidMessage,
    InvalidResult,
    MessageNotRegistered,
    UnknownMessageVersion,
)
from .messages import Command, QueueJob, kind_of
from .outcomes import OutcomePolicy
from .pipeline import Pipe, Pipeline
from .result import Result
from .serialization import Envelope, MessageSerializer, Registration, Upgrade

if TYPE_CHECKING:
    from ..aio import AsyncConveyor
    from ..app import Conveyor
    from ..model import Batch, Job

M = TypeVar("M")

PerMessage = str | Callable[[Any], str] | None
"""A fixed value, or a function of the message (``lambda m: f"event-{m.event_id}"``)."""


@dataclass(frozen=True)
class Route:
    """What :meth:`ConveyorQueue.register` recorded for one message type."""

    registration: Registration
    queue: str | None
    priority: int | None
    serial_group: PerMessage
    identifier: PerMessage
    unique: bool
    delay: timedelta | float | None
    pipeline: Pipeline[Any, Result[Any]]
    outcomes: OutcomePolicy | None


def _per_message(setting: PerMessage, message: Any) -> str | None:
    if setting is None or isinstance(setting, str):
        return setting
    return str(setting(message))


class ConveyorQueue:
    """A queue whose messages are Conveyor jobs, run by Conveyor workers.

    Creating one opens nothing: the app's store is opened by the first push (or by a
    worker). Wire it in every process, web and worker alike::

        queue = ConveyorQueue(app).dispatch_to(commands=bus, jobs=job_dispatcher)
        queue.register(RecalculateSalesAtEvent, "sales.recalculate_at_event")
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        middleware: PipeContainer | None = None,
        outcomes: OutcomePolicy | None = None,
        serializer: MessageSerializer | None = None,
    ) -> None:
        self.app = app
        self.middleware = middleware
        self.serializer = serializer if serializer is not None else MessageSerializer()
        self.outcomes = outcomes if outcomes is not None else OutcomePolicy()
        self.pipeline: Pipeline[Any, Job] = Pipeline(middleware)
        self.job_pipeline: Pipeline[Any, Result[Any]] = Pipeline(middleware)
        self._routes: dict[type, Route] = {}
        self._commands: Dispatcher | None = None
        self._jobs: Dispatcher | None = None
        self._async_app: AsyncConveyor | None = None

    # -- configuration --------------------------------------------------------------------

    def dispatch_to(
        self, *, commands: Dispatcher | None = None, jobs: Dispatcher | None = None
    ) -> Self:
        """Where pulled messages go: commands to ``commands``, queue jobs to ``jobs``."""
        if commands is not None:
            self._commands = commands
        if jobs is not None:
            self._jobs = jobs
        return self

    def through(self, pipes: Iterable[Pipe]) -> Self:
        """Queue middleware around every push, outermost first."""
        self.pipeline.through(pipes)
        return self

    def run_through(self, pipes: Iterable[Pipe], *, types: Iterable[type] | None = None) -> Self:
        """Job middleware around a pulled message's dispatch, outermost first.

        Without ``types`` it wraps every message; with ``types`` (registered message types)
        only those, inside the middleware for every message.
        """
        added = list(pipes)
        if types is None:
            self.job_pipeline.through(added)
        else:
            for message_type in types:
                self.route(message_type).pipeline.through(added)
        return self

    def register(
        self,
        message_type: type[M],
        name: str,
        *,
        version: int = 1,
        upgrades: Mapping[int, Upgrade] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        retry: str | RetryPolicy | None = None,
        serial_group: PerMessage = None,
        identifier: PerMessage = None,
        unique: bool = False,
        delay: timedelta | float | None = None,
        middleware: Iterable[Pipe] = (),
        outcomes: OutcomePolicy | None = None,
    ) -> Self:
        """Make ``message_type`` queueable under the stable ``name``.

        ``queue``, ``priority`` and ``retry`` become the defaults of the Conveyor handler
        registered under ``name``; ``serial_group`` and ``identifier`` are strings or
        functions of the message; ``unique`` runs the work of one identifier once;
        ``delay`` postpones every push; ``middleware`` is job middleware for this type
        only (inside the queue-wide one); ``outcomes`` replaces the queue's policy.
        """
        if not (isinstance(message_type, type) and issubclass(message_type, Command | QueueJob)):
            raise BusError(
                f"{message_type!r} is neither a Command nor a QueueJob; subclass "
                "conveyor.bus.Command (public use cases) or conveyor.bus.QueueJob (internal work)"
            )
        if unique and identifier is None:
            raise BusError(f"{name!r} is unique but has no identifier; pass identifier=...")
        if message_type in self._routes:
            raise BusError(f"{describe(message_type)} is already registered with this queue")
        known = message_type in self.serializer
        registration = self.serializer.register(
            message_type, name, version=version, upgrades=upgrades
        )
        pipeline: Pipeline[Any, Result[Any]] = Pipeline(self.middleware).through(middleware)
        route = Route(
            registration,
            queue,
            priority,
            serial_group,
            identifier,
            unique,
            delay,
            pipeline,
            outcomes,
        )
        try:
            self.app.register(
                name,
                self._consumer(route),
                queue=queue,
                priority=priority,
                retry=retry,
                pass_context=True,
            )
        except Exception:
            if not known:
                self.serializer.unregister(message_type)
            raise
        self._routes[message_type] = route
        return self

    def route(self, message_type: type) -> Route:
        try:
            return self._routes[message_type]
        except KeyError:
            raise MessageNotRegistered(
                f"{kind_of(message_type)} {describe(message_type)} is not registered with this "
                f"queue, so it has no stable name to travel under; call "
                f"queue.register({message_type.__name__}, 'context.{message_type.__name__}')"
            ) from None

    # -- pushing --------------------------------------------------------------------------

    def check(self, message: object) -> Envelope:
        """Everything a push can get wrong, checked before anything is queued.

        Raises a BusError when the message is not a Command or QueueJob, its type is not
        registered, no dispatcher or handler will take it, or a field cannot be encoded.
        """
        if not isinstance(message, Command | QueueJob):
            raise BusError(
                f"{describe(type(message))} is neither a Command nor a QueueJob, so it cannot "
                "be queued; subclass conveyor.bus.Command or conveyor.bus.QueueJob"
            )
        self.route(type(message))
        dispatcher = self._dispatcher_for(message)
        if not dispatcher.handles(type(message)):
            raise HandlerNotFound(
                f"no handler is bound for {kind_of(type(message))} "
                f"{describe(type(message))}, so a worker could never run it; bind one with "
                f"handlers.bind({type(message).__name__}, lambda: ...)"
            )
        envelope = self.serializer.encode(message)
        try:
            codec.check_size(codec.encode(envelope.data, f"{envelope.name}"), envelope.name)
        except InvalidPayload as error:
            raise InvalidMessage(str(error)) from None
        return envelope

    def push(
        self,
        message: Command | QueueJob,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        available_at: datetime | None = None,
        serial_group: str | None = None,
        identifier: str | None = None,
        unique: bool | None = None,
        tags: Sequence[str] | str = (),
        depends_on: Sequence[str] | str = (),
        batch: Batch | str | None = None,
        retry: str | RetryPolicy | dict[str, Any] | None = None,
        connection: Any = None,
    ) -> Job:
        """Queue ``message`` through the queue middleware; returns the stored Conveyor job.

        Keyword arguments override the type's registered settings for this push; ``tags``,
        ``depends_on`` (job ids), ``batch`` and ``retry`` (a policy for this job only) are
        :meth:`Conveyor.publish`'s. ``connection=`` (a SQLAlchemy ``Connection`` or
        ``Session`` on the store's database) writes the job in the caller's transaction, as
        does an enclosing :func:`queue_inside` block: the job exists if and only if that
        transaction commits.
        """
        checked = self.check(message)
        overrides: dict[str, Any] = {
            "queue": queue,
            "priority": priority,
            "delay": delay,
            "available_at": available_at,
            "serial_group": serial_group,
            "identifier": identifier,
            "unique": unique,
            "tags": tags,
            "depends_on": depends_on,
            "batch": batch,
            "retry": retry,
            "connection": connection if connection is not None else _caller_transaction.get(),
        }

        def publish(passed: Any) -> Job:
            envelope = checked if passed is message else self.check(passed)
            return self._publish(passed, envelope, overrides)

        return self.pipeline.run(message, publish)

    def run_now(self, message: Command | QueueJob, **overrides: Any) -> Job:
        """Push ``message``, then run its job at once in this thread (direct execution).

        The job gets the same job middleware, outcome mapping and recorded state as on a
        worker; the returned job shows how it ended. A job that cannot start yet (a
        delay, a busy serial group) is returned unstarted, and a worker runs it later.
        """
        job = self.push(message, **overrides)
        return self.app.execute(job.id)

    async def push_async(
        self, message: Command | QueueJob, *, connection: Any = None, **overrides: Any
    ) -> Job:
        """:meth:`push` from async code, with the same middleware, checks and options;
        ``connection=`` takes an ``AsyncConnection`` or ``AsyncSession``.

        The push runs through the async app (``conveyor.aio``): the same synchronous code as
        :meth:`push`, over an async driver, in the caller's transaction or in one of its own.
        """
        self.check(message)
        return await self.async_app.call(
            lambda sync: self.push(message, connection=sync, **overrides), connection
        )

    @property
    def async_app(self) -> AsyncConveyor:
        """The async app :meth:`push_async` runs on, made from the queue's app on first use
        (or set it to the application's own ``AsyncConveyor``)."""
        if self._async_app is None:
            from ..aio import AsyncConveyor

            self._async_app = AsyncConveyor(self.app)
        return self._async_app

    @async_app.setter
    def async_app(self, value: AsyncConveyor) -> None:
        self._async_app = value

    def _publish(self, message: Any, envelope: Envelope, overrides: Mapping[str, Any]) -> Job:
        route = self._routes[type(message)]
        options: dict[str, Any] = {
            "serial_group": overrides["serial_group"] or _per_message(route.serial_group, message),
            "identifier": overrides["identifier"] or _per_message(route.identifier, message),
            "unique": route.unique if overrides["unique"] is None else overrides["unique"],
        }
        for key in ("queue", "priority", "available_at", "batch", "retry", "connection"):
            if overrides[key] is not None:
                options[key] = overrides[key]
        for key in ("tags", "depends_on"):
            if overrides[key]:
                options[key] = overrides[key]
        delay = overrides["delay"] if overrides["delay"] is not None else route.delay
        if delay is not None and overrides["available_at"] is None:
            options["delay"] = delay
        if options["unique"] and options["identifier"] is None:
            raise BusError(f"{envelope.name} is pushed as unique without an identifier")
        return self.app.publish(
            envelope.name, {"version": envelope.version, "data": envelope.data}, **options
        )

    # -- running --------------------------------------------------------------------------

    def _dispatcher_for(self, message: object) -> Dispatcher:
        if isinstance(message, Command):
            if self._commands is None:
                raise BusError(
                    "this queue has no command bus to dispatch pulled commands to; call "
                    "queue.dispatch_to(commands=bus) where the queue is wired"
                )
            return self._commands
        if self._jobs is None:
            raise BusError(
                "this queue has no queue-job dispatcher to dispatch pulled queue jobs to; call "
                "queue.dispatch_to(jobs=QueueJobDispatcher(...)) where the queue is wired"
            )
        return self._jobs

    def _consumer(self, route: Route) -> Callable[..., None]:
        def consume(context: JobContext, version: int, data: dict[str, Any]) -> None:
            token = _current_job.set(context)
            try:
                self._consume(route, version, data)
            finally:
                _current_job.reset(token)

        consume.__qualname__ = f"ConveyorQueue[{route.registration.name}]"
        return consume

    def _consume(self, route: Route, version: int, data: dict[str, Any]) -> None:
        name = route.registration.name
        try:
            message = self.serializer.decode(name, version, data)
        except UnknownMessageVersion as error:
            raise TemporaryError(str(error)) from error
        except (InvalidMessage, MessageNotRegistered) as error:
            raise PermanentError(f"{name}: the payload does not decode: {error}") from error
        dispatcher = self._dispatcher_for(message)

        def dispatch(passed: Any) -> Result[Any]:
            return route.pipeline.run(passed, dispatcher.dispatch)

        result = self.job_pipeline.run(message, dispatch)
        if not isinstance(result, Result):
            raise InvalidResult(
                f"the job middleware of {name} answered {result!r}, not a Result; return what "
                "next(message) returned"
            )
        (route.outcomes or self.outcomes).apply(result)
