"""A worker's claim of plain jobs without firing the machine per job: the claim plan in SQL.

Fired in Python, a claim reads its candidates, runs each through the machine, encodes the
columns each changed and writes them back: per job, most of the Python a no-op job costs.
The claim transition is the same for every plain job (no serial group, unique mode,
concurrency or rate key, whose guards need more than the claim query's WHERE), so it is
compiled here, once per plan and query shape, into SQL that writes what the machine would:

- PostgreSQL: one data-modifying statement. The candidates are read and locked in claim order
  (``FOR UPDATE SKIP LOCKED``), the plain ones written as the plan says, and the written rows
  come back with the columns as they were.
- SQLite (3.35 and later, for ``RETURNING``): the candidates' read, then one ``UPDATE ...
  RETURNING`` of the plain ones, in the claim's transaction (SQLite has one writer at a time,
  and both run in the process, so the second statement costs no round trip).

The plan comes from the machine file (``conveyor.claimplan``); what SQL each of its effects
becomes is said here (``JOB_EFFECT_SQL``, ``REQUEST_EFFECT_SQL``), and a plan naming an
effect this module does not know is declined: the claim then fires the machine per job.
``tests/test_planned_claims.py`` checks, for random jobs, that both leave the same rows.

The current request's change is made on the JSON text in SQL, copying every other value as
its JSON text, never parsed into numbers, so a payload reads back exactly as written
(``1.5e+300`` stays a float): PostgreSQL builds the request's object again from its fields
(``json``, not ``jsonb``, which would print that number as an integer), SQLite's
``json_set`` edits it in place.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, text

from ...model import Request
from ..base import ClaimPlan, RequestStep, StateSets
from .claim import (
    CLAIM_GUARD,
    DUE_WAITING,
    IN_CLAIM_INDEX,
    PLANNED_OLD_COLUMNS,
    ClaimStatements,
    Shape,
)
from .direct import Compiled, DirectStatements

# What each job effect writes, by column: SQL over the row as it was (``{row}`` prefixes
# its columns) and the parameters ``{at}`` (the moment), ``{worker_id}`` and ``{expires}``
# (a lease's holder and expiry). An effect a plan names and this table lacks declines it.
JOB_EFFECT_SQL: dict[str, Mapping[str, str]] = {
    "count_attempt": {"attempts": "{row}attempts + 1"},
    "grant_lease": {
        "lease_token": "{row}lease_token + 1",
        "lease_worker": "{worker_id}",
        "lease_expires_at": "{expires}",
    },
    "release_lease": {"lease_worker": "NULL", "lease_expires_at": "NULL"},
    "stamp_finished": {"finished_at": "{at}"},
}
# ... and each request effect, by field of the current request (``{attempts}`` reads the
# field as it was, as a number).
REQUEST_EFFECT_SQL: dict[str, Mapping[str, str]] = {
    "count_attempt": {"attempts": "{attempts} + 1"},
    "clear_error": {"error": "NULL"},
}
_REQUEST_FIELDS = tuple(field.name for field in dataclasses.fields(Request))
_NAME = re.compile(r"[a-z][a-z0-9_]*")
PICKED = "picked"  # the result column: how many candidates the statement read
# What a claim needs of SQLite: RETURNING (3.35).
SQLITE_RETURNING = (3, 35, 0)


def _literal(name: str) -> str:
    """A state name written into the statement (machine-file names are checked; be sure)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"unexpected state name {name!r}")
    return f"'{name}'"


def state_names(names: frozenset[str]) -> str:
    return ", ".join(_literal(name) for name in sorted(names))


@dataclass(frozen=True)
class Writes:
    """A plan's writes as SQL: job column -> value, and the current request's changed
    fields -> value (state included); empty when the plan starts no request."""

    columns: dict[str, str]
    request: dict[str, str]


def plan_writes(
    plan: ClaimPlan,
    states: StateSets,
    row: str,
    parameter: Callable[[str], str],
    request_field: Callable[[str], str],
) -> Writes | None:
    """The SQL of ``plan``'s writes (``row`` prefixes the row's columns, ``parameter`` names
    a parameter, ``request_field`` reads a field of the current request), or None when the
    plan has an effect without SQL here, or a target this claim cannot write."""
    if plan.guard != CLAIM_GUARD or plan.target not in states.leased:
        return None
    if plan.target in states.claimable:
        return None
    return effect_writes(plan.target, plan.effects, plan.request, row, parameter, request_field)


