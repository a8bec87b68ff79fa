"""Context of the running code: the Conveyor job a pulled message is running in, and the
caller's transaction that pushes join."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..handlers import JobContext

_current_job: ContextVar[JobContext | None] = ContextVar("conveyor_bus_current_job", default=None)


def current_job() -> JobContext | None:
    """The job being executed (id, attempt, queue, ...) while a worker runs a message.

    None outside a worker, e.g. when a command is dispatched directly on the bus.
    """
    return _current_job.get()


_caller_transaction: ContextVar[Any] = ContextVar("conveyor_bus_transaction", default=None)


@contextmanager
def queue_inside(connection: Any) -> Iterator[None]:
    """Within the block, every :meth:`ConveyorQueue.push` (and so ``bus.queue()``) of this
    thread or task writes its job in ``connection`` (a SQLAlchemy ``Connection`` or
    ``Session`` on the store's database): a handler whose transaction rolls back leaves no
    job behind. :class:`~conveyor.bus.InTransaction` does it with ``queue_inside=True``."""
    token = _caller_transaction.set(connection)
    try:
        yield
    finally:
        _caller_transaction.reset(token)
