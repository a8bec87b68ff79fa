"""The SQL store's locks: command locks held by the database, and named expiring locks.

A command lock is held by something released when the process dies:

- SQLite file: ``flock`` on ``<database>.<command>.<single-id>.lock`` next to the database.
- PostgreSQL: a session-level ``pg_try_advisory_lock(hashtext(name))`` on a connection of
  its own, kept open while the command runs.
- MariaDB/MySQL: ``GET_LOCK(name, 0)`` on a connection of its own.
- In-memory SQLite lives in one process: a lock in this process.

A named expiring lock (``Store.acquire_lock``) is a row of the ``<prefix>bus_locks`` table
(schema version 4): taking it inserts the row in its own transaction (the primary key refuses a
second holder), releasing deletes it, and a row whose expiry has passed (its holder died) may
be taken over.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, Table, delete, insert, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ...clock import to_ms
from ...errors import AlreadyRunning
from ..locking import file_lock, lock_name, process_lock, safe_file_part

log = logging.getLogger("conveyor")

_POSTGRES = (
    "SELECT pg_try_advisory_lock(hashtext(:key))",
    "SELECT pg_advisory_unlock(hashtext(:key))",
)
_MYSQL = ("SELECT GET_LOCK(:key, 0)", "SELECT RELEASE_LOCK(:key)")


# -- named, expiring locks --------------------------------------------------------------------


def acquire_named(
    engine: Engine, table: Table, name: str, now: datetime, expires_at: datetime
) -> str | None:
    """Insert the lock's row (after deleting an expired one); None when another holds it."""
    name = lock_name(name)
    moment = to_ms(now)
    token = uuid.uuid4().hex
    t = table
    try:
        with engine.begin() as connection:
            connection.execute(delete(t).where(t.c.name == name, t.c.expires_at <= moment))
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(t).values(name=name, owner=token, expires_at=to_ms(expires_at))
                    )
            except IntegrityError:
                return None
    except OperationalError as error:
        if "deadlock" in str(error.orig).lower():
            return None  # MariaDB picked this taker as the victim: someone else holds it
        raise
    return token


def release_named(engine: Engine, table: Table, name: str, token: str) -> None:
    t = table
    with engine.begin() as connection:
        connection.execute(delete(t).where(t.c.name == lock_name(name), t.c.owner == token))


# -- command locks ----------------------------------------------------------------------------


@contextmanager
def command_lock(
    engine: Engine,
    location: str,
    prefix: str,
    command: str,
    single_id: str,
    busy: str,
    on_lost: Callable[[str], None] | None,
    check_every: float,
) -> Iterator[None]:
    """Hold the lock of ``command`` (instance ``single_id``) on the database of ``engine``."""
    dialect = engine.dialect.name
    key = f"conveyor:{prefix}{command}:{single_id}"
    if dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or "mode=memory" in str(engine.url):
            with process_lock(f"{location}|{key}", busy):
                yield
            return
        path = f"{os.path.abspath(database)}.{safe_file_part(command)}"
        with file_lock(f"{path}.{safe_file_part(single_id)}.lock", busy):
            yield
    elif dialect in ("postgresql", "mysql", "mariadb"):
        acquire, release = _POSTGRES if dialect == "postgresql" else _MYSQL
        if dialect != "postgresql":
            # GET_LOCK names are server-wide and at most 64 characters: include the database.
            key = f"{engine.url.database}:{key}"
            if len(key) > 64:
                key = f"conveyor:{hashlib.sha256(key.encode()).hexdigest()[:48]}"
        description = f"`conveyor {command}` with single-id {single_id!r}"
        keeper = _Keeper(engine, acquire, release, key, description, on_lost, check_every)
        if not keeper.take():
            raise AlreadyRunning(busy)
        keeper.start()
        try:
            yield
        finally:
            keeper.stop()
    else:
        digest = hashlib.sha256(f"{location}|{key}".encode()).hexdigest()[:16]
        name = f"conveyor-{digest}.{safe_file_part(command)}.lock"
        with file_lock(os.path.join(tempfile.gettempdir(), name), busy):
            yield


class _Keeper:
    """Watches a lock held by a database session, which the server releases when the session
    ends: a cut connection (a restarted server, a proxy, ``pg_terminate_backend``) silently
    frees it for another instance. Every ``interval`` seconds the keeper checks the session;
    when it is gone it takes the lock again on a new one, and when another instance was
    faster it calls ``on_lost`` (a worker stops: two instances of one single-id must not
    run)."""

    def __init__(
        self,
        engine: Engine,
        acquire: str,
        release: str,
        key: str,
        description: str,
        on_lost: Callable[[str], None] | None,
        interval: float,
    ) -> None:
        self._engine = engine
        self._acquire = acquire
        self._release = release
        self._key = key
        self._description = description
        self._on_lost = on_lost
        self._interval = interval
        self._connection: Connection | None = None
        self._guard = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.retaken = 0  # times the lock was taken again after its session was lost

    def take(self) -> bool:
        """Take the lock on a new session; False when another session holds it."""
        connection = self._engine.connect()
        try:
            held = connection.execute(text(self._acquire), {"key": self._key}).scalar()
            connection.commit()
        except Exception:
            _close_quietly(connection)
            raise
        if held not in (True, 1):
            _close_quietly(connection)
            return False
        with self._guard:
            self._connection = connection
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="conveyor-lock", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                with self._guard:
                    if self._connection is None:
                        return  # stopped meanwhile
                    self._connection.execute(text("SELECT 1")).scalar()
                    self._connection.commit()
                continue
            except Exception as error:
                lost = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            with self._guard:
                if self._connection is not None:
                    _close_quietly(self._connection)
            try:
                retaken = self.take()
            except Exception as error:  # the database is away: look again at the next turn
                log.warning(
                    "the %s lost its database session (%s) and cannot take its lock again yet "
                    "(%s); retrying",
                    self._description,
                    lost,
                    str(error).splitlines()[0][:200],
                )
                continue
            if retaken:
                self.retaken += 1
                log.warning(
                    "the %s lost its database session (%s); it took its lock again",
                    self._description,
                    lost,
                )
                continue
            message = (
                f"the {self._description} lost its lock with its database session ({lost}), and "
                "another instance holds it now; stopping, so that only one runs"
            )
            log.error("%s", message)
            if self._on_lost is not None:
                self._on_lost(message)
            return

    def stop(self) -> None:
        """Stop watching and release the lock; a session already gone released it anyway."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._guard:
            connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(text(self._release), {"key": self._key})
            connection.commit()
        except Exception:
            log.debug("releasing the %s lock failed; its session is gone", self._description)
        finally:
            _close_quietly(connection)


def _close_quietly(connection: Connection) -> None:
    try:
        connection.close()
    except Exception:
        log.debug("closing a lock connection failed", exc_info=True)