def effect_writes(
    target: str,
    effects: Sequence[str],
    step: RequestStep | None,
    row: str,
    parameter: Callable[[str], str],
    request_field: Callable[[str], str],
) -> Writes | None:
    """The SQL of a transition to ``target`` with job ``effects`` (one of them, ``step.via``,
    firing ``step`` on the current request) on a plain job leaving no claim index: None when
    an effect has no SQL here. The parameters it may name: ``at`` (the moment),
    ``worker_id`` and ``expires`` (a lease's holder and expiry)."""
    columns: dict[str, str] = {"state": _literal(target), "updated_at": parameter("at")}
    request: dict[str, str] = {}
    values = {
        "row": row,
        "at": parameter("at"),
        "worker_id": parameter("worker_id"),
        "expires": parameter("expires"),
    }
    for name in effects:
        if step is not None and name == step.via:
            request["state"] = _literal(step.target)
            for effect in step.effects:
                fields = REQUEST_EFFECT_SQL.get(effect)
                if fields is None or not set(fields).isdisjoint(request):
                    return None
                request.update(
                    {
                        field: sql.format(**{field: request_field(field)})
                        for field, sql in fields.items()
                    }
                )
            if not set(request) <= set(_REQUEST_FIELDS):
                return None
            written = {"requests": ""}  # the dialect writes the JSON from ``request``
        elif name in JOB_EFFECT_SQL:
            written = {column: sql.format(**values) for column, sql in JOB_EFFECT_SQL[name].items()}
        else:
            return None
        if not set(written).isdisjoint(columns):
            return None  # two effects on one column: each would read the row as it was
        columns.update(written)
    # The target is in neither claim index, and a plain job holds no serial-group or unique
    # lock (rows.py's lock columns).
    for column in ("claim_priority", "delay_until", "group_lock", "unique_lock"):
        columns[column] = "NULL"
    return Writes(columns, request)


@dataclass
class PlannedRows:
    """What a planned claim did: the claimed rows, each with the columns it wrote as they
    were (``old_`` + name), in no particular order; how many candidates it read; and the
    claim index's facts (a due delayed job waits, the entries counted ahead)."""

    rows: list[dict[str, Any]]
    picked: int
    due_waiting: bool
    in_claim_index: int | None


class PlannedClaims(Protocol):
    """A dialect's planned claim."""

    # Whether ``run`` works on an autocommit connection (one statement, its own transaction)
    alone: bool

    def run(
        self,
        connection: Connection,
        plan: ClaimPlan,
        shape: Shape,
        parameters: Mapping[str, Any],
    ) -> PlannedRows | None:
        """Claim as the parameters say (those of ``ClaimStatements.parameters``, and ``at``,
        ``worker_id``, ``expires``, ``skip``); None, having done nothing, for a plan or shape
        it declines."""
        ...


def postgres_requests(quote: Callable[[str], str], request: dict[str, str], current: str) -> str:
    """PostgreSQL: the requests' JSON (of the row ``t``) with the one where ``current`` holds
    (over ``e.value`` and its position ``e.ord``) built again from its fields as ``request``
    says, every other field and request copied as its JSON text."""
    pairs = ", ".join(
        f"'{name}', "
        + (
            f"to_json({request[name]}::text)"
            if name == "state"
            else request.get(name, f"e.value->'{name}'")
        )
        for name in _REQUEST_FIELDS
    )
    return (
        f"(SELECT json_agg(CASE WHEN {current} THEN json_build_object({pairs}) "
        "ELSE e.value END ORDER BY e.ord)::text "
        f"FROM json_array_elements(t.{quote('requests')}::json) WITH ORDINALITY AS e(value, ord))"
    )


def _sqlite_current(quote: Callable[[str], str]) -> str:
    """SQLite: the current request's position, the first that has not succeeded
    (Job.current_index), in the row's requests."""
    return (
        f"(SELECT e.key FROM json_each({quote('requests')}) AS e "
        "WHERE json_extract(e.value, '$.state') <> 'succeeded' ORDER BY e.key LIMIT 1)"
    )


def _sqlite_path(quote: Callable[[str], str], field: str) -> str:
    return f"'$[' || {_sqlite_current(quote)} || '].{field}'"


