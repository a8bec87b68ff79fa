"""What differs between SQLite, PostgreSQL and MariaDB/MySQL, in one place."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, event, text
from sqlalchemy.engine import URL


@dataclass(frozen=True)
class Dialect:
    name: str
    skip_locked: bool
    lock_of_supported: bool

    @classmethod
    def of(cls, engine: Engine) -> Dialect:
        name = engine.dialect.name
        if name == "postgresql":
            return cls(name, skip_locked=True, lock_of_supported=True)
        if name in ("mysql", "mariadb"):
            return cls(name, skip_locked=True, lock_of_supported=False)
        return cls(name, skip_locked=False, lock_of_supported=False)


def upsert_adding(dialect: Dialect, table: Table, name: str, queue: str, count: int) -> Any:
    """INSERT the counter row (name, queue) at ``count``, or add ``count`` to its value: one
    statement on every database, so two first counts at once cannot collide."""
    values = {"name": name, "queue": queue, "value": count}
    added = {"value": table.c.value + count}
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (
            pg_insert(table)
            .values(values)
            .on_conflict_do_update(index_elements=[table.c.name, table.c.queue], set_=added)
        )
    if dialect.name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(table).values(values).on_duplicate_key_update(added)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (
        sqlite_insert(table)
        .values(values)
        .on_conflict_do_update(index_elements=[table.c.name, table.c.queue], set_=added)
    )


def _enable_wal(cursor: Any, attempts: int = 60) -> None:
    """Switch a database file to WAL. The switch needs the file to itself, and SQLite reports
    "database is locked" at once, without waiting, when several processes open a new file
    together; so try again, briefly, until one of them has made the change."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(min(0.005 * 2**attempt, 0.25))
        else:
            return


def configure_sqlite(engine: Engine, synchronous: str) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE so writers queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_postgresql(engine: Engine) -> None:
    """Generic plans and no JIT for the statements Conveyor prepares, on its own connections.

    psycopg prepares a statement after a few executions; PostgreSQL then keeps planning it
    afresh whenever its estimate for a parameterised LIMIT or moment looks worse than a
    custom plan's, which for the claim query costs more than executing it. Every parameter
    Conveyor binds (ids, moments, limits, queue names) leaves the best plan unchanged, so
    its own connections skip that re-planning (PostgreSQL 12 and later).

    The generic plan of the claim, its LIMIT unknown, is costed over the whole table: past a
    few tens of thousands of rows that is above ``jit_above_cost``, and with ``jit = on`` (the
    default wherever the server has LLVM) each claim would spend 70-130 ms compiling a query
    that runs in a fraction of a millisecond. Conveyor's statements are all short index
    probes, which JIT never speeds up. Engines passed in by the caller are left as they are
    (see :func:`local_settings`).
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        version = dbapi_connection.info.server_version
        with dbapi_connection.cursor() as cursor:
            if version >= 110000:
                cursor.execute("SET jit = off")
            if version >= 120000:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
        dbapi_connection.commit()


def local_settings(connection: Connection, dialect: Dialect) -> None:
    """On a caller's engine, turn JIT off for the current transaction only (``SET LOCAL``):
    the setting ends with Conveyor's transaction, so the caller's own sessions keep theirs.
    One statement per transaction, paid only on engines Conveyor did not make."""
    if dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL jit = off")


class PostgresListener:
    """A dedicated autocommit connection sleeping on LISTEN, woken by NOTIFY on publish."""

    def __init__(self, url: URL, channel: str) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._channel = channel
        self._connection: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def wait(self, timeout: float, ready: Callable[[], None] | None) -> bool:
        """True when a notification arrived within ``timeout`` seconds."""
        import psycopg

        with self._lock:  # never (re)connect once closed: nothing would close it again
            closed = self._closed
            if not closed and (self._connection is None or self._connection.closed):
                self._connection = psycopg.connect(self._conninfo, autocommit=True)
                self._connection.execute(f'LISTEN "{self._channel}"')
            connection = self._connection
        if ready is not None:
            ready()
        if closed:
            time.sleep(timeout)  # the store was closed: poll, as a store without LISTEN does
            return False
        notified = False
        for _ in connection.notifies(timeout=timeout, stop_after=1):
            notified = True
        # Drain what else arrived, so one burst of publishes wakes the worker once.
        for _ in connection.notifies(timeout=0):
            notified = True
        return notified

    def reset(self) -> None:
        """Drop a broken connection; the next wait connects again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def notify_channel(prefix_table: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in prefix_table)[:63]


def ended_channel(prefix_table: str) -> str:
    """The channel on which PostgreSQL announces jobs that reached a terminal state."""
    return notify_channel(f"{prefix_table[:50]}_ended")


# The ends channel's watchers: each holds a shared advisory lock, (this class, hashtext of the
# channel), while it watches. A transaction that ends jobs sends its NOTIFY only when it cannot
# take that lock exclusively (pg_try_advisory_xact_lock, held to its commit): when somebody
# watches, or another such transaction is committing. A NOTIFY takes a lock that serialises
# the commits of every transaction that notifies (publishes, in the same database), so
# announcing ends nobody waits for slowed workers and publishers alike.
END_WATCH_LOCK_CLASS = 0x436F6E76


