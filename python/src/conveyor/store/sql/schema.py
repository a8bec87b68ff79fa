"""Tables of the SQL store and their versioned migrations.

Times are integer milliseconds since the epoch: portable across SQLite, PostgreSQL and
MariaDB, and cheap to compare in the claim query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles

log = logging.getLogger("conveyor.store")

Id = BigInteger().with_variant(Integer, "sqlite")
# JSON documents: MySQL/MariaDB TEXT holds only 64 KiB, payloads may be 1 MiB (LIMIT-006).
Json = Text().with_variant(LONGTEXT(), "mysql", "mariadb")


class Label(String):
    """A serial group, identifier or tag: compared exactly, case-sensitively (LIMIT-002)."""

    def __init__(self) -> None:
        super().__init__(255)


@compiles(Label, "mysql")
@compiles(Label, "mariadb")
def _label_on_mysql(type_: Label, compiler: Any, **kw: Any) -> str:
    # The server default collation ignores case, accents and trailing spaces.
    collation = "utf8mb4_nopad_bin" if compiler.dialect.is_mariadb else "utf8mb4_0900_bin"
    return f"VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {collation}"


SCHEMA_VERSION = 13


@dataclass(frozen=True)
class Tables:
    prefix: str
    metadata: MetaData
    jobs: Table
    dependencies: Table
    tags: Table
    batches: Table
    schema: Table
    # Named expiring locks (Store.acquire_lock). In the metadata from version 4 on; before,
    # the bus created the same table itself on first use (see _locks_v4).
    locks: Table
    # Queues whose jobs no claim takes (PAUSE-001): one row per paused queue. In the
    # metadata from version 6 on.
    paused_queues: Table
    # Running workers and their presence beats (docs/guide/workers.md#presence). In the
    # metadata from version 6 on.
    workers: Table
    # Version 10: the claims counted by rate limits, one row per (key, window, slot): the
    # primary key lets no two claims take one slot of a window (RATE-002).
    rate_slots: Table
    # Version 8: the fire times cron schedules handled, one row per (name, fire time): the
    # primary key is the rule that no two processes publish one run (CRON-003).
    schedule_runs: Table
    # Version 11: totals of events the metrics count (failed attempts, lease rescues, broker
    # repairs), one row per (name, queue), added to by whichever process counted them.
    counters: Table
    # Version 13: the holder of each unique key (UKEY-003), one row per key: the primary key,
    # locked before a publish decides, is the rule that no two publishes hold one key.
    unique_claims: Table


def _results_columns() -> list[Column[Any]]:
    return [Column("result", Json), Column("result_ttl_ms", BigInteger), Column("progress", Json)]


def _concurrency_columns() -> list[Column[Any]]:
    return [
        Column("concurrency_key", Label()),
        Column("concurrency_limit", Integer),
        Column("concurrency_slot", Integer),
    ]


def _rate_columns() -> list[Column[Any]]:
    return [
        Column("rate_key", Label()),
        Column("rate_limit", Integer),
        Column("rate_period_ms", BigInteger),
    ]


def _unique_columns() -> list[Column[Any]]:
    return [Column("uniqueness", Json), Column("unique_key", String(64))]


def _only_where_set(column: Column[Any], partial: bool) -> dict[str, Any]:
    """Index only the rows where ``column`` is set (PostgreSQL, SQLite; MariaDB has no partial
    indexes). Every query these indexes serve compares the column, so it cannot need the
    other rows; and a state change that leaves the column NULL writes no entry."""
    if not partial:
        return {}
    return {"postgresql_where": column.is_not(None), "sqlite_where": column.is_not(None)}


def build_tables(prefix: str = "conveyor_", version: int = SCHEMA_VERSION) -> Tables:
    """The tables as of schema ``version`` (earlier layouts are kept for their migrations).

    Version 2 made the indexes over mostly-NULL columns partial and turned the lock columns'
    uniqueness into such indexes: a claim or a finished job then writes 3 or 4 index entries
    instead of 10, which is most of the server's work for a short job.
    """
    partial = version >= 2
    metadata = MetaData()
    jobs = Table(
        f"{prefix}jobs",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("queue", String(64), nullable=False),
        Column("priority", Integer, nullable=False),
        Column("state", String(32), nullable=False),
        Column("available_at", BigInteger, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
        Column("finished_at", BigInteger),
        Column("attempts", Integer, nullable=False, default=0),
        Column("retry_policy", Json, nullable=False),
        Column("serial_group", Label()),
        Column("identifier", Label()),
        Column("is_unique", Boolean, nullable=False, default=False),
        Column("recurring_interval_ms", BigInteger),
        Column("batch_id", BigInteger),
        Column("depends_on", Json, nullable=False),
        Column("tags", Json, nullable=False),
        Column("metadata_json", Json, nullable=False),
        Column("requests", Json, nullable=False),
        Column("lease_token", Integer, nullable=False, default=0),
        Column("lease_worker", String(255)),
        Column("lease_expires_at", BigInteger),
        Column("last_error", Json),
        Column("errors", Json, nullable=False),
        Column("execution", Json),
        # Set only while the job is leased: a unique index turns serial-group exclusion and
        # unique-mode exclusion into constraints no concurrent claim can break.
        Column("group_lock", Label(), unique=not partial),
        # Equals priority while the job is in a claimable state (since version 5: and was due
        # when written, or promoted since), NULL otherwise: the claim scans the index
        # (claim_priority, id) in order and stops at its LIMIT.
        Column("claim_priority", Integer),
        Column("unique_lock", Label(), unique=not partial),
        # Version 3: how long one attempt may run (TIMEOUT-001), NULL for no limit.
        *([Column("timeout_ms", BigInteger)] if version >= 3 else []),
        # Version 5: available_at while the job is claimable but was not yet due when written,
        # NULL otherwise; the claim promotes such rows into claim_priority once due.
        *([Column("delay_until", BigInteger)] if version >= 5 else []),
        # Version 6: the result of the success that finished the job and how long it stays
        # readable (RESULT-001, RESULT-003), the progress last reported (PROGRESS-001).
        *(_results_columns() if version >= 7 else []),
        # Version 9: concurrency limits (CONC-001, CONC-002); the slot is set only while the
        # job is leased, unique per key: no two claims can hold one slot.
        *(_concurrency_columns() if version >= 9 else []),
        # Version 10: rate limits (RATE-001); the claims they count are in rate_slots.
        *(_rate_columns() if version >= 10 else []),
        # Version 12: when a cancel was requested while the job ran (CANCEL-001).
        *([Column("cancel_requested_at", BigInteger)] if version >= 12 else []),
        # Version 13: unique keys (UKEY-001); their holders are in unique_claims.
        *(_unique_columns() if version >= 13 else []),
        sqlite_autoincrement=True,  # ids are never reused, even after pruning (JOB-001)
    )
    c = jobs.c
    Index(f"{prefix}ix_claim", c.claim_priority, c.id, **_only_where_set(c.claim_priority, partial))
    Index(f"{prefix}ix_queue", c.queue, c.state)
    Index(f"{prefix}ix_group", c.serial_group, c.state, **_only_where_set(c.serial_group, partial))
    Index(f"{prefix}ix_identifier", c.identifier, c.state, **_only_where_set(c.identifier, partial))
    Index(f"{prefix}ix_prune", c.state, c.finished_at, **_only_where_set(c.finished_at, partial))
    Index(
        f"{prefix}ix_lease",
        c.state,
        c.lease_expires_at,
        **_only_where_set(c.lease_expires_at, partial),
    )
    Index(f"{prefix}ix_batch", c.batch_id, c.state, **_only_where_set(c.batch_id, partial))
    if version >= 5:
        Index(f"{prefix}ix_delayed", c.delay_until, **_only_where_set(c.delay_until, partial))
    if version >= 9:
        Index(
            f"{prefix}ix_concurrency_slot",
            c.concurrency_key,
            c.concurrency_slot,
            unique=True,
            **_only_where_set(c.concurrency_slot, partial),
        )
    if partial:
        # Set only while a job is leased: uniqueness here is serial-group and unique-mode
        # exclusion, a constraint no concurrent claim can break.
        for lock in (c.group_lock, c.unique_lock):
            Index(f"{prefix}ix_{lock.name}", lock, unique=True, **_only_where_set(lock, True))
    dependencies = Table(
        f"{prefix}dependencies",
        metadata,
        Column("job_id", Id, primary_key=True),
        Column("depends_on_id", Id, primary_key=True),
    )
    Index(f"{prefix}ix_dependency_target", dependencies.c.depends_on_id)
    tags = Table(
        f"{prefix}tags",
        metadata,
        Column("tag", Label(), primary_key=True),
        Column("job_id", Id, primary_key=True),
    )
    Index(f"{prefix}ix_tag_job", tags.c.job_id)
    batches = Table(
        f"{prefix}batches",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("state", String(32), nullable=False),
        Column("total", Integer, nullable=False, default=0),
        Column("completion", Json),
        Column("created_at", BigInteger, nullable=False),
        Column("finished_at", BigInteger),
        sqlite_autoincrement=True,
    )
    schema = Table(
        f"{prefix}schema",
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", BigInteger, nullable=False),
    )
    locks = Table(
        f"{prefix}bus_locks",
        metadata if version >= 4 else MetaData(),
        Column("name", Label(), primary_key=True),  # longer names are kept as their digest
        Column("owner", String(64), nullable=False),
        Column("expires_at", BigInteger, nullable=False),
    )
    paused_queues = Table(
        f"{prefix}paused_queues",
        metadata if version >= 6 else MetaData(),
        Column("queue", String(64), primary_key=True),
        Column("paused_at", BigInteger, nullable=False),
    )
    workers = Table(
        f"{prefix}workers",
        metadata if version >= 6 else MetaData(),
        Column("id", String(255), primary_key=True),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("started_at", BigInteger, nullable=False),
        Column("heartbeat_at", BigInteger, nullable=False),
        Column("queues", Json, nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("running", Json, nullable=False),
        Column("memory_bytes", BigInteger),
    )
    schedule_runs = Table(
        f"{prefix}schedule_runs",
        metadata if version >= 8 else MetaData(),
        Column("name", Label(), primary_key=True),
        Column("fire_at", BigInteger, primary_key=True, autoincrement=False),
        Column("job_id", BigInteger),
        Column("created_at", BigInteger, nullable=False),
    )
    rate_slots = Table(
        f"{prefix}rate_slots",
        metadata if version >= 10 else MetaData(),
        Column("rate_key", Label(), primary_key=True),
        Column("window_start", BigInteger, primary_key=True, autoincrement=False),
        Column("slot", Integer, primary_key=True, autoincrement=False),
        Column("job_id", BigInteger, nullable=False),
    )
    counters = Table(
        f"{prefix}counters",
        metadata if version >= 11 else MetaData(),
        Column("name", String(64), primary_key=True),
        Column("queue", String(64), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    unique_claims = Table(
        f"{prefix}unique_claims",
        metadata if version >= 13 else MetaData(),
        Column("unique_key", String(64), primary_key=True),
        Column("job_id", BigInteger),  # NULL: free (a row is created before the decision)
        Column("expires_at", BigInteger),  # NULL: never
        Column("states", Json, nullable=False),
        # clear_finished forgets the expired claims (an expired claim holds nothing)
        Index(f"{prefix}ix_unique_expiry", "expires_at"),
    )
    return Tables(
        prefix,
        metadata,
        jobs,
        dependencies,
        tags,
        batches,
        schema,
        locks,
        paused_queues,
        workers,
        rate_slots,
        schedule_runs,
        counters,
        unique_claims,
    )


def _create_v1(connection: Connection, tables: Tables) -> None:
    build_tables(tables.prefix, version=1).metadata.create_all(connection, checkfirst=True)


def _partial_indexes_v2(connection: Connection, tables: Tables) -> None:
    """Version 2: partial indexes, and the lock columns' uniqueness as partial unique indexes.

    Rebuilds the job table's indexes under the schema lock: writers wait for as long as that
    takes (measured: 1.4 s per million jobs on PostgreSQL, 7.7 s on SQLite). SQLite cannot
    drop a column's UNIQUE constraint, so there the table is copied into the new layout, ids
    and the id sequence kept.
    """
    jobs = build_tables(tables.prefix, version=2).jobs  # as of this step, whatever came later
    dialect = connection.dialect.name
    inspector = inspect(connection)
    if any(i["name"] == f"{tables.prefix}ix_group_lock" for i in inspector.get_indexes(jobs.name)):
        return
    if dialect == "sqlite":
        _copy_sqlite_table(connection, jobs)
        return
    quote = connection.dialect.identifier_preparer.quote
    if dialect == "postgresql":
        for constraint in inspector.get_unique_constraints(jobs.name):
            if constraint["column_names"] in (["group_lock"], ["unique_lock"]):
                name = quote(str(constraint["name"]))
                connection.exec_driver_sql(f"ALTER TABLE {quote(jobs.name)} DROP CONSTRAINT {name}")
        for index in jobs.indexes:  # the partial ones replace whole-table ones of v1
            if index.dialect_options["postgresql"]["where"] is not None:
                index.drop(connection, checkfirst=True)
                index.create(connection)
    else:  # MariaDB / MySQL: the UNIQUE constraints are indexes named after their column
        for found in inspector.get_indexes(jobs.name):
            if found["name"] in ("group_lock", "unique_lock"):
                connection.exec_driver_sql(
                    f"DROP INDEX {quote(str(found['name']))} ON {quote(jobs.name)}"
                )
    for index in jobs.indexes:
        index.create(connection, checkfirst=True)


def _copy_sqlite_table(connection: Connection, jobs: Table) -> None:
    old = f"{jobs.name}_v1"
    quote = connection.dialect.identifier_preparer.quote
    connection.exec_driver_sql(f"ALTER TABLE {quote(jobs.name)} RENAME TO {quote(old)}")
    for found in inspect(connection).get_indexes(old):
        connection.exec_driver_sql(f"DROP INDEX {quote(str(found['name']))}")
    jobs.create(connection)
    columns = ", ".join(quote(column.name) for column in jobs.columns)
    connection.exec_driver_sql(
        f"INSERT INTO {quote(jobs.name)} ({columns}) SELECT {columns} FROM {quote(old)}"
    )
    # The renamed table kept the AUTOINCREMENT high-water mark: ids are never reused.
    connection.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (jobs.name,))
    connection.exec_driver_sql(
        "INSERT INTO sqlite_sequence (name, seq) SELECT ?, seq FROM sqlite_sequence WHERE name = ?",
        (jobs.name, old),
    )
    connection.exec_driver_sql(f"DROP TABLE {quote(old)}")


def _timeouts_v3(connection: Connection, tables: Tables) -> None:
    """Version 3: the job's timeout (TIMEOUT-001), a nullable column: added in place, without
    rewriting the table, on every database."""
    jobs = tables.jobs
    if "timeout_ms" in {column["name"] for column in inspect(connection).get_columns(jobs.name)}:
        return
    quote = connection.dialect.identifier_preparer.quote
    connection.exec_driver_sql(f"ALTER TABLE {quote(jobs.name)} ADD COLUMN timeout_ms BIGINT")


def _locks_v4(connection: Connection, tables: Tables) -> None:
    """Version 4: the table of the store's named locks (WithoutOverlapping's).

    Before this version the bus created ``<prefix>bus_locks`` itself on first use, with the
    same columns: such a table is kept as it is, so that locks held across the upgrade stay
    held and processes of the previous version, which create-if-missing the same table, share
    it during a rolling deploy. On MariaDB its name column then gets the exact (binary)
    comparison every label has; elsewhere the layout is already the same.
    """
    locks = build_tables(tables.prefix, version=4).locks
    if not inspect(connection).has_table(locks.name):
        locks.create(connection)
        return
    if connection.dialect.name in ("mysql", "mariadb"):
        quote = connection.dialect.identifier_preparer.quote
        label = Label().compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(locks.name)} MODIFY {quote('name')} {label} NOT NULL"
        )


# PostgreSQL storage parameters of the job table (version 5). A queue table is small and
# rewritten all day: each job is inserted, updated two or three times and deleted by pruning.
# - fillfactor 80: room on each page for the new versions of its rows. An update that changes
#   no indexed column (a heartbeat's or a progress write's updated_at, attempts, execution)
#   stays on the page as a HOT update and writes no index entry; the others (state changes)
#   still keep the row's versions on one page instead of growing the table.
# - autovacuum at 2% of the rows (PostgreSQL's default waits for 20%): dead versions and dead
#   index entries of processed jobs are cleared while they are few, before claims walk them;
#   ANALYZE at 2% too, so the planner's estimates follow a table whose content turns over.
JOB_TABLE_STORAGE: dict[str, str] = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "1000",
}
# PostgreSQL 13 and later: vacuum after inserts too (keeps the visibility map current, so
# index-only probes of new rows skip the heap).
JOB_TABLE_STORAGE_13 = {"autovacuum_vacuum_insert_scale_factor": "0.02"}


def _job_table_storage_v5(connection: Connection, table: str) -> None:
    """ALTER TABLE ... SET (...): a catalogue change, no rewrite (fillfactor applies to the
    pages written from now on). PostgreSQL only: SQLite and MariaDB have no such settings."""
    if connection.dialect.name != "postgresql":
        return
    settings = dict(JOB_TABLE_STORAGE)
    if (connection.dialect.server_version_info or (0,)) >= (13,):
        settings.update(JOB_TABLE_STORAGE_13)
    listed = ", ".join(f"{name} = {value}" for name, value in settings.items())
    quote = connection.dialect.identifier_preparer.quote
    connection.exec_driver_sql(f"ALTER TABLE {quote(table)} SET ({listed})")


def _delayed_jobs_v5(connection: Connection, tables: Tables) -> None:
    """Version 5: delayed jobs leave the claim index for their own (``delay_until``), so a
    claim never walks jobs that are not due; and, on PostgreSQL, the job table's storage
    parameters (JOB_TABLE_STORAGE). Adds the column in place, moves the rows that were not
    due when last written (one pass over the claim index), and builds the index.
    """
    jobs = build_tables(tables.prefix, version=5).jobs
    quote = connection.dialect.identifier_preparer.quote
    name = quote(jobs.name)
    if "delay_until" not in {
        column["name"] for column in inspect(connection).get_columns(jobs.name)
    }:
        connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN delay_until BIGINT")
    connection.exec_driver_sql(
        f"UPDATE {name} SET delay_until = available_at, claim_priority = NULL "
        "WHERE claim_priority IS NOT NULL AND available_at > updated_at"
    )
    for index in jobs.indexes:
        if index.name == f"{tables.prefix}ix_delayed":
            index.create(connection, checkfirst=True)
    _job_table_storage_v5(connection, jobs.name)


def _operations_v6(connection: Connection, tables: Tables) -> None:
    """Version 6: the tables of paused queues (PAUSE-001) and of running workers, new and
    empty: no row moves, so processes of the previous version keep working while they exist
    (they claim from every queue and announce nothing, which is what they did before)."""
    v6 = build_tables(tables.prefix, version=6)
    v6.paused_queues.create(connection, checkfirst=True)
    v6.workers.create(connection, checkfirst=True)


def _add_columns(connection: Connection, jobs: Table, names: tuple[str, ...]) -> None:
    """Add the nullable columns ``names`` of ``jobs`` (as of its version) that the table lacks,
    in place: no rewrite of the table, and a step that ran halfway runs again safely."""
    present = {column["name"] for column in inspect(connection).get_columns(jobs.name)}
    quote = connection.dialect.identifier_preparer.quote
    for name in names:
        if name not in present:
            kind = jobs.c[name].type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f"ALTER TABLE {quote(jobs.name)} ADD COLUMN {quote(name)} {kind}"
            )


def _results_v7(connection: Connection, tables: Tables) -> None:
    """Version 7: a job's result, its time to live and its progress (RESULT-001, RESULT-003,
    PROGRESS-001): nullable columns, added in place without rewriting the table."""
    jobs = build_tables(tables.prefix, version=7).jobs
    _add_columns(connection, jobs, ("result", "result_ttl_ms", "progress"))


def _schedule_runs_v8(connection: Connection, tables: Tables) -> None:
    """Version 8: the table of the fire times cron schedules handled (CRON-003)."""
    build_tables(tables.prefix, version=8).schedule_runs.create(connection, checkfirst=True)


def _concurrency_v9(connection: Connection, tables: Tables) -> None:
    """Version 9: the concurrency key, limit and slot of a job (CONC-001, CONC-002), nullable
    columns added in place, and the unique index of the slots held."""
    jobs = build_tables(tables.prefix, version=9).jobs
    _add_columns(connection, jobs, ("concurrency_key", "concurrency_limit", "concurrency_slot"))
    for index in jobs.indexes:
        if index.name == f"{tables.prefix}ix_concurrency_slot":
            index.create(connection, checkfirst=True)


def _rate_limits_v10(connection: Connection, tables: Tables) -> None:
    """Version 10: a job's rate key, limit and period (RATE-001), nullable columns added in
    place, and the table of the claims the limits count."""
    built = build_tables(tables.prefix, version=10)
    jobs = built.jobs
    _add_columns(connection, jobs, ("rate_key", "rate_limit", "rate_period_ms"))
    built.rate_slots.create(connection, checkfirst=True)


def _counters_v11(connection: Connection, tables: Tables) -> None:
    """Version 11: the table of the metrics' event totals (docs/operations/metrics.md)."""
    build_tables(tables.prefix, version=11).counters.create(connection, checkfirst=True)


