"""The SQL store over SQLAlchemy 2 Core: SQLite (the embedded default), PostgreSQL, MariaDB.

Claims are conditional updates (``WHERE id = ? AND state = ? AND lease_token = ?``), and the
lock columns carry unique indexes, so a redelivered or concurrent claim can never start a
job twice, and two jobs of one serial group can never be leased at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    String,
    Table,
    Update,
    bindparam,
    create_engine,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from ...clock import SystemClock, from_ms, to_ms
from ...errors import ConfigurationError, StoreUnavailable
from ...model import Batch, Job, WorkerRecord, replace
from ..base import (
    SCHEDULE_RUNS_KEPT,
    Backlog,
    Candidate,
    ClaimPlan,
    ClaimQuery,
    FinishPlan,
    JobFilter,
    PlannedClaim,
    ScheduleRun,
    StateSets,
    UniqueClaim,
)
from .claim import (
    DUE_WAITING,
    FACTS,
    IMPLIED_FACTS,
    IN_CLAIM_INDEX,
    PLANNED_OLD_COLUMNS,
    ClaimStatements,
    Shape,
)
from .dialects import (
    Dialect,
    EndWatch,
    EndWatchBlocked,
    PostgresListener,
    configure_postgresql,
    configure_sqlite,
    ended_channel,
    ends_unwatched_sql,
    local_settings,
    masked,
    notify_channel,
    schema_transaction,
    upsert_adding,
)
from .direct import Compiled, DirectStatements
from .locks import acquire_named, command_lock, release_named
from .plannedclaim import PlannedClaims, PostgresPlannedClaims, SqlitePlannedClaims
from .plannedfinish import PlannedFinishes, PostgresPlannedFinishes, SqlitePlannedFinishes
from .rows import (
    Flags,
    changed_values,
    flags_of,
    job_from_row,
    progress_text,
    rows_of,
    written_values,
)
from .schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Tables,
    analyze_paused_queues,
    build_tables,
    current_version,
)
from .setwrites import SetWrites
from .uniqueclaims import forget_expired, hold_claim, lock_claim

log = logging.getLogger("conveyor.store")

IDLE_PING_SECONDS = 1.0
RATE_SLOTS_KEPT_MS = 86_400_000  # windows a day older than the current one are forgotten
# From this many jobs in one insert, PostgreSQL gets them by COPY (see _copy_jobs).
COPY_THRESHOLD = 8
# Delayed jobs moved into the claim index per claim, once due (see SqlTransaction._promote).
PROMOTE_LIMIT = 500


_LARGEST_ID = 2**63 - 1  # BIGINT


def row_id(text: object) -> int | None:
    """The row a job or batch id names, or None when no row can have that id.

    Ids are the decimal text of a BIGINT: ASCII digits, no leading zero. (``str.isdigit``
    also takes ``"²"`` and ``"٣"``, and ``int("2" * 30)`` overflows the column: a database
    error instead of "not found".)
    """
    if not isinstance(text, str) or not (0 < len(text) <= 19) or not text.isascii():
        return None
    if not text.isdigit() or text.startswith("0"):
        return None
    value = int(text)
    return value if value <= _LARGEST_ID else None


# Below PostgreSQL's 8000-byte limit of a NOTIFY payload (ids are ASCII digits).
ENDS_PAYLOAD_BYTES = 7900


@functools.lru_cache(maxsize=64)
def _announced_insert(jobs: Table, columns: tuple[str, ...]) -> Select[Any]:
    """``INSERT ... RETURNING id`` of one row with its ``pg_notify``, built once per table."""
    values = {name: bindparam(name, type_=jobs.c[name].type) for name in columns}
    inserted = insert(jobs).values(values).returning(jobs.c.id).cte("inserted")
    return select(inserted.c.id, func.pg_notify(notify_channel(jobs.name), "").label("notified"))


class _JobsBefore(Mapping[str, Job]):
    """The jobs of a planned claim as they were, each read from its returned row (with the
    written columns' old values) only when asked for: broker mode asks for a few, a polling
    worker for none, and reading every row into a second job cost about a tenth of a
    worker's time per claimed job."""

    def __init__(self, rows: dict[str, Mapping[str, Any]]) -> None:
        self._rows = rows
        self._jobs: dict[str, Job] = {}

    def __getitem__(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            row = self._rows[job_id]
            job = job_from_row(
                {**row, **{name: row[f"old_{name}"] for name in PLANNED_OLD_COLUMNS}}
            )
            self._jobs[job_id] = job
        return job

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class SqlTransaction:
    def __init__(
        self,
        connection: Connection,
        tables: Tables,
        states: StateSets,
        dialect: Dialect,
        claims: ClaimStatements,
        direct: DirectStatements,
        announce: bool = True,
        set_writes: SetWrites | None = None,
        planned: PlannedClaims | None = None,
        finishes: PlannedFinishes | None = None,
    ) -> None:
        self.connection = connection
        self.set_writes = set_writes
        self.planned = planned
        self.finishes = finishes
        self.tables = tables
        self.states = states
        self.dialect = dialect
        self.claims = claims
        self.direct = direct
        self.announce = announce and dialect.name == "postgresql"
        self._promoted_until: int | None = None
        # Ended jobs whose dependents an outcome's write read in passing, and those dependents.
        self._read_for: set[str] = set()
        self._dependents: set[str] = set()
        # What the claim reads in claim order saw: how many, and the last one's count of the
        # claim index (None: not read in claim order) and whether a delayed job was due.
        self._claim_reads = 0
        self._in_claim_index: int | None = None
        self._due_waiting = False

    # -- jobs -----------------------------------------------------------------------------

    def insert_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        t = self.tables.jobs
        rows = rows_of(jobs, self._flags)
        ids: Sequence[int]
        announced = False
        if (
            self.dialect.name == "postgresql"
            and self.connection.dialect.driver == "psycopg"  # psycopg 3 has cursor.copy()
            and not self.connection.dialect.is_async  # (its blocking cursor, that is)
            and len(rows) >= COPY_THRESHOLD
        ):
            ids = self._copy_jobs(rows)
        elif self.dialect.name == "postgresql" and len(rows) == 1:
            ids, announced = self._insert_announced(rows[0]), True
        else:
            ids = (
                self.connection.execute(
                    insert(t).returning(t.c.id, sort_by_parameter_order=True), rows
                )
                .scalars()
                .all()
            )
        stored = [
            replace(job, id=str(i), sequence=int(i)) for job, i in zip(jobs, ids, strict=True)
        ]
        dependencies = [
            {"job_id": int(job.id), "depends_on_id": int(d)}
            for job in stored
            for d in job.depends_on
        ]
        if dependencies:
            self.connection.execute(insert(self.tables.dependencies), dependencies)
        tags = [{"job_id": int(job.id), "tag": tag} for job in stored for tag in job.tags]
        if tags:
            self.connection.execute(insert(self.tables.tags), tags)
        if not announced:
            self._announce()
        return stored

    def _insert_announced(self, row: dict[str, Any]) -> list[int]:
        """One job on PostgreSQL: the insert and its wake-up in one statement, so a single
        publish costs one round trip fewer (the notification still waits for the commit)."""
        statement = _announced_insert(self.tables.jobs, tuple(row))
        return [found["id"] for found in self.direct.rows(self.connection, statement, row)]

    def _copy_jobs(self, rows: list[dict[str, Any]]) -> list[int]:
        """PostgreSQL bulk insert: ids drawn from the table's sequence, rows sent by COPY.

        A multi-row INSERT of this wide table makes the driver parse tens of thousands of
        placeholders per statement; COPY streams the values instead, in the same transaction.
        """
        table = self.connection.dialect.identifier_preparer.format_table(self.tables.jobs)
        quote = self.connection.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in ("id", *rows[0]))
        raw: Any = self.connection.connection.dbapi_connection  # a psycopg Connection
        with raw.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                (table, len(rows)),
            )
            ids = sorted(row[0] for row in cursor.fetchall())
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for job_id, row in zip(ids, rows, strict=True):
                    copy.write_row((job_id, *row.values()))
        return ids

    def _announce(self) -> None:
        """Wake sleeping PostgreSQL workers when this transaction commits."""
        if self.announce:
            self.connection.execute(
                select(func.pg_notify(notify_channel(self.tables.jobs.name), ""))
            )

    @staticmethod
    def _where(before: Job, changed: dict[str, Any]) -> dict[str, Any]:
        """Parameters of the conditional write: new values, and what the row must still be."""
        return {
            **{f"set_{name}": value for name, value in changed.items()},
            "w_id": int(before.id),
            "w_state": before.state,
            "w_token": before.lease_token,
            "w_expires": to_ms(before.lease.expires_at) if before.lease else None,
            "w_cancel": (to_ms(before.cancel_requested_at) if before.cancel_requested_at else None),
        }

    def _flags(self, job: Job) -> Flags:
        return flags_of(job, self.states)

    def get_job(self, job_id: str) -> Job | None:
        key = row_id(job_id)
        if key is None:
            return None
        row = (
            self.connection.execute(select(self.tables.jobs).where(self.tables.jobs.c.id == key))
            .mappings()
            .first()
        )
        return job_from_row(row) if row else None

    def get_jobs(self, job_ids: Collection[str]) -> list[Job]:
        wanted = [key for key in map(row_id, job_ids) if key is not None]
        if not wanted:
            return []
        t = self.tables.jobs
        rows = self.connection.execute(select(t).where(t.c.id.in_(wanted)).order_by(t.c.id))
        return [job_from_row(row) for row in rows.mappings()]

    def save_job(self, before: Job, after: Job, fields: frozenset[str] = frozenset()) -> bool:
        return self._save(before, after, self._changes(before, after, fields))

    def write_progress(self, job_id: str, lease_token: int, progress: dict[str, Any]) -> bool:
        key = row_id(job_id)
        if key is None:
            return False
        t = self.tables.jobs
        statement = (
            update(t)
            .where(
                t.c.id == key,
                t.c.lease_token == lease_token,
                t.c.state.in_(sorted(self.states.leased)),
            )
            .values(progress=progress_text(progress))
        )
        return self.connection.execute(statement).rowcount == 1

    def _save(self, before: Job, after: Job, changed: dict[str, Any]) -> bool:
        statement = self.claims.update_statement(frozenset(changed), before.lease is None)
        parameters = self._where(before, changed)
        if self._takes_locks(changed):
            # The lock columns may collide with a concurrent claim; isolate that in a savepoint.
            try:
                with self.connection.begin_nested():
                    written = self._write(statement, parameters)
            except IntegrityError:
                return False
        else:
            written = self._write(statement, parameters)
        if self._announces(after):
            self._announce()
        if written == 1 and self._ends(before, after):
            self._announce_ends([after.id])
        return written == 1

    def _write(self, statement: Update, parameters: dict[str, Any]) -> int:
        return self.direct.rowcount(self.connection, statement, parameters)

    def save_jobs(
        self,
        changes: Sequence[tuple[Job, Job]],
        fields: Sequence[frozenset[str]] | None = None,
    ) -> bool:
        known = fields or [frozenset()] * len(changes)
        pending = [
            (before, after, self._changes(before, after, written))
            for (before, after), written in zip(changes, known, strict=True)
        ]
        if (len(pending) == 1 and not self._ends_alone(pending)) or any(
            self._takes_locks(changed) or self._announces(after) for _, after, changed in pending
        ):  # one at a time: savepoints for the lock columns, wake-ups for claimable jobs
            return all(self._save(before, after, changed) for before, after, changed in pending)
        # One statement per shape: on PostgreSQL a set-based UPDATE (setwrites), elsewhere an
        # executemany (psycopg would pipeline it into one round trip, still a statement each).
        # A lone outcome that ends its job takes the set-based form too: its end notice then
        # rides on the write, one statement instead of two.
        groups: dict[tuple[frozenset[str], bool], list[dict[str, Any]]] = {}
        for before, _, changed in pending:
            key = (frozenset(changed), before.lease is None)
            groups.setdefault(key, []).append(self._where(before, changed))
        ended = [after.id for before, after, _ in pending if self._ends(before, after)]
        notices = self._end_notices(ended)
        written = 0
        for (columns, unleased), parameters in groups.items():
            if self.set_writes is not None and (len(parameters) > 1 or len(notices) == 1):
                rows = SetWrites.parameters(parameters)
                if len(notices) == 1:  # the notice rides on this write: no statement of its own
                    sql = self.set_writes.statement_with_notice(columns, unleased)
                    notice = {
                        "channel": ended_channel(self.tables.jobs.name),
                        "notice": notices.pop(),
                    }
                    _, (answer,) = self.direct.execute(
                        self.connection,
                        Compiled(sql, ("written", "notified", "dependents")),
                        rows | notice,
                    )
                    written += int(answer["written"])
                    # ... and so does the lookup of the ended jobs' dependents (broker mode)
                    written_ids = {str(p["w_id"]) for p in parameters}
                    self._read_for.update(written_ids.intersection(ended))
                    self._dependents.update(str(i) for i in answer["dependents"])
                    continue
                sql, _ = self.set_writes.statement(columns, unleased)
                written += self.direct.execute(self.connection, Compiled(sql, ()), rows)[0]
                continue
            statement = self.claims.update_statement(columns, unleased)
            written += self.direct.rowcount(self.connection, statement, parameters)
        if notices and written == len(pending):
            self._notify_ends(notices)
        return written == len(pending)

    def finish_planned(
        self,
        plan: FinishPlan,
        reports: Sequence[tuple[Job, int, Mapping[str, Any]]],
        now: datetime,
    ) -> set[str] | None:
        if self.finishes is None:
            return None
        found = self.finishes.run(self.connection, plan, reports, to_ms(now))
        if found is None:
            return None
        written, dependents = found
        if dependents is not None:  # read in passing for the jobs it ended
            self._read_for.update(written)
            self._dependents.update(dependents)
        return written

    def dependents_read(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self._read_for), frozenset(self._dependents)

    def more_waiting(self, taken: int) -> bool | None:
        if self._claim_reads != 1 or self._in_claim_index is None:
            return None  # several reads (jobs passed over): the last one's count says little
        return self._due_waiting or self._in_claim_index > taken

    def _ends_alone(self, pending: list[tuple[Job, Job, dict[str, Any]]]) -> bool:
        """One outcome, ending its job, that the set-based write can carry with its notice."""
        before, after, _ = pending[0]
        return self.set_writes is not None and self._ends(before, after)

    def _ends(self, before: Job, after: Job) -> bool:
        """A job that reaches a terminal state, on PostgreSQL: callers waiting for it
        (RESULT-004) are told by NOTIFY."""
        terminal = self.states.terminal
        return (
            self.dialect.name == "postgresql"
            and after.state in terminal
            and before.state not in terminal
        )

    def _announce_ends(self, job_ids: list[str]) -> None:
        """NOTIFY the ended jobs' ids on the ends channel, sent when the transaction commits,
        so a waiter wakes only for its own job."""
        self._notify_ends(self._end_notices(job_ids))

    @staticmethod
    def _end_notices(job_ids: list[str]) -> list[str]:
        """The ids comma-separated, in as few notices as the 8000-byte payload limit allows
        (one per batch of outcomes as a rule): each costs the server a queue entry, whoever
        listens."""
        notices: list[str] = []
        for job_id in job_ids:
            if notices and len(notices[-1]) + len(job_id) < ENDS_PAYLOAD_BYTES:
                notices[-1] += f",{job_id}"
            else:
                notices.append(job_id)
        return notices

    def _notify_ends(self, notices: list[str]) -> None:
        """The notices, unless nobody watches the ends channel."""
        channel = ended_channel(self.tables.jobs.name)
        texts = bindparam("payloads", type_=ARRAY(String))
        unwatched = sql_text(f"NOT {ends_unwatched_sql(':channel')}")
        self.connection.execute(
            select(func.pg_notify(channel, func.unnest(texts))).where(unwatched),
            {"payloads": notices, "channel": channel},
        )

    def _changes(self, before: Job, after: Job, fields: frozenset[str]) -> dict[str, Any]:
        if fields:  # what the transition writes, known from the machine file
            changed = written_values(before, after, self._flags(before), self._flags(after), fields)
        else:
            changed = changed_values(before, after, self._flags(before), self._flags(after))
        # Nothing changed (a heartbeat at the instant of the claim): still check the row.
        return changed or {"updated_at": to_ms(after.updated_at)}

    @staticmethod
    def _takes_locks(changed: dict[str, Any]) -> bool:
        return (
            changed.get("group_lock") is not None
            or changed.get("unique_lock") is not None
            or changed.get("concurrency_slot") is not None
        )

    def _announces(self, job: Job) -> bool:
        return (
            self.announce
            and job.state in self.states.claimable
            and job.available_at <= job.updated_at
        )

    def candidates(self, query: ClaimQuery, now: datetime, limit: int) -> Iterator[Candidate]:
        if query.job_id is not None and row_id(query.job_id) is None:
            return
        if query.job_ids:
            valid = tuple(job_id for job_id in query.job_ids if row_id(job_id) is not None)
            if not valid:
                return
            query = dataclasses.replace(query, job_ids=valid)
        now_ms = to_ms(now)
        statement = self.claims.statement(query)
        parameters = self.claims.parameters(query, now_ms, limit)
        found = self.direct.rows(self.connection, statement, parameters)
        in_order = query.job_id is None and not query.job_ids  # by id, delayed rows count too
        if in_order and (not found or found[0][DUE_WAITING]) and self._promote(now_ms):
            # Delayed jobs became due: promoted, they take their places in claim order. The
            # rows read first stay locked by this transaction, which may read them again.
            found = self.direct.rows(self.connection, statement, parameters)
        self._claim_reads += 1
        counted = in_order and found and parameters.get("ahead", 0) > 0
        self._in_claim_index = int(found[0][IN_CLAIM_INDEX]) if counted else None
        self._due_waiting = bool(in_order and found and found[0][DUE_WAITING])
        rows: Iterable[Any] = found
        if query.job_ids:  # fetched unordered (claim.py): a few rows, in claim order here
            # (priority, not claim_priority: a due job not yet promoted has none)
            rows = sorted(rows, key=lambda row: (row["priority"], row["id"]))
        for row in rows:  # rows become jobs only as the claimer consumes them
            facts = {
                name: IMPLIED_FACTS[name] if name in IMPLIED_FACTS else bool(row[name])
                for name in FACTS
            }
            yield Candidate(job=job_from_row(row), **facts)

    def claim_planned(
        self,
        plan: ClaimPlan,
        query: ClaimQuery,
        now: datetime,
        due_by: datetime,
        params: Mapping[str, Any],
        limit: int,
        skip: Collection[str],
    ) -> PlannedClaim | None:
        if self.planned is None:
            return None
        if query.job_id is not None and row_id(query.job_id) is None:
            return PlannedClaim([], {}, True)
        if query.job_ids:
            valid = tuple(job_id for job_id in query.job_ids if row_id(job_id) is not None)
            if not valid:
                return PlannedClaim([], {}, True)
            query = dataclasses.replace(query, job_ids=valid)
        at = to_ms(now)
        parameters = self.claims.parameters(query, to_ms(due_by), limit)
        parameters.update(
            limit=limit,  # of the named jobs too: the first in claim order
            at=at,
            worker_id=str(params["worker_id"]),
            expires=at + int(params["lease_ms"]),
            skip=[key for key in map(row_id, skip) if key is not None],
        )
        found = self.planned.run(self.connection, plan, Shape.of(query), parameters)
        if found is None:
            return None
        self._claim_reads += 1
        self._due_waiting = found.due_waiting
        counted = parameters.get("ahead", 0) > 0
        self._in_claim_index = int(found.in_claim_index or 0) if counted else None
        # in claim order (the rows an UPDATE returns come in no promised order)
        claimed = sorted(found.rows, key=lambda row: (row["priority"], row["id"]))
        jobs = [job_from_row(row) for row in claimed]
        before = _JobsBefore({job.id: row for job, row in zip(jobs, claimed, strict=True)})
        complete = not found.due_waiting and found.picked == len(jobs)
        return PlannedClaim(jobs, before, complete)

    def _promote(self, now_ms: int) -> bool:
        """Move the delayed jobs due by ``now_ms`` into the claim index, earliest due first
        (at most PROMOTE_LIMIT per claim), so the claim that follows in this transaction
        sees them in claim order; whether any moved. At most once per transaction and
        moment: a claim's further passes do not look again."""
        if self._promoted_until is not None and now_ms <= self._promoted_until:
            return False
        self._promoted_until = now_ms
        ids = [
            row["id"]
            for row in self.direct.rows(
                self.connection,
                self.claims.due_statement(),
                {"now": now_ms, "limit": PROMOTE_LIMIT},
            )
        ]
        if ids:
            self.connection.execute(self.claims.promote_statement(), {"ids": ids})
        return bool(ids)

    def dependents(self, job_id: str) -> list[Job]:
        t, d = self.tables.jobs, self.tables.dependencies
        rows = self.connection.execute(
            select(t)
            .join(d, d.c.job_id == t.c.id)
            .where(d.c.depends_on_id == int(job_id), t.c.state.in_(self.states.active))
            .order_by(t.c.id)
        )
        return [job_from_row(row) for row in rows.mappings()]

    def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t)
            .where(t.c.state.in_(self.states.leased), t.c.lease_expires_at <= to_ms(now))
            .order_by(t.c.id)
            .limit(limit)
        )
        return [job_from_row(row) for row in rows.mappings()]

    def next_lease_expiry(self) -> datetime | None:
        t = self.tables.jobs
        # Served by the partial index over lease_expires_at: only leased rows are in it.
        earliest = self.connection.execute(
            select(func.min(t.c.lease_expires_at)).where(t.c.lease_expires_at.is_not(None))
        ).scalar_one()
        return None if earliest is None else from_ms(int(earliest))

    def due_jobs(self, states: Collection[str], now: datetime, limit: int) -> list[Job]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t)
            .where(t.c.state.in_(list(states)), t.c.available_at <= to_ms(now))
            .order_by(t.c.priority, t.c.id)
            .limit(limit)
        )
        return [job_from_row(row) for row in rows.mappings()]

    def find_jobs(self, query: JobFilter) -> list[Job]:
        t = self.tables.jobs
        statement = select(t).where(t.c.id > query.after_sequence)
        if query.states:
            statement = statement.where(t.c.state.in_(query.states))
        if query.queue is not None:
            statement = statement.where(t.c.queue == query.queue)
        if query.identifier is not None:
            statement = statement.where(t.c.identifier == query.identifier)
        if query.serial_group is not None:
            statement = statement.where(t.c.serial_group == query.serial_group)
        if query.batch_id is not None:
            statement = statement.where(t.c.batch_id == (row_id(query.batch_id) or -1))
        if query.tag is not None:
            tags = self.tables.tags
            statement = statement.where(
                t.c.id.in_(select(tags.c.job_id).where(tags.c.tag == query.tag))
            )
        rows = self.connection.execute(statement.order_by(t.c.id).limit(query.limit))
        return [job_from_row(row) for row in rows.mappings()]

    def backlog(self, now: datetime, settled_before: datetime, id_limit: int) -> list[Backlog]:
        moments = {"now": to_ms(now), "settled": to_ms(settled_before)}
        rows = self.connection.execute(self.claims.backlog_statement(), moments).all()
        found = []
        for queue, priority, claimable, needy in rows:
            ids: tuple[str, ...] = ()
            if needy and id_limit > 0:
                parameters = {**moments, "queue": queue, "priority": priority, "limit": id_limit}
                selected = self.connection.execute(self.claims.needy_statement(), parameters)
                ids = tuple(str(i) for i in selected.scalars())
            found.append(Backlog(queue, int(priority), int(claimable), int(needy or 0), ids))
        return found

    def related_claimable(
        self,
        now: datetime,
        serial_groups: Collection[str],
        identifiers: Collection[str],
        dependencies_of: Collection[str],
        limit: int,
        concurrency_keys: Collection[str] = (),
        among: Collection[str] = (),
    ) -> list[tuple[str, str, int]]:
        # One small indexed lookup per relation, then the claim guard on those ids only: the
        # common case (no group, no dependents) costs one index probe on the dependencies.
        t, d = self.tables.jobs, self.tables.dependencies
        claimable = list(self.states.claimable)
        ids: set[int] = {key for key in map(row_id, among) if key is not None}
        if serial_groups:
            ids.update(
                self.connection.execute(
                    select(t.c.id).where(
                        t.c.serial_group.in_(list(serial_groups)), t.c.state.in_(claimable)
                    )
                ).scalars()
            )
        if identifiers:
            ids.update(
                self.connection.execute(
                    select(t.c.id).where(
                        t.c.identifier.in_(list(identifiers)),
                        t.c.is_unique,
                        t.c.state.in_(claimable),
                    )
                ).scalars()
            )
        if concurrency_keys:  # the first ones by claim order: a freed slot takes one of them
            ids.update(
                self.connection.execute(
                    select(t.c.id)
                    .where(
                        t.c.concurrency_key.in_(list(concurrency_keys)),
                        t.c.state.in_(claimable),
                    )
                    .order_by(t.c.priority, t.c.id)
                    .limit(limit)
                ).scalars()
            )
        targets = [key for key in map(row_id, dependencies_of) if key is not None]
        if targets:
            ids.update(
                self.connection.execute(
                    select(d.c.job_id).where(d.c.depends_on_id.in_(targets))
                ).scalars()
            )
        if not ids:
            return []
        rows = self.connection.execute(
            self.claims.claimable_among_statement(),
            {"now": to_ms(now), "ids": sorted(ids)},
        )
        return [(str(i), queue, int(priority)) for i, queue, priority in rows][:limit]

    def unfinished_identifiers(self, identifiers: Collection[str]) -> set[str]:
        if not identifiers:
            return set()
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t.c.identifier)
            .where(t.c.identifier.in_(list(identifiers)), t.c.state.in_(self.states.unfinished))
            .distinct()
        )
        return {row[0] for row in rows}

    def delete_prunable(self, finished_before: datetime, limit: int) -> int:
        t, d, dep = self.tables.jobs, self.tables.dependencies, self.tables.jobs.alias("dependent")
        needed = exists(
            select(literal(1))
            .select_from(d.join(dep, dep.c.id == d.c.job_id))
            .where(d.c.depends_on_id == t.c.id, dep.c.state.in_(self.states.active))
        )
        ids = (
            self.connection.execute(
                select(t.c.id)
                .where(
                    t.c.state.in_(self.states.prunable),
                    t.c.finished_at < to_ms(finished_before),
                    ~needed,
                )
                # No order: the scan of ix_prune stops at the limit. Ordered by id, every
                # chunk read and sorted all the prunable rows (23 s for 120,000 of a
                # million-job table, against 2,500 in 0.08 s of a 5,000-job one).
                .limit(limit)
            )
            .scalars()
            .all()
        )
        if not ids:
            return 0
        self.connection.execute(delete(self.tables.tags).where(self.tables.tags.c.job_id.in_(ids)))
        self.connection.execute(delete(d).where(d.c.job_id.in_(ids)))
        return self.connection.execute(delete(t).where(t.c.id.in_(ids))).rowcount

    def counts(self) -> list[tuple[str, str, int]]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t.c.queue, t.c.state, func.count())
            .group_by(t.c.queue, t.c.state)
            .order_by(t.c.queue, t.c.state)
        )
        return [(queue, state, int(count)) for queue, state, count in rows]

    # -- paused queues --------------------------------------------------------------------

    def pause_queue(self, queue: str, now: datetime) -> bool:
        p = self.tables.paused_queues
        paused = self.connection.execute(select(p.c.queue).where(p.c.queue == queue)).first()
        if paused is not None:
            return False
        try:
            with self.connection.begin_nested():
                self.connection.execute(insert(p).values(queue=queue, paused_at=to_ms(now)))
        except IntegrityError:  # another operator paused it at the same moment
            return False
        return True

    def resume_queue(self, queue: str) -> bool:
        p = self.tables.paused_queues
        resumed = bool(self.connection.execute(delete(p).where(p.c.queue == queue)).rowcount)
        if resumed:
            self._announce()  # waiting workers may claim the queue's jobs again
        return resumed

    def paused_queues(self) -> list[tuple[str, datetime]]:
        p = self.tables.paused_queues
        rows = self.connection.execute(select(p.c.queue, p.c.paused_at).order_by(p.c.queue))
        return [(str(queue), from_ms(int(paused_at))) for queue, paused_at in rows]

    # -- workers --------------------------------------------------------------------------

    def save_worker(self, record: WorkerRecord) -> None:
        w = self.tables.workers
        values = {
            "host": record.host,
            "pid": record.pid,
            "started_at": to_ms(record.started_at),
            "heartbeat_at": to_ms(record.heartbeat_at),
            "queues": json.dumps(list(record.queues)),
            "concurrency": record.concurrency,
            "running": json.dumps(list(record.running)),
            "memory_bytes": record.memory_bytes,
        }
        updated = self.connection.execute(update(w).where(w.c.id == record.id).values(values))
        if updated.rowcount:
            return
        try:
            with self.connection.begin_nested():
                self.connection.execute(insert(w).values(id=record.id, **values))
        except IntegrityError:  # inserted meanwhile by the same worker's earlier beat
            self.connection.execute(update(w).where(w.c.id == record.id).values(values))

    def delete_workers(
        self, worker_ids: Collection[str] = (), seen_before: datetime | None = None
    ) -> int:
        w = self.tables.workers
        deleted = 0
        if worker_ids:
            deleted += self.connection.execute(
                delete(w).where(w.c.id.in_(list(worker_ids)))
            ).rowcount
        if seen_before is not None:
            deleted += self.connection.execute(
                delete(w).where(w.c.heartbeat_at < to_ms(seen_before))
            ).rowcount
        return deleted

    def workers(self) -> list[WorkerRecord]:
        w = self.tables.workers
        rows = self.connection.execute(select(w).order_by(w.c.id)).mappings()
        return [
            WorkerRecord(
                id=row["id"],
                host=row["host"],
                pid=int(row["pid"]),
                started_at=from_ms(int(row["started_at"])),
                heartbeat_at=from_ms(int(row["heartbeat_at"])),
                queues=tuple(json.loads(row["queues"])),
                concurrency=int(row["concurrency"]),
                running=tuple(json.loads(row["running"])),
                memory_bytes=None if row["memory_bytes"] is None else int(row["memory_bytes"]),
            )
            for row in rows
        ]

    def ended_by_minute(self, since: datetime) -> list[tuple[int, str, int]]:
        t = self.tables.jobs
        # FLOOR of a division: an integer on every database (MariaDB's / gives a decimal).
        minute = func.floor(t.c.finished_at / 60_000).label("minute")
        rows = self.connection.execute(
            select(minute, t.c.state, func.count())
            # the states first: one range of the (state, finished_at) index per state
            .where(t.c.state.in_(sorted(self.states.terminal)), t.c.finished_at >= to_ms(since))
            .group_by(minute, t.c.state)
            .order_by(minute, t.c.state)
        )
        return [(int(m), state, int(count)) for m, state, count in rows]

    def ended_executions(self, since: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t.c.queue, t.c.execution)
            # the states first: one range of the (state, finished_at) index per state
            .where(
                t.c.state.in_(sorted(self.states.terminal)),
                t.c.finished_at >= to_ms(since),
                t.c.execution.is_not(None),
            )
            .order_by(t.c.finished_at.desc())
            .limit(limit)
        )
        return [(queue, json.loads(execution)) for queue, execution in rows]

    # -- counters of the metrics -----------------------------------------------------------

    def add_to_counters(self, counts: Mapping[tuple[str, str], int]) -> None:
        c = self.tables.counters
        for (name, queue), count in sorted(counts.items()):  # one lock order for every writer
            if count:
                self.connection.execute(upsert_adding(self.dialect, c, name, queue, count))

    def counters(self) -> list[tuple[str, str, int]]:
        c = self.tables.counters
        rows = self.connection.execute(
            select(c.c.name, c.c.queue, c.c.value).order_by(c.c.name, c.c.queue)
        )
        return [(name, queue, int(value)) for name, queue, value in rows]

    # -- batches --------------------------------------------------------------------------

    def insert_batch(self, batch: Batch) -> Batch:
        b = self.tables.batches
        batch_id = self.connection.execute(
            insert(b).returning(b.c.id),
            [
                {
                    "state": batch.state,
                    "total": batch.total,
                    "completion": json.dumps(batch.completion) if batch.completion else None,
                    "created_at": to_ms(batch.created_at),
                    "finished_at": None,
                }
            ],
        ).scalar_one()
        return replace(batch, id=str(batch_id))

    def get_batch(self, batch_id: str) -> Batch | None:
        key = row_id(batch_id)
        if key is None:
            return None
        b = self.tables.batches
        row = self.connection.execute(select(b).where(b.c.id == key)).mappings().first()
        return None if row is None else _batch_from_row(row)

    def batches(self, after: str | None, limit: int) -> list[Batch]:
        b = self.tables.batches
        start = (row_id(after) or 0) if after is not None else 0
        rows = self.connection.execute(
            select(b).where(b.c.id > start).order_by(b.c.id).limit(limit)
        ).mappings()
        return [_batch_from_row(row) for row in rows]

    def batch_counts(self, batch_ids: Collection[str]) -> list[tuple[str, str, int]]:
        keys = sorted({key for key in map(row_id, batch_ids) if key is not None})
        if not keys:
            return []
        t = self.tables.jobs
        rows = self.connection.execute(
            # one range of the (batch_id, state) index per batch
            select(t.c.batch_id, t.c.state, func.count())
            .where(t.c.batch_id.in_(keys))
            .group_by(t.c.batch_id, t.c.state)
            .order_by(t.c.batch_id, t.c.state)
        )
        return [(str(batch), state, int(count)) for batch, state, count in rows]

    def serial_groups(self, after: str | None, limit: int) -> list[tuple[str, int]]:
        t = self.tables.jobs
        statement = select(t.c.serial_group, func.count()).where(
            t.c.serial_group.is_not(None), t.c.state.in_(sorted(self.states.active))
        )
        if after is not None:
            statement = statement.where(t.c.serial_group > after)
        rows = self.connection.execute(
            # the (serial_group, state) index, read in group order
            statement.group_by(t.c.serial_group).order_by(t.c.serial_group).limit(limit)
        )
        return [(group, int(count)) for group, count in rows]

    def serial_group_queue(self, group: str, limit: int) -> list[Job]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t)
            .where(t.c.serial_group == group, t.c.state.in_(sorted(self.states.active)))
            .order_by(t.c.priority, t.c.id)
            .limit(limit)
        )
        return [job_from_row(row) for row in rows.mappings()]

    def save_batch(self, batch: Batch) -> None:
        b = self.tables.batches
        self.connection.execute(
            update(b)
            .where(b.c.id == int(batch.id))
            .values(
                state=batch.state,
                total=batch.total,
                finished_at=to_ms(batch.finished_at) if batch.finished_at else None,
            )
        )

    def concurrency_slots(self, key: str) -> set[int]:
        t = self.tables.jobs
        rows = self.connection.execute(
            select(t.c.concurrency_slot).where(
                t.c.concurrency_key == key, t.c.concurrency_slot.is_not(None)
            )
        )
        return {int(slot) for slot in rows.scalars()}

    def lock_unique_claim(self, key: str) -> UniqueClaim:
        return lock_claim(self.connection, self.tables.unique_claims, self.dialect.name, key)

    def hold_unique_claim(self, claim: UniqueClaim) -> None:
        hold_claim(self.connection, self.tables.unique_claims, claim)

    def forget_unique_claims(self, now: datetime, limit: int) -> int:
        return forget_expired(self.connection, self.tables.unique_claims, now, limit)

    def take_rate_slot(self, key: str, window_start: datetime, limit: int, job_id: str) -> bool:
        slots = self.tables.rate_slots
        start = to_ms(window_start)
        taken = set(
            self.connection.execute(
                select(slots.c.slot).where(slots.c.rate_key == key, slots.c.window_start == start)
            ).scalars()
        )
        for slot in range(limit):
            if slot in taken:
                continue
            try:
                with self.connection.begin_nested():  # a concurrent claim may take it first
                    self.connection.execute(
                        insert(slots).values(
                            rate_key=key, window_start=start, slot=slot, job_id=int(job_id)
                        )
                    )
            except IntegrityError:
                continue
            if slot == 0:  # once per window: forget the windows of the key long over
                self.connection.execute(
                    delete(slots).where(
                        slots.c.rate_key == key, slots.c.window_start < start - RATE_SLOTS_KEPT_MS
                    )
                )
            return True
        return False

    def insert_schedule_run(self, name: str, fire_at: datetime, now: datetime) -> bool:
        runs = self.tables.schedule_runs
        at = to_ms(fire_at)
        try:
            # A savepoint: a conflict with a run another process recorded (CRON-003) must
            # leave the caller's transaction usable.
            with self.connection.begin_nested():
                self.connection.execute(
                    insert(runs).values(name=name, fire_at=at, created_at=to_ms(now))
                )
        except IntegrityError:
            return False
        horizon = to_ms(fire_at - SCHEDULE_RUNS_KEPT)
        self.connection.execute(delete(runs).where(runs.c.name == name, runs.c.fire_at < horizon))
        return True

    def set_schedule_run_job(self, name: str, fire_at: datetime, job_id: str) -> None:
        runs = self.tables.schedule_runs
        self.connection.execute(
            update(runs)
            .where(runs.c.name == name, runs.c.fire_at == to_ms(fire_at))
            .values(job_id=int(job_id))
        )

    def last_schedule_run(self, name: str, with_job: bool = False) -> ScheduleRun | None:
        runs = self.tables.schedule_runs
        query = select(runs.c.fire_at, runs.c.job_id).where(runs.c.name == name)
        if with_job:
            query = query.where(runs.c.job_id.is_not(None))
        row = self.connection.execute(query.order_by(runs.c.fire_at.desc()).limit(1)).first()
        if row is None:
            return None
        return ScheduleRun(
            name, from_ms(row.fire_at), None if row.job_id is None else str(row.job_id)
        )

    def unsettled_in_batch(self, batch_id: str) -> int:
        t = self.tables.jobs
        return int(
            self.connection.execute(
                select(func.count()).where(
                    t.c.batch_id == int(batch_id), t.c.state.not_in(self.states.terminal)
                )
            ).scalar_one()
        )


