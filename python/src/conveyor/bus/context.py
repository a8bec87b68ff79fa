"""The Conveyor job a pulled message is running in, for middleware that wants it."""

from __future__ import annotations

from contextvars import ContextVar

from ..handlers import JobContext

_current_job: ContextVar[JobContext | None] = ContextVar("conveyor_bus_current_job", default=None)


def current_job() -> JobContext | None:
    """The job being executed (id, attempt, queue, ...) while a worker runs a message.

    None outside a worker, e.g. when a command is dispatched directly on the bus.
    """
    return _current_job.get()
