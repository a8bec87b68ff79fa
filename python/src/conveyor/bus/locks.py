"""Named locks with an expiry, kept in the Conveyor store so they hold across processes.

Used by :class:`~conveyor.bus.WithoutOverlapping`. On a SQL store a lock is a row of the
``<prefix>bus_locks`` table (created on first use): taking a lock inserts the row in its
own transaction (the primary key refuses a second holder), releasing deletes it, and a
lock whose expiry has passed (its holder died) may be taken over. On the memory store the
locks live in the process, shared by every app on that store.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import BigInteger, Column, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from ..clock import to_ms
from ..errors import ConfigurationError
from ..store.memory import MemoryStore

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..app import Conveyor

MAX_NAME = 255


class Locks(Protocol):
    """Named locks: ``acquire`` returns a token (None when held), ``release`` frees it."""

    def acquire(self, name: str, expires_after: timedelta) -> str | None: ...

    def release(self, name: str, token: str) -> None: ...


def lock_name(name: str) -> str:
    """Names longer than a column holds are replaced by a digest of themselves."""
    if len(name) <= MAX_NAME:
        return name
    return "sha256:" + hashlib.sha256(name.encode("utf-8")).hexdigest()


class MemoryLocks:
    """Locks in this process, with expiry read from a clock."""

    def __init__(self, now: Any) -> None:
        self._now = now
        self._held: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str, expires_after: timedelta) -> str | None:
        moment: datetime = self._now()
        name = lock_name(name)
        with self._lock:
            held = self._held.get(name)
            if held is not None and held[1] > moment:
                return None
            token = uuid.uuid4().hex
            self._held[name] = (token, moment + expires_after)
            return token

    def release(self, name: str, token: str) -> None:
        name = lock_name(name)
        with self._lock:
            held = self._held.get(name)
            if held is not None and held[0] == token:
                del self._held[name]


class SqlLocks:
    """Locks as rows of ``<prefix>bus_locks``; safe between processes and hosts."""

    def __init__(self, engine: Engine, table_prefix: str, now: Any) -> None:
        self.engine = engine
        self.table = Table(
            f"{table_prefix}bus_locks",
            MetaData(),
            Column("name", String(MAX_NAME), primary_key=True),
            Column("owner", String(64), nullable=False),
            Column("expires_at", BigInteger, nullable=False),
        )
        self._now = now
        self._created = False
        self._create_lock = threading.Lock()

    def create(self) -> None:
        """Create the table if it does not exist; safe when processes start at once."""
        from ..store.sql.dialects import Dialect, schema_transaction

        with self._create_lock:
            if self._created:
                return
            dialect = Dialect.of(self.engine)
            with (
                self.engine.connect() as connection,
                schema_transaction(connection, dialect, f"{self.table.name}-schema"),
            ):
                self.table.create(connection, checkfirst=True)
            self._created = True

    def acquire(self, name: str, expires_after: timedelta) -> str | None:
        self.create()
        name = lock_name(name)
        now = to_ms(self._now())
        token = uuid.uuid4().hex
        t = self.table
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(t).where(t.c.name == name, t.c.expires_at <= now))
                try:
                    with connection.begin_nested():
                        connection.execute(
                            insert(t).values(
                                name=name,
                                owner=token,
                                expires_at=now + int(expires_after.total_seconds() * 1000),
                            )
                        )
                except IntegrityError:
                    return None
        except OperationalError as error:
            if "deadlock" in str(error.orig).lower():
                return None  # MariaDB picked this taker as the victim: someone else holds it
            raise
        return token

    def release(self, name: str, token: str) -> None:
        t = self.table
        with self.engine.begin() as connection:
            connection.execute(delete(t).where(t.c.name == lock_name(name), t.c.owner == token))


_memory_locks: weakref.WeakKeyDictionary[MemoryStore, MemoryLocks] = weakref.WeakKeyDictionary()
_memory_guard = threading.Lock()


class StoreLocks:
    """Locks in an app's store; nothing is opened before the first ``acquire``."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        self._backend: Locks | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> Locks:
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._open()
        return self._backend

    def _open(self) -> Locks:
        store = self.app.store
        engine = getattr(store, "engine", None)
        if engine is not None:
            return SqlLocks(engine, self.app.table_prefix, self.app.now)
        if isinstance(store, MemoryStore):
            with _memory_guard:
                locks = _memory_locks.get(store)
                if locks is None:
                    locks = _memory_locks[store] = MemoryLocks(self.app.now)
                return locks
        raise ConfigurationError(
            f"locks need a memory or SQL store, and this app's store is {type(store).__name__}; "
            "pass WithoutOverlapping a Locks implementation for it"
        )

    def acquire(self, name: str, expires_after: timedelta) -> str | None:
        return self.backend.acquire(name, expires_after)

    def release(self, name: str, token: str) -> None:
        self.backend.release(name, token)