def _batch_from_row(row: RowMapping) -> Batch:
    return Batch(
        id=str(row["id"]),
        state=row["state"],
        total=row["total"],
        created_at=from_ms(row["created_at"]),
        completion=json.loads(row["completion"]) if row["completion"] else None,
        finished_at=from_ms(row["finished_at"]) if row["finished_at"] is not None else None,
    )


class _ThreadEnd:
    """Lives in a thread's locals only: collected when the thread ends (see SqlStore._hold)."""


class SqlStore:
    """Jobs in a relational database; the schema is created or upgraded on first use."""

    def __init__(
        self,
        url: str,
        states: StateSets,
        table_prefix: str = "conveyor_",
        engine: Engine | None = None,
        create_schema: bool = True,
        announce: bool = True,
    ) -> None:
        parsed = make_url(url)
        self.announce = announce  # NOTIFY waiting workers of claimable jobs (not in broker mode)
        self.display_url = masked(parsed)
        self.states = states
        self.tables = build_tables(table_prefix)
        own_engine = engine is None
        if engine is None:
            engine = self._create_engine(parsed)
        self.engine = engine
        self._own_engine = own_engine
        self.dialect = Dialect.of(engine)
        self.claims = ClaimStatements(self.tables, states, self.dialect)
        # Only on engines Conveyor made: a caller's engine keeps every statement visible to
        # its own cursor events.
        self.direct = DirectStatements(engine.dialect, enabled=own_engine)
        preparer = engine.dialect.identifier_preparer
        self.set_writes = (
            SetWrites(
                self.tables.jobs,
                preparer.quote,
                preparer.format_table(self.tables.jobs),
                preparer.format_table(self.tables.dependencies),
            )
            if self.direct.enabled and self.dialect.name == "postgresql"
            else None
        )
        # A worker's claim of plain jobs without firing the machine per job (plannedclaim.py):
        # one statement on PostgreSQL (with psycopg, likewise), a read and a write on SQLite.
        self.planned: PlannedClaims | None = None
        if self.set_writes is not None:
            self.planned = PostgresPlannedClaims(
                self.claims,
                self.direct,
                states,
                preparer.format_table(self.tables.jobs),
                preparer.quote,
            )
        elif self.dialect.name == "sqlite" and SqlitePlannedClaims.available():
            self.planned = SqlitePlannedClaims(
                self.claims, states, preparer.format_table(self.tables.jobs), preparer.quote
            )
        # ... and its successes of plain jobs on their last request (plannedfinish.py)
        self.finishes: PlannedFinishes | None = None
        if self.set_writes is not None:
            self.finishes = PostgresPlannedFinishes(
                self.tables.jobs,
                states,
                self.direct,
                preparer.format_table(self.tables.jobs),
                preparer.format_table(self.tables.dependencies),
                preparer.quote,
                ended_channel(self.tables.jobs.name),
                ENDS_PAYLOAD_BYTES // 20,  # an id and its comma: at most 20 characters
            )
        elif self.dialect.name == "sqlite" and SqlitePlannedFinishes.available():
            self.finishes = SqlitePlannedFinishes(
                self.tables.jobs, states, preparer.format_table(self.tables.jobs), preparer.quote
            )
        self._listener = (
            PostgresListener(engine.url, notify_channel(self.tables.jobs.name))
            if self.dialect.name == "postgresql"
            else None
        )
        self._idle = threading.Event()
        self._local = threading.local()
        self._connections: set[Connection] = set()
        self._connections_lock = threading.Lock()
        if create_schema:
            self.update_schema()

    def _create_engine(self, parsed: Any) -> Engine:
        if parsed.get_backend_name() == "sqlite":
            synchronous = parsed.query.get("synchronous", "FULL")
            parsed = parsed.difference_update_query(["synchronous"])
            engine = create_engine(parsed)
            configure_sqlite(engine, str(synchronous).upper())
            return engine
        # No pool_pre_ping: each thread keeps its connection (see _connection), pinged only
        # after it sat idle, so a busy worker pays no extra round trip per transaction.
        engine = create_engine(parsed)
        if parsed.get_backend_name() == "postgresql":
            configure_postgresql(engine)
        return engine

    def update_schema(self) -> int:
        """Bring the schema to the latest version; safe when several processes start at once."""
        try:
            lock_name = f"{self.tables.jobs.name}-schema"
            with (
                self.engine.connect() as connection,
                schema_transaction(connection, self.dialect, lock_name),
            ):
                version = current_version(connection, self.tables)
                for step in MIGRATIONS[version:]:
                    step(connection, self.tables)
                if version < SCHEMA_VERSION:
                    now = to_ms(SystemClock().now())
                    connection.execute(
                        insert(self.tables.schema),
                        [
                            {"version": v, "applied_at": now}
                            for v in range(version + 1, SCHEMA_VERSION + 1)
                        ],
                    )
        except OperationalError as error:
            raise StoreUnavailable(
                f"cannot reach the database at {self.display_url}: {error.orig}; check that it "
                "is running and that the URL (CONVEYOR_URL or --url) is right"
            ) from None
        # Outside the schema's transaction and its lock: processes starting together must not
        # queue behind one another's ANALYZE, and a slow one only costs a better plan.
        analyze_paused_queues(self.engine, self.tables)
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        with self.engine.connect() as connection:
            return current_version(connection, self.tables)

    def _connection(self) -> Connection:
        """This thread's connection: reused across transactions, checked after idling."""
        held: Connection | None = getattr(self._local, "connection", None)
        if held is not None and not held.invalidated and not held.closed:
            if time.monotonic() - self._local.last_used > IDLE_PING_SECONDS:
                try:
                    with held.begin():
                        held.exec_driver_sql("SELECT 1")
                except DBAPIError:
                    self._forget(held)
                    held = None
            if held is not None:
                return held
        connection = self.engine.connect()
        self._local.connection = connection
        self._hold(connection, "connection")
        return connection

    def _hold(self, connection: Connection, name: str) -> None:
        """Track this thread's ``connection`` and give it back to the pool when the thread
        ends: a thread of a pool that comes and goes (a web server's, anyio's) would otherwise
        keep it checked out for ever, and after the pool's size such threads wait for one."""
        with self._connections_lock:
            self._connections.add(connection)
        ended = _ThreadEnd()
        setattr(self._local, f"{name}_end", ended)  # dropped with the thread's locals
        weakref.finalize(ended, self._release, connection)

    def _release(self, connection: Connection) -> None:
        with self._connections_lock:
            if connection not in self._connections:
                return  # forgotten or closed already
            self._connections.discard(connection)
        with contextlib.suppress(DBAPIError):
            connection.close()

    def _forget(self, connection: Connection) -> None:
        self._local.connection = None
        with self._connections_lock:
            self._connections.discard(connection)
        with contextlib.suppress(DBAPIError):
            connection.invalidate()
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        connection = self._connection()
        try:
            with connection.begin():
                if not self._own_engine:
                    local_settings(connection, self.dialect)
                yield self._transaction_on(connection)
        except DBAPIError as error:
            self._forget_if_broken(connection, error)
            raise
        finally:
            self._local.last_used = time.monotonic()

    def _forget_if_broken(self, connection: Connection, error: DBAPIError) -> None:
        """Drop this thread's connection when the error says it is lost."""
        if error.connection_invalidated or isinstance(error, OperationalError | InterfaceError):
            self._forget(connection)

    def _transaction_on(self, connection: Connection) -> SqlTransaction:
        return SqlTransaction(
            connection,
            self.tables,
            self.states,
            self.dialect,
            self.claims,
            self.direct,
            self.announce,
            self.set_writes,
            self.planned,
            self.finishes,
        )

    @contextmanager
    def autocommit(self) -> Iterator[SqlTransaction]:
        connection: Connection | None = getattr(self._local, "autocommit", None)
        if connection is None or connection.invalidated or connection.closed:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.autocommit = connection
            self._hold(connection, "autocommit")
        try:
            yield self._transaction_on(connection)
        except DBAPIError as error:
            if error.connection_invalidated or isinstance(error, OperationalError | InterfaceError):
                self._local.autocommit = None
                with self._connections_lock:
                    self._connections.discard(connection)
                with contextlib.suppress(DBAPIError):
                    connection.invalidate()
            raise

    @property
    def claims_alone(self) -> bool:
        return self.planned is not None and self.planned.alone

    def insert_alone(self, job: Job) -> Job | None:
        """PostgreSQL on Conveyor's own engine: the insert and its wake-up are one statement
        (``_insert_announced``), run on this thread's connection in autocommit, so neither a
        BEGIN nor a COMMIT costs a round trip (the statement is its own transaction). No
        second connection: the thread's connection is idle between its transactions."""
        if job.tags or job.depends_on or self.set_writes is None:  # PostgreSQL, own engine
            return None
        connection = self._connection()
        raw: Any = connection.connection.dbapi_connection
        row = rows_of([job], lambda each: flags_of(each, self.states))[0]
        try:
            raw.autocommit = True
        except Exception:  # not idle after all: the transaction path deals with it
            return None
        try:
            (job_id,) = self._transaction_on(connection)._insert_announced(row)
        except DBAPIError as error:
            self._forget_if_broken(connection, error)
            raise
        finally:
            self._local.last_used = time.monotonic()
            if not connection.closed:
                try:
                    raw.autocommit = False
                except Exception:  # never leave it in autocommit for the next transaction
                    self._forget(connection)
        return replace(job, id=str(job_id), sequence=int(job_id))

    def join(self, connection: Any) -> SqlTransaction:
        """A transaction view over the caller's ``Connection`` or ``Session``.

        Nothing is committed here: the caller's commit or rollback decides for the jobs too.
        """
        bound = connection.connection() if isinstance(connection, Session) else connection
        if not isinstance(bound, Connection):
            raise ConfigurationError(
                f"connection= takes a SQLAlchemy Connection or Session, not {type(connection)}"
            )
        if bound.dialect.name != self.engine.dialect.name:
            raise ConfigurationError(
                f"connection= is a {bound.dialect.name} connection but the store is "
                f"{self.engine.dialect.name} at {self.display_url}; use the same database"
            )
        # A caller's connection runs everything through SQLAlchemy (its events see it all).
        through_sqlalchemy = DirectStatements(bound.dialect, enabled=False)
        return SqlTransaction(
            bound,
            self.tables,
            self.states,
            self.dialect,
            self.claims,
            through_sqlalchemy,
            self.announce,
        )

    def acquire_lock(self, name: str, now: datetime, expires_at: datetime) -> str | None:
        return acquire_named(self.engine, self.tables.locks, name, now, expires_at)

    def release_lock(self, name: str, token: str) -> None:
        release_named(self.engine, self.tables.locks, name, token)

    def command_lock(
        self,
        command: str,
        single_id: str,
        busy: str,
        on_lost: Callable[[str], None] | None,
        check_every: float,
    ) -> AbstractContextManager[None]:
        return command_lock(
            self.engine,
            self.display_url,
            self.tables.prefix,
            command,
            single_id,
            busy,
            on_lost,
            check_every,
        )

    def erase(self) -> None:
        with self.engine.begin() as connection:
            for table in reversed(self.tables.metadata.sorted_tables):
                if table is not self.tables.schema:
                    connection.execute(table.delete())

    def drop_schema(self) -> None:
        self.tables.metadata.drop_all(self.engine)

    def wait_for_work(self, timeout: float, ready: Callable[[], None] | None = None) -> bool:
        if self._listener is None:
            if ready is not None:
                ready()
            self._idle.wait(timeout)
            return False
        try:
            return self._listener.wait(timeout, ready)
        except Exception:
            # A broken listener must not stop the worker: fall back to polling this time.
            self._listener.reset()
            self._idle.wait(timeout)
            return False

    @contextmanager
    def watch_end(
        self, job_id: str, timeout: float | None = None
    ) -> Iterator[Callable[[float], bool]]:
        """On PostgreSQL, a LISTEN for the job's end (EndWatch), which waits at most
        ``timeout`` seconds to register; elsewhere a plain wait, after which the caller reads
        the job again (polling)."""
        if self.dialect.name != "postgresql":
            yield self._idle.wait
            return
        channel = ended_channel(self.tables.jobs.name)
        try:
            watch = EndWatch(self.engine.url, channel, job_id, timeout)
        except EndWatchBlocked as blocked:
            log.warning("waiting for job %s by reading it again at intervals: %s", job_id, blocked)
            yield self._idle.wait
            return
        except Exception:  # no listening connection: poll rather than fail the wait
            yield self._idle.wait
            return
        try:
            yield watch.wait
        finally:
            watch.close()

    def release_thread(self) -> None:
        """Close this thread's connections (they go back to the engine's pool)."""
        for name in ("connection", "autocommit"):
            connection: Connection | None = getattr(self._local, name, None)
            setattr(self._local, name, None)
            if connection is None:
                continue
            with self._connections_lock:
                self._connections.discard(connection)
            with contextlib.suppress(DBAPIError):
                connection.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(DBAPIError):
                connection.close()
        self.engine.dispose()
