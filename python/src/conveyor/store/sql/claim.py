"""The claim query: candidates in (priority, sequence) order, with the claim guard's facts.

Built once per query shape and reused with bound parameters, so each claim costs one
round trip and no query construction. The WHERE clause applies the same facts the machine's
guard re-checks, so the rows fetched (and locked, with SKIP LOCKED) are the ones claimed.

Two choices keep the plan cheap and stable on PostgreSQL, whose driver prepares the statement
and whose planner then settles on a generic plan: the state sets and constants are rendered
inline (only the moment, the limit and the worker's filters are parameters, so the generic
plan is as good as a custom one and planning, about a millisecond for this query, happens
once), and claimability is read from ``claim_priority`` (NULL unless the state is claimable
and the job was due when written, or has been promoted since) so the one index that serves
the filter is the one whose order is the claim order. Delayed jobs wait in another index,
over ``delay_until``, and are promoted by the claim once due: however many jobs are delayed,
finished or ready, a claim reads only the rows it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    Update,
    all_,
    and_,
    any_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql

from ..base import ClaimQuery, StateSets
from .dialects import Dialect
from .schema import Tables

FACTS = (
    "dependencies_succeeded",
    "serial_group_idle",
    "serial_group_head",
    "unique_sibling_processing",
    "unique_sibling_succeeded",
)
# The column of a claim in claim order that says whether delayed jobs are due to be promoted.
DUE_WAITING = "due_waiting"
# ... and how many rows of its scope the claim index holds, counted up to one more than it
# asked for.
IN_CLAIM_INDEX = "in_claim_index"
# Claims of fewer jobs than this count the claim index ahead (IN_CLAIM_INDEX); larger ones
# do not. The count walks the index from its start, as the claim does, so on a table where a
# long drain left dead entries at the front of the index (until a vacuum removes them) it
# doubles the claim's cost. It pays only for small claims: an idle worker claiming one job
# then knows that nothing waits behind it and does not claim again at once to find nothing.
# A full claim of many jobs is taken as a backlog, and at worst one more claim finds none.
COUNT_AHEAD_BELOW = 10
# The guard the claim query's WHERE clause applies in full to a job that uses no serial
# group, unique mode, concurrency or rate key: a claim plan with this guard is the WHERE.
CLAIM_GUARD = "claimable_now"
# The columns a claim in one statement reads as they were, to give the jobs before it.
PLANNED_OLD_COLUMNS = (
    "state",
    "updated_at",
    "attempts",
    "lease_token",
    "lease_worker",
    "lease_expires_at",
    "requests",
)
# What the claim query's WHERE clause guarantees of every row it returns.
IMPLIED_FACTS = {
    "dependencies_succeeded": True,
    "serial_group_idle": True,
    "serial_group_head": True,
    "unique_sibling_processing": False,
}


ONE: Any = literal_column("1")


_STATE_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _in(column: Any, names: Any) -> Any:
    """``column IN ('a', 'b')`` with the names written into the statement: they are the spec's
    state sets, constant for the process, so the statement text is built once (bound or
    literal-execute parameters would be rendered again at every execution)."""
    quoted: list[Any] = []
    for name in sorted(names):
        if not _STATE_NAME.fullmatch(name):  # machine-file names are checked; be sure anyway
            raise ValueError(f"unexpected state name {name!r}")
        quoted.append(literal_column(f"'{name}'"))
    return column.in_(quoted)


@dataclass(frozen=True)
class Shape:
    by_id: bool
    by_ids: bool
    queues: bool
    low: bool
    high: bool

    @classmethod
    def of(cls, query: ClaimQuery) -> Shape:
        return cls(
            by_id=query.job_id is not None,
            by_ids=bool(query.job_ids),
            queues=bool(query.queues),
            low=query.priorities.low is not None,
            high=query.priorities.high is not None,
        )


class ClaimStatements:
    def __init__(self, tables: Tables, states: StateSets, dialect: Dialect) -> None:
        self.tables = tables
        self.states = states
        self.dialect = dialect
        self._cache: dict[Shape, Select[Any]] = {}
        self._updates: dict[tuple[frozenset[str], bool], Update] = {}
        self._backlog: Select[Any] | None = None
        self._needy: Select[Any] | None = None
        self._among: Select[Any] | None = None
        self._due: Select[Any] | None = None
        self._promote: Update | None = None

    def due_statement(self) -> Select[Any]:
        """Ids of delayed jobs due by ``:now``, earliest first, up to ``:limit``; locked, and
        skipping rows another claim is promoting, where the database can."""
        if self._due is None:
            t = self.tables.jobs
            due: Select[Any] = (
                select(t.c.id)
                .where(t.c.delay_until <= bindparam("now", type_=BigInteger()))
                .order_by(t.c.delay_until)
                .limit(bindparam("limit", type_=Integer()))
            )
            if self.dialect.skip_locked:
                due = due.with_for_update(skip_locked=True)
            self._due = due
        return self._due

    def promote_statement(self) -> Update:
        """Delayed jobs ``:ids`` into the claim index. Only the storage columns change: the
        job itself (state, times) is as it was."""
        if self._promote is None:
            t = self.tables.jobs
            self._promote = (
                update(t)
                .where(
                    t.c.id.in_(bindparam("ids", expanding=True, type_=BigInteger())),
                    t.c.delay_until.is_not(None),
                )
                .values(claim_priority=t.c.priority, delay_until=None)
            )
        return self._promote

    def update_statement(self, columns: frozenset[str], unleased: bool) -> Update:
        """The conditional write of a job: only the changed columns, only if the row still
        has the state, fencing token and lease expiry the change was computed from, and, for
        a leased job, the cancel request (CANCEL-004: an operator may add one meanwhile)."""
        key = (columns, unleased)
        if key not in self._updates:
            t = self.tables.jobs
            self._updates[key] = (
                update(t)
                .where(
                    t.c.id == bindparam("w_id", type_=BigInteger()),
                    # ``state || ''``: the same test, but no index on state can serve it. A
                    # generic plan made while the table has no statistics (new, truncated)
                    # may otherwise pick (state, ...) over the primary key and scan every
                    # ready job to write one.
                    t.c.state.concat(literal_column("''")) == bindparam("w_state", type_=String()),
                    t.c.lease_token == bindparam("w_token", type_=Integer()),
                    *(
                        [t.c.lease_expires_at.is_(None)]
                        if unleased
                        else [
                            t.c.lease_expires_at == bindparam("w_expires", type_=BigInteger()),
                            t.c.cancel_requested_at.is_not_distinct_from(
                                bindparam("w_cancel", type_=BigInteger())
                            ),
                        ]
                    ),
                )
                .values({name: bindparam(f"set_{name}") for name in sorted(columns)})
            )
        return self._updates[key]

    def parameters(self, query: ClaimQuery, now_ms: int, limit: int) -> dict[str, Any]:
        values: dict[str, Any] = {"now": now_ms, "limit": limit}
        if query.job_id is None and not query.job_ids:
            # The claim index entries IN_CLAIM_INDEX counts; none (LIMIT 0, no index read)
            # for a large claim.
            values["ahead"] = limit + 1 if limit < COUNT_AHEAD_BELOW else 0
        if query.job_id is not None:
            values["job_id"] = int(query.job_id)
        if query.job_ids:
            # Every named job that is claimable: unordered in SQL, ordered by the caller.
            values["job_ids"] = sorted({int(job_id) for job_id in query.job_ids})
            values["limit"] = len(values["job_ids"])
        if query.queues:
            values["queues"] = list(query.queues)
        if query.priorities.low is not None:
            values["low"] = query.priorities.low
        if query.priorities.high is not None:
            values["high"] = query.priorities.high
        return values

    def statement(self, query: ClaimQuery) -> Select[Any]:
        shape = Shape.of(query)
        if shape not in self._cache:
            self._cache[shape] = self._build(shape)
        return self._cache[shape]

    def _build(self, shape: Shape) -> Select[Any]:
        j = self.tables.jobs.alias("j")
        # By id the delayed rows count too; in claim order only the claim index is read.
        named = shape.by_id or shape.by_ids
        facts, conditions = self._claimable(j, ready_only=not named)
        priority = j.c.priority if named else j.c.claim_priority
        if shape.by_id:
            conditions.append(j.c.id == bindparam("job_id", type_=BigInteger()))
        if shape.by_ids and self.dialect.name == "postgresql":
            ids = bindparam("job_ids", type_=postgresql.ARRAY(BigInteger()))
            conditions.append(j.c.id == any_(ids))
        elif shape.by_ids:
            conditions.append(j.c.id.in_(bindparam("job_ids", expanding=True, type_=BigInteger())))
        conditions.extend(self._scope(shape, j.c.queue, priority))
        # Every row returned meets the WHERE, so the facts it requires are known (IMPLIED_FACTS);
        # only the others are computed per row.
        columns: list[Any] = [
            j,
            *(facts[name].label(name) for name in FACTS if name not in IMPLIED_FACTS),
        ]
        if not named:
            columns.append(self._due_waiting().label(DUE_WAITING))
            columns.append(self._in_claim_index(shape).label(IN_CLAIM_INDEX))
        statement: Select[Any] = select(*columns).where(*conditions)
        # Jobs by id: no order, so no plan walks the claim index (the caller orders the few
        # rows fetched).
        if not named:
            statement = statement.order_by(j.c.claim_priority, j.c.id)
        statement = statement.limit(bindparam("limit", type_=Integer()))
        if self.dialect.skip_locked:
            statement = statement.with_for_update(
                skip_locked=True, of=j if self.dialect.lock_of_supported else None
            )
        return statement

    def _due_waiting(self) -> Any:
        """Whether a delayed job is due: the earliest ``delay_until``, one entry of the
        delayed-job index (an ordered probe: an EXISTS would let a plan made without
        statistics scan the table instead), evaluated once per statement. The claim promotes
        what is due only when it says so (or when no row came back), so a busy worker's claim
        is one statement, not two."""
        delayed = self.tables.jobs.alias("due")
        earliest = (
            select(delayed.c.delay_until)
            .where(delayed.c.delay_until.is_not(None))
            .order_by(delayed.c.delay_until)
            .limit(ONE)  # written inline: the statement text carries no value of its own
            .scalar_subquery()
        )
        return func.coalesce(earliest <= bindparam("now", type_=BigInteger()), false())

    def _in_claim_index(self, shape: Shape) -> Any:
        """The rows of this scope in the claim index, the first ``ahead`` entries counted,
        once per statement: more than the claim takes, and jobs wait behind it. A full claim
        with nothing behind it is then no backlog, and the worker does not claim again at
        once only to find nothing. Rows locked by other workers, passed over or in a paused
        queue count too: it errs on "more"."""
        ahead = self.tables.jobs.alias("ahead")
        window = (
            select(ahead.c.id)
            .where(
                ahead.c.claim_priority.is_not(None),
                *self._scope(shape, ahead.c.queue, ahead.c.claim_priority),
            )
            .order_by(ahead.c.claim_priority, ahead.c.id)
            .limit(bindparam("ahead", type_=Integer()))  # MariaDB takes no expression
            .subquery()
        )
        return select(func.count()).select_from(window).scalar_subquery()

    def planned_statements(self, shape: Shape) -> tuple[Select[Any], Select[Any]]:
        """The reads of a planned claim (plannedclaim.py), in claim order (of the named jobs,
        by id): the candidates' ids (locked, skipping rows other claims hold and the ids
        ``:skip``), whether each is plain (no serial group, unique mode, concurrency or rate
        key: the claim guard is then the WHERE clause alone), its current request's position
        and state, and the columns a claim writes as they were; and one row of
        :meth:`_due_waiting` and :meth:`_in_claim_index` (constants for named jobs)."""
        j = self.tables.jobs.alias("j")
        # By id the delayed rows count too; in claim order only the claim index is read.
        named = shape.by_id or shape.by_ids
        _, conditions = self._claimable(j, ready_only=not named)
        priority = j.c.priority if named else j.c.claim_priority
        conditions.extend(self._scope(shape, j.c.queue, priority))
        if shape.by_id:
            conditions.append(j.c.id == bindparam("job_id", type_=BigInteger()))
        postgres = self.dialect.name == "postgresql"
        if shape.by_ids and postgres:
            ids = bindparam("job_ids", type_=postgresql.ARRAY(BigInteger()))
            conditions.append(j.c.id == any_(ids))
        elif shape.by_ids:
            conditions.append(j.c.id.in_(bindparam("job_ids", expanding=True, type_=BigInteger())))
        if postgres:
            skip = bindparam("skip", type_=postgresql.ARRAY(BigInteger()))
            conditions.append(j.c.id != all_(skip))
        else:
            conditions.append(j.c.id.not_in(bindparam("skip", expanding=True, type_=BigInteger())))
        plain = and_(
            j.c.serial_group.is_(None),
            ~j.c.is_unique,
            j.c.concurrency_key.is_(None),
            j.c.rate_key.is_(None),
        )
        current = (
            "(SELECT {pick} FROM json_array_elements(j.{requests}::json) WITH ORDINALITY "
            "AS e(value, ord) WHERE e.value->>'state' <> 'succeeded' ORDER BY e.ord LIMIT 1)"
            if postgres
            else "(SELECT {pick} FROM json_each(j.{requests}) AS e "
            "WHERE json_extract(e.value, '$.state') <> 'succeeded' ORDER BY e.key LIMIT 1)"
        )
        position, state = (
            ("e.ord", "e.value->>'state'")
            if postgres
            else ("e.key", "json_extract(e.value, '$.state')")
        )
        column = j.c.requests.name  # a lower-case name: written as it is
        if not _STATE_NAME.fullmatch(column):
            raise ValueError(f"unexpected column name {column!r}")
        pick = (
            select(
                j.c.id,
                plain.label("plain"),
                literal_column(current.format(pick=position, requests=column)).label("cur"),
                literal_column(current.format(pick=state, requests=column)).label("cur_state"),
                *(j.c[name].label(f"old_{name}") for name in PLANNED_OLD_COLUMNS),
            )
            .where(*conditions)
            .order_by(priority, j.c.id)
            .limit(bindparam("limit", type_=Integer()))
            .with_for_update(skip_locked=True, of=j)
        )
        if named:  # delayed jobs are claimed as they are, and the claim index not counted
            counts: list[Any] = [false(), null()]
        else:
            counts = [self._due_waiting(), self._in_claim_index(shape)]
        stats = select(counts[0].label(DUE_WAITING), counts[1].label(IN_CLAIM_INDEX))
        return pick, stats

    def _scope(self, shape: Shape, queue: Any, priority: Any) -> list[Any]:
        """The conditions of a claim's queues and priority range on these columns."""
        conditions: list[Any] = []
        if shape.queues and self.dialect.name == "postgresql":
            # One array parameter: the statement text stays the same for any list of queues.
            queues = bindparam("queues", type_=postgresql.ARRAY(String()))
            conditions.append(queue == any_(queues))
        elif shape.queues:
            conditions.append(queue.in_(bindparam("queues", expanding=True, type_=String())))
        if shape.low:
            conditions.append(priority >= bindparam("low", type_=Integer()))
        if shape.high:
            conditions.append(priority <= bindparam("high", type_=Integer()))
        return conditions

    def backlog_statement(self) -> Select[Any]:
        """Claimable, due jobs per (queue, priority), counted, and how many of them may lack a
        broker message: delayed jobs that became due, and jobs unchanged since ``settled``.
        Nothing is locked: the repair loop only counts."""
        if self._backlog is None:
            j = self.tables.jobs.alias("j")
            _, conditions = self._claimable(j)
            needy = or_(
                j.c.available_at > j.c.updated_at,
                j.c.updated_at <= bindparam("settled", type_=BigInteger()),
            )
            self._backlog = (
                select(
                    j.c.queue,
                    j.c.priority,
                    func.count().label("claimable"),
                    func.sum(case((needy, 1), else_=0)).label("needy"),
                )
                .where(*conditions)
                .group_by(j.c.queue, j.c.priority)
            )
        return self._backlog

    def needy_statement(self) -> Select[Any]:
        """Ids of the jobs of one (queue, priority) that ``backlog_statement`` counts as needy."""
        if self._needy is None:
            j = self.tables.jobs.alias("j")
            _, conditions = self._claimable(j)
            self._needy = (
                select(j.c.id)
                .where(
                    *conditions,
                    j.c.queue == bindparam("queue", type_=String()),
                    j.c.priority == bindparam("priority", type_=Integer()),
                    or_(
                        j.c.available_at > j.c.updated_at,
                        j.c.updated_at <= bindparam("settled", type_=BigInteger()),
                    ),
                )
                .order_by(j.c.id)
                .limit(bindparam("limit", type_=Integer()))
            )
        return self._needy

    def claimable_among_statement(self) -> Select[Any]:
        """(id, queue, priority) of the jobs among ``:ids`` that are claimable and due now (the
        claim guard holding), in claim order. Nothing is locked."""
        if self._among is None:
            j = self.tables.jobs.alias("j")
            _, conditions = self._claimable(j)
            among: Select[Any] = (
                select(j.c.id, j.c.queue, j.c.priority)
                .where(
                    *conditions, j.c.id.in_(bindparam("ids", expanding=True, type_=BigInteger()))
                )
                .order_by(j.c.priority, j.c.id)  # a due job not yet promoted has no claim_priority
            )
            self._among = among
            return among
        return self._among

    def _claimable(self, j: Any, ready_only: bool = False) -> tuple[dict[str, Any], list[Any]]:
        """The claim guard's facts over the jobs alias ``j``, and the conditions every
        claimable, due job meets (the ``now`` parameter is bound by the caller). With
        ``ready_only``, the delayed jobs not yet promoted are left out (the claim promotes
        what is due before it runs)."""
        jobs, states = self.tables.jobs, self.states
        g, g2, u, u2, dj = (jobs.alias(name) for name in ("g", "g2", "u", "u2", "dj"))
        d = self.tables.dependencies.alias("d")
        facts = {
            "dependencies_succeeded": ~exists(
                select(ONE)
                .select_from(d.join(dj, dj.c.id == d.c.depends_on_id))
                .where(d.c.job_id == j.c.id, ~_in(dj.c.state, states.succeeded))
            ),
            "serial_group_idle": or_(
                j.c.serial_group.is_(None),
                ~exists(
                    select(ONE).where(
                        g.c.serial_group == j.c.serial_group,
                        _in(g.c.state, states.leased),
                        g.c.id != j.c.id,
                    )
                ),
            ),
            "serial_group_head": or_(
                j.c.serial_group.is_(None),
                ~exists(
                    select(ONE).where(
                        g2.c.serial_group == j.c.serial_group,
                        _in(g2.c.state, states.active),
                        or_(
                            g2.c.priority < j.c.priority,
                            and_(g2.c.priority == j.c.priority, g2.c.id < j.c.id),
                        ),
                    )
                ),
            ),
            "unique_sibling_processing": and_(
                j.c.is_unique,
                exists(
                    select(ONE).where(
                        u.c.identifier == j.c.identifier,
                        u.c.is_unique,
                        u.c.id != j.c.id,
                        _in(u.c.state, states.leased),
                    )
                ),
            ),
            "unique_sibling_succeeded": and_(
                j.c.is_unique,
                exists(
                    select(ONE).where(
                        u2.c.identifier == j.c.identifier,
                        u2.c.is_unique,
                        u2.c.id != j.c.id,
                        _in(u2.c.state, states.performed),
                    )
                ),
            ),
        }
        conditions = [
            # claim_priority or delay_until is set exactly while the state is claimable
            # (rows.job_values); available_at is still compared, whatever the clocks did
            j.c.claim_priority.is_not(None)
            if ready_only
            else or_(j.c.claim_priority.is_not(None), j.c.delay_until.is_not(None)),
            j.c.available_at <= bindparam("now", type_=BigInteger()),
            facts["dependencies_succeeded"],
            self._guards(j, facts),
            # PAUSE-001: a job of a paused queue is not claimable (a primary-key probe of a
            # table that is empty unless an operator paused a queue)
            ~exists(select(ONE).where(self.tables.paused_queues.c.queue == j.c.queue)),
        ]
        return facts, conditions

    def _guards(self, j: Any, facts: dict[str, Any]) -> Any:
        """The guards of the per-job features (serial groups, unique mode, concurrency and rate
        limits) as one condition that a job using none of them passes at once.

        One CASE rather than five conditions for the planner: without statistics (a new or
        truncated table) it takes each ``column IS NULL`` to hold for 0.5 % of the rows, so
        with every guard a condition of its own the claim looked like it would return about
        one row, the LIMIT looked useless, and the generic plan read and sorted every
        claimable job instead of walking the claim index (15.9 ms instead of 0.46 ms for a
        claim of 100 at 4,000 jobs; see also ``schema.analyze_paused_queues``). A CASE counts
        as one condition of unknown selectivity, and at execution a job using none of these
        features passes on four column tests, no guard evaluated."""
        plain = and_(
            j.c.serial_group.is_(None),
            ~j.c.is_unique,
            j.c.concurrency_key.is_(None),
            j.c.rate_key.is_(None),
        )
        guarded = and_(
            facts["serial_group_idle"],
            facts["serial_group_head"],
            ~facts["unique_sibling_processing"],
            self._slot_free(j),
            self._rate_free(j),
        )
        return case((plain, true()), else_=guarded)

    def _rate_free(self, j: Any) -> Any:
        """RATE-002/003: a job with a rate key is fetched only while the window of ``now`` for
        its period has fewer claims of its key than its limit. Which slot of the window the
        claim takes is decided at the write, under the primary key of the rate slots."""
        r = self.tables.rate_slots.alias("r")
        now = bindparam("now", type_=BigInteger())
        window = now - now.op("%")(j.c.rate_period_ms)
        taken = (
            select(func.count())
            .where(r.c.rate_key == j.c.rate_key, r.c.window_start == window)
            .scalar_subquery()
        )
        return or_(j.c.rate_key.is_(None), taken < j.c.rate_limit)

    def _slot_free(self, j: Any) -> Any:
        """CONC-002/003: a job with a concurrency key is fetched only while its key holds
        fewer slots than its limit, so a full key never holds back other jobs. Which slot it
        gets is decided at the write, under the unique index of the slots."""
        c = self.tables.jobs.alias("c")
        held = (
            select(func.count())
            .where(c.c.concurrency_key == j.c.concurrency_key, c.c.concurrency_slot.is_not(None))
            .scalar_subquery()
        )
        return or_(j.c.concurrency_key.is_(None), held < j.c.concurrency_limit)
