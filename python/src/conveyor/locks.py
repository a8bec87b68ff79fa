"""Command locks: a command that must not run twice at once over one store holds one.

A lock is named by the command, a *single id* (``default`` unless several named instances
should run side by side) and the store it works on. It is held by something the operating
system or the database server releases when the process dies, so a crashed process never
leaves a stale lock behind (unlike a PID file):

- SQLite file: ``fcntl.flock`` on ``<database>.<command>.<single-id>.lock`` next to the
  database file (``msvcrt.locking`` on Windows).
- PostgreSQL: a session-level ``pg_try_advisory_lock(hashtext(name))`` on a dedicated
  connection kept open while the command runs.
- MariaDB/MySQL: ``GET_LOCK(name, 0)`` on a dedicated connection.
- In-memory stores (``memory://``, ``sqlite://``) live in one process: a process-local lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import AlreadyRunning
from .urls import masked_url

if TYPE_CHECKING:
    from .app import Conveyor

DEFAULT_SINGLE_ID = "default"

_held_in_process: set[str] = set()
_held_guard = threading.Lock()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def store_location(app: Conveyor) -> str:
    """The store the app works on, as a URL safe to print (password masked)."""
    store: Any = app.store
    shown = getattr(store, "display_url", None)
    return str(shown) if shown else masked_url(app.url)


@contextmanager
def command_lock(app: Conveyor, name: str, single_id: str = DEFAULT_SINGLE_ID) -> Iterator[None]:
    """Hold the lock of command ``name`` (instance ``single_id``) on the app's store.

    Raises :class:`~conveyor.errors.AlreadyRunning` at once when another process (or
    another thread of this one) holds it; never waits.
    """
    location = store_location(app)
    busy = (
        f"another `conveyor {name}` with single-id {single_id!r} is running on {location}; "
        "wait for it to stop, or pass --single-id to run several"
    )
    store: Any = app.store
    engine = getattr(store, "engine", None)
    if engine is None:
        key = f"{location}|{app.table_prefix}|{name}|{single_id}"
        with _process_lock(key, busy):
            yield
        return
    dialect = engine.dialect.name
    key = f"conveyor:{app.table_prefix}{name}:{single_id}"
    if dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or "mode=memory" in str(engine.url):
            with _process_lock(f"{location}|{key}", busy):
                yield
            return
        path = f"{os.path.abspath(database)}.{_safe(name)}.{_safe(single_id)}.lock"
        with _file_lock(path, busy):
            yield
    elif dialect == "postgresql":
        with _postgres_lock(engine, key, busy):
            yield
    elif dialect in ("mysql", "mariadb"):
        # GET_LOCK names are server-wide and at most 64 characters: include the database.
        full = f"{engine.url.database}:{key}"
        if len(full) > 64:
            full = f"conveyor:{hashlib.sha256(full.encode()).hexdigest()[:48]}"
        with _mysql_lock(engine, full, busy):
            yield
    else:
        digest = hashlib.sha256(f"{location}|{key}".encode()).hexdigest()[:16]
        import tempfile

        path = os.path.join(tempfile.gettempdir(), f"conveyor-{digest}.{_safe(name)}.lock")
        with _file_lock(path, busy):
            yield


@contextmanager
def _process_lock(key: str, busy: str) -> Iterator[None]:
    with _held_guard:
        if key in _held_in_process:
            raise AlreadyRunning(busy)
        _held_in_process.add(key)
    try:
        yield
    finally:
        with _held_guard:
            _held_in_process.discard(key)


def _try_lock_file(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock_file(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def _file_lock(path: str, busy: str) -> Iterator[None]:
    # The file stays in place: deleting it would let a third process lock a new inode
    # while a second one still holds the old one. It holds the holder's pid, for messages.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock_file(fd):
            holder = _read_pid(fd)
            raise AlreadyRunning(f"{busy} (pid {holder}, lock file {path})" if holder else busy)
        try:
            _write_pid(fd, f"{os.getpid()}\n")
            yield
        finally:
            _write_pid(fd, "")
            _unlock_file(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str:
    if sys.platform == "win32":
        return ""  # the locked byte cannot be read on Windows
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip()


def _write_pid(fd: int, text: str) -> None:
    if sys.platform != "win32":
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("ascii"), 0)


@contextmanager
def _postgres_lock(engine: Any, key: str, busy: str) -> Iterator[None]:
    from sqlalchemy import text

    with engine.connect() as connection:
        acquired = connection.execute(
            text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key}
        ).scalar()
        connection.commit()
        if not acquired:
            raise AlreadyRunning(busy)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
            connection.commit()


@contextmanager
def _mysql_lock(engine: Any, key: str, busy: str) -> Iterator[None]:
    from sqlalchemy import text

    with engine.connect() as connection:
        acquired = connection.execute(text("SELECT GET_LOCK(:key, 0)"), {"key": key}).scalar()
        connection.commit()
        if acquired != 1:
            raise AlreadyRunning(busy)
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:key)"), {"key": key})
            connection.commit()
