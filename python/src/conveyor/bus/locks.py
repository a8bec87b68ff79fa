"""Named locks with an expiry, kept in the Conveyor store so they hold across processes.

Used by :class:`~conveyor.bus.WithoutOverlapping`. :class:`StoreLocks` keeps them in an app's
store (:meth:`~conveyor.store.base.Store.acquire_lock`): on a SQL store a lock is a row of
the ``<prefix>bus_locks`` table, so a second holder is refused by its primary key and a lock
whose expiry has passed (its holder died) may be taken over; on the memory store the locks
live in the process, shared by every app on that store. :class:`MemoryLocks` are the same
locks in one process, without a store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..store.locking import ExpiringLocks

if TYPE_CHECKING:
    from ..app import Conveyor


class Locks(Protocol):
    """Named locks: ``acquire`` returns a token (None when held), ``release`` frees it."""

    def acquire(self, name: str, expires_after: timedelta) -> str | None: ...

    def release(self, name: str, token: str) -> None: ...


class MemoryLocks:
    """Locks in this process, with expiry read from a clock."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._locks = ExpiringLocks()

    def acquire(self, name: str, expires_after: timedelta) -> str | None:
        moment = self._now()
        return self._locks.acquire(name, moment, moment + expires_after)

    def release(self, name: str, token: str) -> None:
        self._locks.release(name, token)


class StoreLocks:
    """Locks in an app's store, with expiry read from the app's clock; nothing is opened
    before the first ``acquire``."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app

    def acquire(self, name: str, expires_after: timedelta) -> str | None:
        moment = self.app.now()
        return self.app.store.acquire_lock(name, moment, moment + expires_after)

    def release(self, name: str, token: str) -> None:
        self.app.store.release_lock(name, token)
