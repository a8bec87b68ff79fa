"""SQLAlchemy connections over the DB-API connection Django already holds.

Conveyor's store writes through SQLAlchemy; Django's transaction lives on Django's own
DB-API connection. An engine whose pool hands out that connection (never closing,
committing or rolling it back) lets the store's unchanged statements run in Django's
transaction, so Django alone decides whether the job is committed.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool


class Borrowed:
    """Django's DB-API connection, with the calls that would end its transaction or the
    connection made no-ops: only Django commits, rolls back or closes it."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def commit(self) -> None:
        """Django commits (at the end of its atomic block, or at once in autocommit)."""

    def rollback(self) -> None:
        """Django rolls back; SQLAlchemy's rollback on returning the connection is not one."""

    def close(self) -> None:
        """Django closes its own connection."""


@functools.cache
def borrowed_engine(alias: str, drivername: str) -> Engine:
    """An engine whose connections are Django's connection of ``alias`` in this thread."""

    def creator() -> Borrowed:
        from django.db import connections

        django_connection = connections[alias]
        django_connection.ensure_connection()
        return Borrowed(django_connection.connection)

    # psycopg's type lookups insist on a real Connection; the store uses no hstore.
    extra: dict[str, Any] = (
        {"use_native_hstore": False} if drivername.startswith("postgresql") else {}
    )
    return create_engine(
        f"{drivername}://",
        creator=creator,
        poolclass=NullPool,
        pool_reset_on_return=None,
        **extra,
    )
