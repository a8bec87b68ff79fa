"""A worker's claim of plain jobs as one statement (PostgreSQL): the claim plan in SQL.

Fired in Python, a claim reads its candidates, runs each through the machine, encodes the
columns each changed and writes them back: two statements and, per job, most of the Python a
no-op job costs. The claim transition is the same for every plain job (no serial group,
unique mode, concurrency or rate key, whose guards need more than the claim query's WHERE),
so it is compiled here, once per plan and query shape, into one data-modifying statement:
the candidates are read and locked in claim order (``FOR UPDATE SKIP LOCKED``), the plain
ones are written as the plan says, and the written rows come back with the columns as they
were. The plan comes from the machine file (``conveyor.claimplan``); what SQL each of its
effects becomes is said here (``JOB_EFFECT_SQL``, ``REQUEST_EFFECT_SQL``), and a plan naming
an effect this module does not know is declined: the claim then fires the machine per job.
``tests/test_planned_claims.py`` checks, for random jobs, that both leave the same rows.

The current request's change is made on the JSON text in SQL: the request's object is built
again from its fields (the other values copied as their JSON text, never parsed into numbers,
so a payload reads back exactly as written) and the other requests are copied as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

from sqlalchemy.dialects import postgresql

from ...model import Request
from ..base import ClaimPlan, StateSets
from .claim import (
    CLAIM_GUARD,
    DUE_WAITING,
    IN_CLAIM_INDEX,
    PLANNED_OLD_COLUMNS,
    ClaimStatements,
    Shape,
)
from .direct import Compiled, DirectStatements

# What each job effect writes, by column: SQL over the row as it was (``t``) and the
# parameters ``%(at)s`` (the claim's moment), ``%(worker_id)s`` and ``%(expires)s`` (its
# lease's expiry). An effect the claim plan names and this table lacks declines the plan.
JOB_EFFECT_SQL: dict[str, Mapping[str, str]] = {
    "count_attempt": {"attempts": "t.{attempts} + 1"},
    "grant_lease": {
        "lease_token": "t.{lease_token} + 1",
        "lease_worker": "%(worker_id)s",
        "lease_expires_at": "%(expires)s",
    },
}
# ... and each request effect, by field of the request's JSON object (``e.value``).
REQUEST_EFFECT_SQL: dict[str, Mapping[str, str]] = {
    "count_attempt": {"attempts": "(e.value->>'attempts')::bigint + 1"},
}
_REQUEST_FIELDS = tuple(field.name for field in dataclasses.fields(Request))
_NAME = re.compile(r"[a-z][a-z0-9_]*")
PICKED = "picked"  # the result column: how many candidates the statement read


def _literal(name: str) -> str:
    """A state name written into the statement (machine-file names are checked; be sure)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"unexpected state name {name!r}")
    return f"'{name}'"


def _names(names: frozenset[str]) -> str:
    return ", ".join(_literal(name) for name in sorted(names))


class PlannedClaims:
    """The statement of each (plan, query shape), built once; None for a plan it declines."""

    def __init__(
        self,
        claims: ClaimStatements,
        direct: DirectStatements,
        states: StateSets,
        table_name: str,
        quote: Callable[[str], str],
    ) -> None:
        self.claims = claims
        self.direct = direct
        self.states = states
        self.table_name = table_name  # quoted, schema-qualified when it has a schema
        self.quote = quote
        self.columns = tuple(column.name for column in claims.tables.jobs.columns)
        self._built: dict[tuple[ClaimPlan, Shape], Compiled | None] = {}

    def statement(self, plan: ClaimPlan, shape: Shape) -> Compiled | None:
        key = (plan, shape)
        if key not in self._built:
            self._built[key] = self._build(plan, shape)
        return self._built[key]

    def _sets(self, plan: ClaimPlan) -> dict[str, str] | None:
        """Column -> SQL of the plan's writes, or None when an effect has no SQL here."""
        q = self.quote
        states = self.states
        if (
            plan.guard != CLAIM_GUARD
            or plan.target not in states.leased
            or plan.target in states.claimable
        ):
            return None
        sets: dict[str, str] = {"state": _literal(plan.target), "updated_at": "%(at)s"}
        for name in plan.effects:
            if plan.request is not None and name == plan.request.via:
                requests = self._request_sql(plan)
                if requests is None:
                    return None
                written = {"requests": requests}
            elif name in JOB_EFFECT_SQL:
                written = {
                    column: sql.format(**{column: q(column) for column in self.columns})
                    for column, sql in JOB_EFFECT_SQL[name].items()
                }
            else:
                return None
            if not set(written).isdisjoint(sets):
                return None  # two effects on one column: each would read the row as it was
            sets.update(written)
        # The target is leased and not claimable: the row leaves both claim indexes, and a
        # plain job holds no serial-group or unique lock (rows.py's lock columns).
        for column in ("claim_priority", "delay_until", "group_lock", "unique_lock"):
            sets[column] = "NULL"
        return {q(column): sql for column, sql in sets.items()}

    def _request_sql(self, plan: ClaimPlan) -> str | None:
        """The requests' JSON with the current one (position ``p.cur``) changed as the
        request machine says; unchanged when every request succeeded (no current one)."""
        step = plan.request
        assert step is not None
        fields: dict[str, str] = {"state": f"to_json({_literal(step.target)}::text)"}
        for effect in step.effects:
            written = REQUEST_EFFECT_SQL.get(effect)
            if written is None or not set(written).isdisjoint(fields):
                return None
            fields.update(written)
        if not set(fields) <= set(_REQUEST_FIELDS):
            return None
        pairs = ", ".join(
            f"'{name}', " + fields.get(name, f"e.value->'{name}'") for name in _REQUEST_FIELDS
        )
        requests = self.quote("requests")
        return (
            f"CASE WHEN p.cur IS NULL THEN t.{requests} ELSE ("
            f"SELECT json_agg(CASE WHEN e.ord = p.cur THEN json_build_object({pairs}) "
            "ELSE e.value END ORDER BY e.ord)::text "
            f"FROM json_array_elements(t.{requests}::json) WITH ORDINALITY AS e(value, ord)"
            ") END"
        )

    def _build(self, plan: ClaimPlan, shape: Shape) -> Compiled | None:
        sets = self._sets(plan)
        if sets is None:
            return None
        pick, stats = self.claims.planned_statements(shape)
        picked, counted = self.direct.compiled(pick), self.direct.compiled(stats)
        if picked is None or counted is None or picked.defaults or counted.defaults:
            return None
        q = self.quote
        conditions = [
            f"t.{q('id')} = p.id",
            "p.plain",
            f"p.old_state IN ({_names(plan.sources)})",
        ]
        if plan.request is not None:
            conditions.append(f"(p.cur IS NULL OR p.cur_state IN ({_names(plan.request.sources)}))")
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
            + ", ".join(f"{column} = {value}" for column, value in sets.items())
            + f" FROM {PICKED} AS p WHERE {' AND '.join(conditions)} "
            f"RETURNING {', '.join(returned)}) "
            f"SELECT s.{DUE_WAITING}, s.{IN_CLAIM_INDEX}, (SELECT count(*) FROM {PICKED}), "
            f"{listed} FROM stats AS s LEFT JOIN claimed AS c ON true"
        )
        return Compiled(sql, keys)


def dialect_supports(dialect_name: str, direct: DirectStatements) -> bool:
    """Only PostgreSQL through psycopg runs the planned claim."""
    return dialect_name == postgresql.dialect.name and direct.enabled
