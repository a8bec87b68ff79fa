"""Riding out a lost database connection: retry with capped exponential back-off."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .errors import StoreUnavailable

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the database went away, not that the query was wrong."""
    if isinstance(error, StoreUnavailable | OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


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
    """Run ``action``, retrying connection errors with back-off for ``give_up_after`` seconds."""
    backoff = Backoff()
    deadline = time.monotonic() + give_up_after
    while True:
        try:
            return action()
        except Exception as error:
            if not is_connection_error(error) or time.monotonic() >= deadline:
                raise
            delay = backoff.next_delay()
            log.warning(
                "database unavailable (%s); retrying in %.1f s", type(error).__name__, delay
            )
            (stop or threading.Event()).wait(delay)