def sqlite_request_field(quote: Callable[[str], str], field: str) -> str:
    """SQLite: a field of the row's current request, as it was."""
    return f"json_extract({quote('requests')}, {_sqlite_path(quote, field)})"


def sqlite_requests(quote: Callable[[str], str], request: dict[str, str]) -> str:
    """SQLite: the row's requests with the current one's fields set as ``request`` says
    (``json_set`` edits it in place); unchanged when every request succeeded."""
    requests = quote("requests")
    edits = ", ".join(f"{_sqlite_path(quote, field)}, {value}" for field, value in request.items())
    return (
        f"CASE WHEN {_sqlite_current(quote)} IS NULL THEN {requests} "
        f"ELSE json_set({requests}, {edits}) END"
    )


class _Compiler:
    """What each dialect's planned claim is built from: the claim's reads, the machine's
    state sets, and the job table's quoted name and the dialect's quoting."""

    def __init__(
        self,
        claims: ClaimStatements,
        states: StateSets,
        table_name: str,
        quote: Callable[[str], str],
    ) -> None:
        self.claims = claims
        self.states = states
        self.table_name = table_name  # quoted, schema-qualified when it has a schema
        self.quote = quote


class PostgresPlannedClaims(_Compiler):
    """The one statement of each (plan, query shape), built once."""

    alone = True  # one statement

    def __init__(
        self,
        claims: ClaimStatements,
        direct: DirectStatements,
        states: StateSets,
        table_name: str,
        quote: Callable[[str], str],
    ) -> None:
        super().__init__(claims, states, table_name, quote)
        self.direct = direct
        self.columns = tuple(column.name for column in claims.tables.jobs.columns)
        self._built: dict[tuple[ClaimPlan, Shape], Compiled | None] = {}

    def statement(self, plan: ClaimPlan, shape: Shape) -> Compiled | None:
        key = (plan, shape)
        if key not in self._built:
            self._built[key] = self._build(plan, shape)
        return self._built[key]

    def run(
        self,
        connection: Connection,
        plan: ClaimPlan,
        shape: Shape,
        parameters: Mapping[str, Any],
    ) -> PlannedRows | None:
        compiled = self.statement(plan, shape)
        if compiled is None:
            return None
        _, rows = self.direct.execute(connection, compiled, parameters)
        first = rows[0]  # one row at least: the statement's counts, with no job if none
        return PlannedRows(
            [row for row in rows if row["id"] is not None],
            int(first[PICKED]),
            bool(first[DUE_WAITING]),
            first[IN_CLAIM_INDEX],
        )

    def _requests(self, request: dict[str, str]) -> str:
        """The requests' JSON with the current one (position ``p.cur``) changed; unchanged
        when every request succeeded (no current one)."""
        return f"CASE WHEN p.cur IS NULL THEN t.{self.quote('requests')} ELSE " + (
            postgres_requests(self.quote, request, "e.ord = p.cur") + " END"
        )

    def _build(self, plan: ClaimPlan, shape: Shape) -> Compiled | None:
        writes = plan_writes(
            plan,
            self.states,
            "t.",
            lambda name: f"%({name})s",
            lambda field: f"(e.value->>'{field}')::bigint",
        )
        if writes is None:
            return None
        if "requests" in writes.columns:
            writes.columns["requests"] = self._requests(writes.request)
        pick, stats = self.claims.planned_statements(shape)
        picked, counted = self.direct.compiled(pick), self.direct.compiled(stats)
        if picked is None or counted is None or picked.defaults or counted.defaults:
            return None
        q = self.quote
        conditions = [
            f"t.{q('id')} = p.id",
            "p.plain",
            f"p.old_state IN ({state_names(plan.sources)})",
        ]
        if plan.request is not None:
            conditions.append(
                f"(p.cur IS NULL OR p.cur_state IN ({state_names(plan.request.sources)}))"
            )
        conditions.append(f"NOT (SELECT {DUE_WAITING} FROM stats)")
        returned = [f"t.{q(column)}" for column in self.columns] + [
            f"p.old_{column}" for column in PLANNED_OLD_COLUMNS
        ]
        keys = (
            DUE_WAITING,
            IN_CLAIM_INDEX,
            PICKED,
            *self.columns,
            *(f"old_{column}" for column in PLANNED_OLD_COLUMNS),
        )
        listed = ", ".join(f"c.{q(column)}" for column in self.columns) + "".join(
            f", c.old_{column}" for column in PLANNED_OLD_COLUMNS
        )
        sql = (
            f"WITH stats AS MATERIALIZED ({counted.sql}), "
            f"{PICKED} AS ({picked.sql}), "
            f"claimed AS (UPDATE {self.table_name} AS t SET "
            + ", ".join(f"{q(column)} = {value}" for column, value in writes.columns.items())
            + f" FROM {PICKED} AS p WHERE {' AND '.join(conditions)} "
            f"RETURNING {', '.join(returned)}) "
            f"SELECT s.{DUE_WAITING}, s.{IN_CLAIM_INDEX}, (SELECT count(*) FROM {PICKED}), "
            f"{listed} FROM stats AS s LEFT JOIN claimed AS c ON true"
        )
        return Compiled(sql, keys)


