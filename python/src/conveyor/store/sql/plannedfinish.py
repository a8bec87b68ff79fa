"""A worker's successes of plain jobs on their last request without firing the machine per
job: the finish plan in SQL (PostgreSQL, one statement per batch).

Fired in Python, each outcome is run through the machine, and the columns it changed are
encoded and sent back. The success that finishes a plain job is the same transition every
time (``conveyor.finishplan``), so it is compiled here, once per plan and set of plain
fields written, into one ``UPDATE ... FROM json_to_recordset(...)`` that writes what the
machine would, on the rows where the machine would select it: the job in a state the
transition fires from, the report's token the lease's (the guard), and one request left,
in a state its event fires from. The reports carry only what the worker knows and the
machine does not: the id, the token, and the execution record, metadata and result.

The same statement sends the end notice of the jobs it finished (only while somebody
waits, as the set-based writes do) and reads their dependents' ids (broker mode hands
those over, BROKER-009). ``tests/test_planned_finishes.py`` checks, for random jobs and
reports, that the rows and jobs it leaves are those the machine leaves.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Table, text

from ...model import Job
from ..base import FinishPlan, StateSets
from .dialects import end_notice_sql
from .direct import Compiled, DirectStatements
from .plannedclaim import (
    SQLITE_RETURNING,
    Writes,
    effect_writes,
    postgres_requests,
    sqlite_request_field,
    sqlite_requests,
    state_names,
)
from .rows import field_columns
from .setwrites import _sql_type

NOTIFIED, DEPENDENTS = "fin_notified", "fin_dependents"
Reports = Sequence[tuple[Job, int, Mapping[str, Any]]]


class PlannedFinishes(Protocol):
    """A dialect's planned finish."""

    def run(
        self, connection: Connection, plan: FinishPlan, reports: Reports, at: int
    ) -> tuple[set[str], set[str] | None] | None:
        """The ids of the jobs written, and of their dependents where the statement read
        them (None: not read); None, having written nothing, when the plan has an effect
        without SQL here. Reports whose fields have no plain column are left out (the
        caller fires the machine on them)."""
        ...


def _records(reports: Reports) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Each report as a record of the statement's document (id, token, ``set_`` + each
    plain column), by the columns it sets (one statement each)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for known, token, fields in reports:
        values = field_columns(fields)
        if values is None:
            continue
        record = {"w_id": int(known.id), "w_token": token}
        record.update({f"set_{column}": value for column, value in values.items()})
        shapes.setdefault(tuple(sorted(values)), []).append(record)
    return shapes


