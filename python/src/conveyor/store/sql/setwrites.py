"""Many conditional writes of one shape as one statement (PostgreSQL).

A worker writes a batch of claims, and a batch of outcomes, where each job's write has the
same shape (the same columns, leased or not). Run as one ``UPDATE`` per job, even pipelined
by psycopg, each costs the server a statement and the driver its per-statement Python. Here
the new values and the conditions travel as one JSON document (encoded by the standard
library's C encoder: psycopg's array adaptation escapes each element in Python, which cost
more than the statements it saved) and a single ``UPDATE ... FROM json_to_recordset(...)``
writes every row, under exactly the conditions of the single
write (:meth:`ClaimStatements.update_statement`): the id, the state, the fencing token and
the lease expiry (and, leased, the cancel request) the change was computed from. The rows it
changed are counted as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, String, Table

from .dialects import end_notice_sql

# The key of each condition's array, and the column it is compared with.
_CONDITIONS = (("w_id", "id"), ("w_state", "state"), ("w_token", "lease_token"))


def _sql_type(column: Any) -> str:
    """The PostgreSQL type a column's values are read as from the document."""
    kind = column.type
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, BigInteger):
        return "bigint"
    if isinstance(kind, Integer):
        return "integer"
    if isinstance(kind, String):  # Text and labels too
        return "text"
    raise TypeError(f"no record type for column {column.name} of type {kind!r}")


class SetWrites:
    """The text of each write shape, built once, and its one parameter."""

    def __init__(self, table: Table, quote: Any, table_name: str, dependencies_name: str) -> None:
        self.table = table
        self.quote = quote  # the dialect's identifier quoting
        self.table_name = table_name  # quoted, schema-qualified when it has a schema
        self.dependencies_name = dependencies_name  # the dependencies table, likewise
        self._statements: dict[tuple[frozenset[str], bool], tuple[str, tuple[str, ...]]] = {}

    def statement(self, columns: frozenset[str], unleased: bool) -> tuple[str, tuple[str, ...]]:
        """(SQL, the keys of each record) of one shape."""
        found = self._statements.get((columns, unleased))
        if found is None:
            found = self._statements[columns, unleased] = self._build(columns, unleased)
        return found

    def _build(self, columns: frozenset[str], unleased: bool) -> tuple[str, tuple[str, ...]]:
        t, q, c = self.table_name, self.quote, self.table.c
        conditions = (
            list(_CONDITIONS)
            if unleased
            else [
                *_CONDITIONS,
                ("w_expires", "lease_expires_at"),
                ("w_cancel", "cancel_requested_at"),
            ]
        )
        keys = [key for key, _ in conditions] + [f"set_{name}" for name in sorted(columns)]
        types = [_sql_type(c[column]) for _, column in conditions] + [
            _sql_type(c[name]) for name in sorted(columns)
        ]
        record = ", ".join(f"{q(key)} {kind}" for key, kind in zip(keys, types, strict=True))
        sets = ", ".join(f"{q(name)} = v.{q('set_' + name)}" for name in sorted(columns))
        where = [
            # The ids again, as an array: the planner then reaches the rows through the
            # primary key whatever it estimates of the table. Without it, a table with no
            # statistics yet (new, or truncated) looks nearly empty once the lease condition
            # is applied, and a generic plan made then scans the whole table per batch.
            f"{t}.{q('id')} = ANY(%(ids)s::bigint[])",
            f"{t}.{q('id')} = v.{q('w_id')}",
            # as in the single write: ``state || ''`` keeps the state indexes out of the plan,
            # so each record is found by the primary key
            f"{t}.{q('state')} || '' = v.{q('w_state')}",
            f"{t}.{q('lease_token')} = v.{q('w_token')}",
            f"{t}.{q('lease_expires_at')} IS NULL"
            if unleased
            # ``+ 0`` likewise: joined to the records, a probe of the lease index by expiry
            # would match every job of a batch (claimed at one moment, one expiry)
            else f"{t}.{q('lease_expires_at')} + 0 = v.{q('w_expires')}",
        ]
        if not unleased:
            where.append(f"{t}.{q('cancel_requested_at')} IS NOT DISTINCT FROM v.{q('w_cancel')}")
        sql = (
            f"UPDATE {t} SET {sets} FROM json_to_recordset(%(rows)s::json) AS v({record}) "
            f"WHERE {' AND '.join(where)}"
        )
        return sql, tuple(keys)

    def statement_with_notice(self, columns: frozenset[str], unleased: bool) -> str:
        """:meth:`statement` for jobs it ends: it also sends one NOTIFY (``%(channel)s``,
        ``%(notice)s``) and reads the ids of the written jobs' dependents (one probe of the
        dependencies' index per job, empty as a rule): the notice costs no statement of its
        own, nor does broker mode's lookup of dependents to hand over (BROKER-009). Its one
        row is (rows written, the notify's empty result, the dependents' ids)."""
        sql, _ = self.statement(columns, unleased)
        q, dependencies = self.quote, self.dependencies_name
        return (
            f"WITH written AS ({sql} RETURNING {self.table_name}.{q('id')}) "
            "SELECT (SELECT count(*) FROM written), "
            f"{end_notice_sql('%(channel)s', '%(notice)s')}, "
            f"ARRAY(SELECT DISTINCT d.{q('job_id')} FROM {dependencies} AS d "
            f"WHERE d.{q('depends_on_id')} IN (SELECT {q('id')} FROM written))"
        )

    @staticmethod
    def parameters(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The parameters: the rows' parameters (plain numbers, strings, booleans and nulls)
        as a JSON array of objects, and their ids as the text of an array."""
        return {
            "rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":")),
            "ids": "{" + ",".join(str(int(row["w_id"])) for row in rows) + "}",
        }