class SqlitePlannedClaims(_Compiler):
    """The candidates' read, then one ``UPDATE ... RETURNING`` of the plain ones."""

    alone = False  # a read, then the write: only inside the claim's transaction

    def __init__(
        self,
        claims: ClaimStatements,
        states: StateSets,
        table_name: str,
        quote: Callable[[str], str],
    ) -> None:
        super().__init__(claims, states, table_name, quote)
        self._updates: dict[ClaimPlan, Any] = {}
        self._reads: dict[Shape, tuple[Any, Any]] = {}

    @staticmethod
    def available() -> bool:
        return sqlite3.sqlite_version_info >= SQLITE_RETURNING

    def _update(self, plan: ClaimPlan) -> Any:
        if plan not in self._updates:
            self._updates[plan] = self._build(plan)
        return self._updates[plan]

    def _build(self, plan: ClaimPlan) -> Any:
        q = self.quote
        writes = plan_writes(
            plan,
            self.states,
            "",
            lambda name: f":{name}",
            lambda field: sqlite_request_field(q, field),
        )
        if writes is None:
            return None
        if "requests" in writes.columns:
            writes.columns["requests"] = sqlite_requests(q, writes.request)
        sets = ", ".join(f"{q(column)} = {value}" for column, value in writes.columns.items())
        return text(
            f"UPDATE {self.table_name} SET {sets} WHERE {q('id')} IN (SELECT value FROM "
            f"json_each(:ids)) AND {q('state')} IN ({state_names(plan.sources)}) RETURNING *"
        )

    def run(
        self,
        connection: Connection,
        plan: ClaimPlan,
        shape: Shape,
        parameters: Mapping[str, Any],
    ) -> PlannedRows | None:
        update = self._update(plan)
        if update is None or connection.get_execution_options().get("isolation_level") == (
            "AUTOCOMMIT"
        ):
            return None  # two statements: only in a transaction (BEGIN IMMEDIATE) of the claim
        if shape not in self._reads:  # built once: SQLAlchemy then finds them compiled
            self._reads[shape] = self.claims.planned_statements(shape)
        pick, stats = self._reads[shape]
        counts: Mapping[Any, Any] = (
            {DUE_WAITING: False, IN_CLAIM_INDEX: None}  # by id: nothing to count
            if shape.by_id or shape.by_ids
            else connection.execute(stats, parameters).mappings().one()
        )
        picked = [dict(row) for row in connection.execute(pick, parameters).mappings()]
        due_waiting = bool(counts[DUE_WAITING])
        chosen = [] if due_waiting else self._claimable(plan, picked)
        rows: list[dict[str, Any]] = []
        if chosen:
            ids = "[" + ",".join(str(int(row["id"])) for row in chosen) + "]"
            old = {row["id"]: row for row in chosen}
            written = connection.execute(update, {**parameters, "ids": ids}).mappings()
            for row in written:
                before = old[row["id"]]
                rows.append(
                    {
                        **row,
                        **{f"old_{name}": before[f"old_{name}"] for name in PLANNED_OLD_COLUMNS},
                    }
                )
        return PlannedRows(rows, len(picked), due_waiting, counts[IN_CLAIM_INDEX])

    @staticmethod
    def _claimable(plan: ClaimPlan, picked: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The candidates the plan claims: plain, in a source state, their current request
        (if any) in one the request event fires from."""
        step = plan.request
        return [
            row
            for row in picked
            if row["plain"]
            and row["old_state"] in plan.sources
            and (row["cur"] is None or step is None or row["cur_state"] in step.sources)
        ]