def _document(records: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(records, ensure_ascii=False, separators=(",", ":"))


def _finish_writes(
    plan: FinishPlan,
    states: StateSets,
    columns: tuple[str, ...],
    row: str,
    parameter: Callable[[str], str],
    request_field: Callable[[str], str],
) -> Writes | None:
    """The SQL of ``plan``'s writes (as :func:`effect_writes`), or None when its target is
    leased or claimable (this statement leaves both claim indexes alone) or an effect writes
    one of the reports' plain ``columns``."""
    if plan.target in states.leased or plan.target in states.claimable:
        return None
    writes = effect_writes(plan.target, plan.effects, plan.request, row, parameter, request_field)
    if writes is None or not set(columns).isdisjoint(writes.columns):
        return None
    return writes


class PostgresPlannedFinishes:
    """The statement of each (plan, plain fields written), built once."""

    def __init__(
        self,
        table: Table,
        states: StateSets,
        direct: DirectStatements,
        table_name: str,
        dependencies_name: str,
        quote: Callable[[str], str],
        channel: str,
        batch: int,
    ) -> None:
        self.table = table
        self.states = states
        self.direct = direct
        self.table_name = table_name  # quoted, schema-qualified when it has a schema
        self.dependencies_name = dependencies_name
        self.quote = quote
        self.channel = channel  # the ends channel
        self.batch = batch  # reports per statement: their ids fit in one end notice
        self._built: dict[tuple[FinishPlan, tuple[str, ...]], Compiled | None] = {}

    def run(
        self, connection: Connection, plan: FinishPlan, reports: Reports, at: int
    ) -> tuple[set[str], set[str] | None] | None:
        written: set[str] = set()
        dependents: set[str] = set()
        for columns, records in _records(reports).items():
            compiled = self._statement(plan, columns)
            if compiled is None:
                return None
            for start in range(0, len(records), self.batch):
                chunk = records[start : start + self.batch]
                parameters = {
                    "rows": _document(chunk),
                    "ids": "{" + ",".join(str(record["w_id"]) for record in chunk) + "}",
                    "at": at,
                    "channel": self.channel,
                }
                _, rows = self.direct.execute(connection, compiled, parameters)
                written.update(str(row["id"]) for row in rows if row["id"] is not None)
                dependents.update(str(each) for each in rows[0][DEPENDENTS])
        return written, dependents

    def _statement(self, plan: FinishPlan, columns: tuple[str, ...]) -> Compiled | None:
        key = (plan, columns)
        if key not in self._built:
            self._built[key] = self._build(plan, columns)
        return self._built[key]

    def _build(self, plan: FinishPlan, columns: tuple[str, ...]) -> Compiled | None:
        step = plan.request
        writes = _finish_writes(
            plan,
            self.states,
            columns,
            "t.",
            lambda name: f"%({name})s",
            lambda field: f"(e.value->>'{field}')::bigint",
        )
        if writes is None:
            return None
        q, t = self.quote, self.table_name
        state = f"e.value->>{_text('state')}"
        if "requests" in writes.columns:
            # One request left (a WHERE condition below): the current one is the one that
            # has not succeeded.
            writes.columns["requests"] = postgres_requests(
                q, writes.request, f"{state} <> 'succeeded'"
            )
        c = self.table.c
        record = ", ".join(
            [f"{q('w_id')} bigint", f"{q('w_token')} bigint"]
            + [f"{q('set_' + column)} {_sql_type(c[column])}" for column in columns]
        )
        sets = [f"{q(column)} = {value}" for column, value in writes.columns.items()]
        sets += [f"{q(column)} = v.{q('set_' + column)}" for column in columns]
        last_request = (
            f"(SELECT count(*) = 1 AND bool_and({state} IN ({state_names(step.sources)})) "
            f"FROM json_array_elements(t.{q('requests')}::json) AS e(value) "
            f"WHERE {state} <> 'succeeded')"
        )
        where = [
            # as in the set-based writes (setwrites.py): the ids as an array, and the state
            # compared as ``state || ''``, so each record is found by the primary key
            f"t.{q('id')} = ANY(%(ids)s::bigint[])",
            f"t.{q('id')} = v.{q('w_id')}",
            f"t.{q('state')} || '' IN ({state_names(plan.sources)})",
            # the guard: the report's token is the current lease's
            f"t.{q('lease_worker')} IS NOT NULL",
            f"t.{q('lease_token')} = v.{q('w_token')}",
            last_request,
        ]
        ids = f"SELECT {q('id')} FROM written"
        notice = end_notice_sql(
            "%(channel)s", f"(SELECT string_agg({q('id')}::text, ',') FROM written)"
        )
        sql = (
            f"WITH written AS (UPDATE {t} AS t SET {', '.join(sets)} "
            f"FROM json_to_recordset(%(rows)s::json) AS v({record}) "
            f"WHERE {' AND '.join(where)} RETURNING t.{q('id')}) "
            f"SELECT n.{NOTIFIED}, n.{DEPENDENTS}, w.{q('id')} FROM (SELECT "
            f"CASE WHEN EXISTS ({ids}) THEN {notice} END AS {NOTIFIED}, "
            f"ARRAY(SELECT DISTINCT d.{q('job_id')} FROM {self.dependencies_name} AS d "
            f"WHERE d.{q('depends_on_id')} IN ({ids})) AS {DEPENDENTS}) AS n "
            "LEFT JOIN written AS w ON true"
        )
        return Compiled(sql, (NOTIFIED, DEPENDENTS, "id"))


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class SqlitePlannedFinishes:
    """SQLite (3.35 and later): one ``UPDATE ... FROM (the records) ... RETURNING`` per
    batch, in the worker's transaction; the current request edited by ``json_set``. No end
    notice (SQLite has none) and no dependents read: the caller looks them up if it needs
    them, as after any other write here."""

    def __init__(
        self,
        table: Table,
        states: StateSets,
        table_name: str,
        quote: Callable[[str], str],
    ) -> None:
        self.table = table
        self.states = states
        self.table_name = table_name
        self.quote = quote
        self._built: dict[tuple[FinishPlan, tuple[str, ...]], Any] = {}

    @staticmethod
    def available() -> bool:
        return sqlite3.sqlite_version_info >= SQLITE_RETURNING

    def run(
        self, connection: Connection, plan: FinishPlan, reports: Reports, at: int
    ) -> tuple[set[str], set[str] | None] | None:
        written: set[str] = set()
        for columns, records in _records(reports).items():
            key = (plan, columns)
            if key not in self._built:
                self._built[key] = self._build(plan, columns)
            statement = self._built[key]
            if statement is None:
                return None
            rows = connection.execute(statement, {"rows": _document(records), "at": at})
            written.update(str(row[0]) for row in rows)
        return written, None

    def _build(self, plan: FinishPlan, columns: tuple[str, ...]) -> Any:
        q = self.quote
        step = plan.request
        writes = _finish_writes(
            plan,
            self.states,
            columns,
            "",
            lambda name: f":{name}",
            lambda field: sqlite_request_field(q, field),
        )
        if writes is None:
            return None
        if "requests" in writes.columns:
            writes.columns["requests"] = sqlite_requests(q, writes.request)
        sets = [f"{q(column)} = {value}" for column, value in writes.columns.items()]
        sets += [f"{q(column)} = v.{q('set_' + column)}" for column in columns]
        fields = ["w_id", "w_token", *(f"set_{column}" for column in columns)]
        record = ", ".join(f"json_extract(e.value, '$.{name}') AS {q(name)}" for name in fields)
        t = self.table_name
        state = "json_extract(e.value, '$.state')"
        last_request = (
            f"(SELECT count(*) = 1 AND min({state} IN ({state_names(step.sources)})) "
            f"FROM json_each({t}.{q('requests')}) AS e WHERE {state} <> 'succeeded')"
        )
        where = [
            f"{t}.{q('id')} = v.{q('w_id')}",
            f"{t}.{q('state')} IN ({state_names(plan.sources)})",
            f"{t}.{q('lease_worker')} IS NOT NULL",
            f"{t}.{q('lease_token')} = v.{q('w_token')}",
            last_request,
        ]
        return text(
            f"UPDATE {t} SET {', '.join(sets)} "
            f"FROM (SELECT {record} FROM json_each(:rows) AS e) AS v "
            f"WHERE {' AND '.join(where)} RETURNING {t}.{q('id')}"
        )
