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
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import AlreadyRunning
from .urls import masked_url

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor")

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
def command_lock(
    app: Conveyor,
    name: str,
    single_id: str = DEFAULT_SINGLE_ID,
    *,
    on_lost: Callable[[str], None] | None = None,
    check_every: float = 5.0,
) -> Iterator[None]:
    """Hold the lock of command ``name`` (instance ``single_id``) on the app's store.

    Raises :class:`~conveyor.errors.AlreadyRunning` at once when another process (or
    another thread of this one) holds it; never waits. A lock held by a database session
    (PostgreSQL, MariaDB) is checked every ``check_every`` seconds: when its session was cut,
    it is taken again, and when another instance took it meanwhile, ``on_lost`` is called with
    the reason (the command should stop).
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
    elif dialect in ("postgresql", "mysql", "mariadb"):
        acquire, release = _POSTGRES if dialect == "postgresql" else _MYSQL
        if dialect != "postgresql":
            # GET_LOCK names are server-wide and at most 64 characters: include the database.
            key = f"{engine.url.database}:{key}"
            if len(key) > 64:
                key = f"conveyor:{hashlib.sha256(key.encode()).hexdigest()[:48]}"
        description = f"`conveyor {name}` with single-id {single_id!r}"
        with _session_lock(engine, acquire, release, key, busy, description, on_lost, check_every):
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


class _Keeper:
    """Watches a lock held by a database session, which the server releases when the session
    ends: a cut connection (a restarted server, a proxy, ``pg_terminate_backend``) silently
    frees it for another instance. Every ``interval`` seconds the keeper checks the session;
    when it is gone it takes the lock again on a new one, and when another instance was
    faster it calls ``on_lost`` (a worker stops: two instances of one single-id must not
    run)."""

    def __init__(
        self,
        engine: Any,
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
        self._connection: Any = None
        self._guard = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.retaken = 0  # times the lock was taken again after its session was lost

    def take(self) -> bool:
        """Take the lock on a new session; False when another session holds it."""
        from sqlalchemy import text

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
        from sqlalchemy import text

        while not self._stopped.wait(self._interval):
            try:
                with self._guard:
                    self._connection.execute(text("SELECT 1")).scalar()
                    self._connection.commit()
                continue
            except Exception as error:
                lost = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            with self._guard:
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
        from sqlalchemy import text

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


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        log.debug("closing a lock connection failed", exc_info=True)


@contextmanager
def _session_lock(
    engine: Any,
    acquire: str,
    release: str,
    key: str,
    busy: str,
    description: str,
    on_lost: Callable[[str], None] | None,
    interval: float,
) -> Iterator[None]:
    keeper = _Keeper(engine, acquire, release, key, description, on_lost, interval)
    if not keeper.take():
        raise AlreadyRunning(busy)
    keeper.start()
    try:
        yield
    finally:
        keeper.stop()


_POSTGRES = (
    "SELECT pg_try_advisory_lock(hashtext(:key))",
    "SELECT pg_advisory_unlock(hashtext(:key))",
)
_MYSQL = ("SELECT GET_LOCK(:key, 0)", "SELECT RELEASE_LOCK(:key)")
