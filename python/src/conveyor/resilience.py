"""Riding out transient database errors: retry with capped exponential back-off.

Two kinds are transient. A lost connection (the server restarted, a network cut) means the
database is unavailable for a while. A conflict (a deadlock, a lock wait timeout, a
serialization failure, SQLite's "database is locked") means the database is fine and this
transaction lost a race with another one: it was rolled back and is simply run again. Both are
retried; they are told apart in the logs, since only the first calls for an operator.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .errors import StoreUnavailable

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

# MySQL/MariaDB error numbers and PostgreSQL SQLSTATEs of a transaction that lost a conflict.
_MYSQL_CONFLICTS = {1213: "deadlock", 1205: "lock wait timeout"}
_POSTGRES_CONFLICTS = {
    "40P01": "deadlock",
    "40001": "serialization failure",
    "55P03": "lock not available",
}


def conflict(error: BaseException) -> str | None:
    """What kind of transaction conflict ``error`` is (``"deadlock"``, ...), or None."""
    if not isinstance(error, DBAPIError):
        return None
    original = error.orig
    number = original.args[0] if original is not None and original.args else None
    if isinstance(number, int) and number in _MYSQL_CONFLICTS:  # before its SQLSTATE 40001
        return _MYSQL_CONFLICTS[number]
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state in _POSTGRES_CONFLICTS:
        return _POSTGRES_CONFLICTS[state]
    if isinstance(original, sqlite3.OperationalError) and "is locked" in str(original):
        return "database locked"
    return None


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the database went away, not that the query was wrong, nor
    that the transaction lost a conflict (see :func:`conflict`)."""
    if conflict(error) is not None:
        return False
    if isinstance(error, StoreUnavailable | OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def is_transient(error: BaseException) -> bool:
    """Worth running again: a lost connection or a transaction conflict."""
    return conflict(error) is not None or is_connection_error(error)


def describe(error: BaseException) -> str:
    """A short log text for a transient error: which kind, and the server's first line."""
    first_line = (str(error).splitlines() or [""])[0][:200]
    kind = conflict(error)
    if kind is not None:
        return f"transaction conflict ({kind}: {first_line}); running it again"
    return f"database unavailable ({type(error).__name__}: {first_line})"


class Backoff:
    """Delays 0.1 s, 0.2 s, 0.4 s ... capped at ``cap`` seconds; reset after a success."""

    def __init__(self, first: float = 0.1, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        delay: float = min(self.first * (2.0**self.failures), self.cap)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def retry_while_unavailable(
    action: Callable[[], T], give_up_after: float, stop: threading.Event | None = None
) -> T:
    """Run ``action``, retrying transient errors with back-off for ``give_up_after`` seconds."""
    backoff = Backoff()
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            return action()
        except Exception as error:
            if not is_transient(error) or time.monotonic() >= deadline:
                raise
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.1f s", describe(error), delay)
            (stop or threading.Event()).wait(delay)