def _cancel_requests_v12(connection: Connection, tables: Tables) -> None:
    """Version 12: when a cancel of a running job was requested (CANCEL-001), a nullable
    column added in place; processes of version 11 never set it and refuse no row for it."""
    jobs = build_tables(tables.prefix, version=12).jobs
    _add_columns(connection, jobs, ("cancel_requested_at",))


def _unique_keys_v13(connection: Connection, tables: Tables) -> None:
    """Version 13: a job's uniqueness and unique key (UKEY-001), nullable columns added in
    place, and the table of the holders of the keys (UKEY-003)."""
    built = build_tables(tables.prefix, version=13)
    _add_columns(connection, built.jobs, ("uniqueness", "unique_key"))
    built.unique_claims.create(connection, checkfirst=True)


# Each migration brings the schema from version (index) to version (index + 1). Add new
# steps at the end; never edit a released one (a step builds the tables as of its own version).
MIGRATIONS: list[Callable[[Connection, Tables], None]] = [
    _create_v1,
    _partial_indexes_v2,
    _timeouts_v3,
    _locks_v4,
    _delayed_jobs_v5,
    _operations_v6,
    _results_v7,
    _schedule_runs_v8,
    _concurrency_v9,
    _rate_limits_v10,
    _counters_v11,
    _cancel_requests_v12,
    _unique_keys_v13,
]