def end_watch_key_sql(channel: str) -> str:
    """The advisory lock key of the ends channel ``channel`` (an SQL expression): the two
    arguments every lock function of the watch protocol takes."""
    return f"{END_WATCH_LOCK_CLASS}, hashtext({channel})"


def ends_unwatched_sql(channel: str) -> str:
    """True when nobody watches the ends channel ``channel`` (an SQL expression); the
    transaction then holds the watchers' lock to its commit."""
    return f"pg_try_advisory_xact_lock({end_watch_key_sql(channel)})"


def end_notice_sql(channel: str, notice: str) -> str:
    """A SQL expression that NOTIFYs ``notice`` (an expression) on the ends channel
    ``channel`` (an expression) unless nobody watches it."""
    return (
        f"CASE WHEN {ends_unwatched_sql(channel)} THEN NULL ELSE pg_notify({channel}, {notice}) END"
    )


class EndWatchBlocked(Exception):
    """The watch could not take its shared lock in time: a transaction that ended jobs holds
    the lock exclusively and has not committed. The message names the sessions holding it."""


class EndWatch:
    """LISTEN on the ends channel for one job, on a connection of its own for the watch.

    Listening starts before the caller first reads the job, so an end committed in between
    is never missed: the caller reads, then waits, then reads again. The watch then takes its
    shared lock (END_WATCH_LOCK_CLASS): a transaction that ends jobs and found nobody
    watching holds the lock exclusively until it commits, so the caller's first read, made
    after that, sees what it wrote. A transaction left open after it ended jobs (a caller's
    own, idle in transaction) would hold every new watch up: the wait for the lock is bounded
    by ``lock_timeout`` seconds (at most LOCK_TIMEOUT), then EndWatchBlocked names the holder.
    """

    LOCK_TIMEOUT = 5.0  # seconds a watch may wait to register; the caller then polls

    def __init__(
        self, url: URL, channel: str, job_id: str, lock_timeout: float | None = None
    ) -> None:
        import psycopg

        limit = self.LOCK_TIMEOUT if lock_timeout is None else min(lock_timeout, self.LOCK_TIMEOUT)
        limit_ms = max(1, int(limit * 1000))
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection = psycopg.connect(conninfo, autocommit=True)
        try:
            self._connection.execute(f'LISTEN "{channel}"')
            self._connection.execute(f"SET lock_timeout = {limit_ms}")
            try:
                self._connection.execute(
                    f"SELECT pg_advisory_lock_shared({end_watch_key_sql('%s')})", (channel,)
                )
            except psycopg.errors.LockNotAvailable:
                raise EndWatchBlocked(self._blocked(channel, limit_ms)) from None
        except BaseException:
            self._connection.close()
            raise
        self._job_id = job_id

    def _blocked(self, channel: str, waited_ms: int) -> str:
        """Why the lock could not be taken: the sessions holding it exclusively, as
        pg_stat_activity shows them (no query text: it may hold payloads); a role that may
        not read them gets the message without them."""
        import psycopg

        try:
            rows = self._connection.execute(
                "SELECT a.pid, a.application_name, a.state, "
                "extract(epoch FROM now() - a.xact_start)::float8 "
                "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' "
                "AND l.objsubid = 2 AND l.classid = %s::bigint::oid "
                "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid",
                (END_WATCH_LOCK_CLASS, channel),
            ).fetchall()
        except psycopg.Error:
            rows = []
        holders = ", ".join(
            f"session {pid} (application {name or '-'!r}, {state or 'state unknown'}, "
            f"its transaction open {opened or 0.0:.1f} s)"
            for pid, name, state, opened in rows
        )
        return (
            f"the ends channel's lock was held for more than {waited_ms} ms by "
            f"{holders or 'another session (committed since, or not visible to this role)'}: "
            "a transaction that ends "
            "jobs holds it until it commits; commit such transactions promptly, or end the "
            "idle session"
        )

    def wait(self, timeout: float) -> bool:
        """True as soon as the job's end is announced within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for notice in self._connection.notifies(timeout=left, stop_after=1):
                if self._job_id in notice.payload.split(","):
                    return True
        return False

    def close(self) -> None:
        self._connection.close()  # the session's end releases its shared lock


def masked(url: URL) -> str:
    """The URL with its password hidden: safe for logs and error messages."""
    return url.render_as_string(hide_password=True)


@contextmanager
def schema_transaction(connection: Connection, dialect: Dialect, name: str) -> Iterator[None]:
    """A transaction for schema changes, serialised between processes starting at once.

    The lock outlives the commit: PostgreSQL's transaction-level advisory lock is released
    by the commit itself; MariaDB's GET_LOCK is taken before the transaction and released
    after it, so a second process cannot read the version before the first one committed.
    SQLite needs nothing more: BEGIN IMMEDIATE already excludes other writers.
    """
    if dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SELECT GET_LOCK(:name, 60)"), {"name": name})
        connection.commit()
        try:
            with connection.begin():
                yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            connection.commit()
        return
    with connection.begin():
        if dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name}
            )
        yield
