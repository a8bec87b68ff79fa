"""Built-in middleware. Every middleware has one signature: ``(message, next) -> answer``.

- around a push (queue middleware): :class:`LogPushedToQueue`;
- around a dispatch (bus middleware): :class:`LogMessageDispatch`, :class:`InTransaction`;
- around a pulled message's execution (job middleware): :class:`WithoutOverlapping`,
  :class:`LogJobDispatch`, :class:`SetupBeforeDispatch`.

The split is a convention, not a type: any middleware can sit in any pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from ..outcomes import Waiting
from .containers import describe
from .context import current_job, queue_inside
from .errors import BusError
from .locks import Locks
from .messages import kind_of
from .result import Result

Next = Callable[[Any], Any]
ContextFn = Callable[[Any], Mapping[str, Any]]

DEFAULT_LOGGER = logging.getLogger("conveyor.bus")


def fields_context(message: Any) -> dict[str, Any]:
    """The default log context: the message's dataclass fields (shallow)."""
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return {}


def result_context(result: Any) -> dict[str, Any]:
    if not isinstance(result, Result):
        return {}
    return {
        "succeeded": result.succeeded,
        "errors": [str(error) for error in result.errors],
    }


class _Logging:
    """Logs before and after ``next``; the records carry ``conveyor_*`` extra attributes."""

    before_text = ""
    after_text = ""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        before: int = logging.DEBUG,
        after: int = logging.INFO,
        context: ContextFn = fields_context,
    ) -> None:
        self.logger = logger or DEFAULT_LOGGER
        self.before = before
        self.after = after
        self.context = context

    def describe(self, message: Any) -> str:
        return f"{kind_of(type(message))} {describe(type(message))}"

    def extra(self, message: Any) -> dict[str, Any]:
        return {
            "conveyor_message": describe(type(message)),
            "conveyor_context": dict(self.context(message)),
        }

    def __call__(self, message: Any, next: Next) -> Any:
        extra = self.extra(message)
        label = self.describe(message)
        self.logger.log(self.before, self.before_text, label, extra=extra)
        answer = next(message)
        self.logger.log(
            self.after,
            self.after_text,
            label,
            extra={**extra, "conveyor_result": result_context(answer)},
        )
        return answer


class LogPushedToQueue(_Logging):
    """Queue middleware: logs "Queuing ..." (DEBUG) and "Queued ..." (INFO) around a push.

    Levels are the ``before`` and ``after`` arguments; ``context`` maps the message to the
    ``conveyor_context`` record attribute (default: its dataclass fields).
    """

    before_text = "Queuing %s."
    after_text = "Queued %s."


class LogMessageDispatch(_Logging):
    """Bus middleware: logs "Dispatching ..." and "Dispatched ..." with the result."""

    before_text = "Dispatching %s."
    after_text = "Dispatched %s."


class LogJobDispatch(_Logging):
    """Job middleware: like :class:`LogMessageDispatch`, naming the Conveyor job and attempt."""

    before_text = "Running %s."
    after_text = "Ran %s."

    def describe(self, message: Any) -> str:
        job = current_job()
        label = super().describe(message)
        if job is None:
            return label
        return f"{label} (job {job.job_id}, attempt {job.attempt})"

    def extra(self, message: Any) -> dict[str, Any]:
        extra = super().extra(message)
        job = current_job()
        if job is not None:
            extra["conveyor_job_id"] = job.job_id
            extra["conveyor_attempt"] = job.attempt
        return extra


class _Rollback(Exception):
    def __init__(self, answer: Any) -> None:
        super().__init__("rolled back: the result failed")
        self.answer = answer


def _roll_back_failure(answer: Any) -> Any:
    if isinstance(answer, Result) and answer.failed:
        raise _Rollback(answer)
    return answer


class InTransaction:
    """Bus middleware: runs the handler in a unit of work, committed only on success.

    ``unit_of_work`` is a factory of context managers that commit on a normal exit and roll
    back on an exception (``engine.begin``, ``session.begin``, a ``sqlite3`` connection):
    when the result failed, the middleware rolls back by raising inside the block, then
    returns the failed result. Exceptions roll back and propagate.

    With ``queue_inside=True`` the unit of work must yield a SQLAlchemy ``Connection`` or
    ``Session`` (``engine.begin``, ``session.begin``) on the store's database, and every job
    the handler queues is written in it (:func:`~conveyor.bus.queue_inside`): a handler
    that changed a row, queued a job and then failed leaves neither.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], AbstractContextManager[Any]],
        *,
        queue_inside: bool = False,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.queue_inside = queue_inside

    def __call__(self, message: Any, next: Next) -> Any:
        try:
            with self.unit_of_work() as unit:
                if self.queue_inside:
                    with queue_inside(_connection_of(unit)):
                        answer = _roll_back_failure(next(message))
                else:
                    answer = _roll_back_failure(next(message))
        except _Rollback as rollback:
            return rollback.answer
        return answer


def _connection_of(unit: Any) -> Any:
    """The Connection or Session a unit of work yielded (``session.begin()`` yields its
    SessionTransaction, whose ``session`` it is)."""
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session, SessionTransaction

    if isinstance(unit, SessionTransaction):
        unit = unit.session
    if not isinstance(unit, Connection | Session):
        raise BusError(
            f"InTransaction(queue_inside=True) needs a unit of work that yields a SQLAlchemy "
            f"Connection or Session (engine.begin, session.begin), not "
            f"{type(unit).__name__}; pass queue_inside=False for other units of work"
        )
    return unit


class WithoutOverlapping:
    """Job middleware: never run two messages with the same key at once, in any process.

    ``key`` maps the message to a lock name (``lambda m: f"sales:{m.event_id}"``); messages
    of different types share a lock when their keys are equal. When the lock is held, the
    job is put back as *waiting* (its attempt is not counted) for ``release_after``
    (default: the app's waiting delay), and runs once the holder has finished.

    A lock expires after ``expires_after`` even if not released, so a crashed worker cannot
    block the key forever: choose it above the longest run of the job.
    """

    def __init__(
        self,
        key: Callable[[Any], object],
        locks: Locks,
        *,
        release_after: timedelta | float | None = None,
        expires_after: timedelta = timedelta(minutes=10),
    ) -> None:
        if expires_after <= timedelta(0):
            raise ValueError("expires_after must be positive")
        self.key = key
        self.locks = locks
        self.release_after = release_after
        self.expires_after = expires_after

    def __call__(self, message: Any, next: Next) -> Any:
        name = str(self.key(message))
        token = self.locks.acquire(name, self.expires_after)
        if token is None:
            raise Waiting(
                f"another {describe(type(message))} with key {name!r} is running; "
                "this one waits until it has finished",
                delay=self.release_after,
            )
        try:
            return next(message)
        finally:
            self.locks.release(name, token)


class SetupBeforeDispatch:
    """Runs ``setup()`` before the message goes on; a callable it returns runs afterwards.

    ``SetupBeforeDispatch(lambda: tenants.enter(default_tenant) or tenants.leave)``: the
    returned teardown runs even when the inner middleware or handler raises.
    """

    def __init__(self, setup: Callable[[], Callable[[], object] | None]) -> None:
        self.setup = setup

    def __call__(self, message: Any, next: Next) -> Any:
        teardown = self.setup()
        try:
            return next(message)
        finally:
            if teardown is not None:
                teardown()
