"""The holders of unique keys in SQL (UKEY-003, UKEY-004): one row per key in
``<prefix>unique_claims``.

A publish first makes sure the key's row exists and locks it, in one upsert statement: the
primary key makes concurrent publishes of one key queue on that row, so the decision that
follows (held or free) cannot race. An upsert takes the row's exclusive lock at once, where
a plain INSERT that fails on the duplicate would take a shared lock first, and two such
publishes would deadlock upgrading it. SQLite has one writer at a time and needs no lock.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, Table, delete, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ...clock import from_ms, to_ms
from ..base import UniqueClaim


def lock_claim(connection: Connection, table: Table, dialect: str, key: str) -> UniqueClaim:
    """The key's claim, its row created free when missing and locked until the end of the
    transaction."""
    values = {"unique_key": key, "job_id": None, "expires_at": None, "states": "[]"}
    if dialect == "postgresql":
        connection.execute(
            postgresql.insert(table)
            .values(values)
            .on_conflict_do_update(index_elements=[table.c.unique_key], set_={"unique_key": key})
        )
    elif dialect in ("mysql", "mariadb"):
        connection.execute(
            mysql.insert(table).values(values).on_duplicate_key_update(unique_key=key)
        )
    else:
        connection.execute(sqlite.insert(table).values(values).on_conflict_do_nothing())
    row = (
        connection.execute(select(table).where(table.c.unique_key == key).with_for_update())
        .mappings()
        .one()
    )
    return UniqueClaim(
        key=key,
        job_id=None if row["job_id"] is None else str(row["job_id"]),
        expires_at=None if row["expires_at"] is None else from_ms(row["expires_at"]),
        states=frozenset(json.loads(row["states"])),
    )


def hold_claim(connection: Connection, table: Table, claim: UniqueClaim) -> None:
    """Make ``claim.job_id`` the holder of the key (its row is locked by :func:`lock_claim`)."""
    connection.execute(
        update(table)
        .where(table.c.unique_key == claim.key)
        .values(
            job_id=None if claim.job_id is None else int(claim.job_id),
            expires_at=None if claim.expires_at is None else to_ms(claim.expires_at),
            states=json.dumps(sorted(claim.states)),
        )
    )


def forget_expired(connection: Connection, table: Table, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` claims expired by ``now``; a publish holding one's row lock
    makes the delete wait and look again, so a claim just taken over stays."""
    expired = table.c.expires_at <= to_ms(now)
    keys = connection.execute(select(table.c.unique_key).where(expired).limit(limit)).scalars()
    found = list(keys)
    if not found:
        return 0
    statement = delete(table).where(table.c.unique_key.in_(found), expired)
    return int(connection.execute(statement).rowcount)