def analyze_paused_queues(engine: Engine, tables: Tables) -> None:
    """ANALYZE the paused queues' table while it is empty and was never analyzed (PostgreSQL).

    PostgreSQL plans a table it has no figures for as ten pages of rows, and autovacuum never
    analyzes a table nobody writes: the paused queues of most apps stay "440 rows" forever.
    Planned against them, the claim's NOT EXISTS over the paused queues looked as if it
    removed nearly every job, and a new job table's generic claim plan read and sorted every
    claimable job instead of walking the claim index. Analyzed empty, the table is planned as
    what it is, and always stays: one row per paused queue. (The dependencies and rate slots
    are left to autovacuum: they grow, and a plan made while they are empty would read them
    whole until it analyzes them.) An empty table's ANALYZE reads nothing.

    Best effort: in its own transaction, given up after a second's wait for its lock, and
    skipped once the table has figures (``reltuples`` is -1 only before the first ANALYZE)."""
    if engine.dialect.name != "postgresql":
        return
    name = engine.dialect.identifier_preparer.format_table(tables.paused_queues)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            never_analyzed = connection.execute(
                text(
                    "SELECT 1 FROM pg_class WHERE oid = to_regclass(:name) "
                    "AND relpages = 0 AND reltuples < 0"
                ),
                {"name": name},
            ).first()
            if never_analyzed is not None:
                connection.exec_driver_sql(f"ANALYZE {name}")
    except DBAPIError as error:
        log.info("ANALYZE of %s skipped: %s", name, error.orig)


def current_version(connection: Connection, tables: Tables) -> int:
    if not inspect(connection).has_table(tables.schema.name):
        return 0
    found = connection.execute(select(tables.schema.c.version)).scalars().all()
    return max(found, default=0)
