"""Tables of the SQL store and their versioned migrations.

Times are integer milliseconds since the epoch: portable across SQLite, PostgreSQL and
MariaDB, and cheap to compare in the claim query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.ext.compiler import compiles

Id = BigInteger().with_variant(Integer, "sqlite")
# JSON documents: MySQL/MariaDB TEXT holds only 64 KiB, payloads may be 1 MiB (LIMIT-004).
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


SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    jobs: Table
    dependencies: Table
    tags: Table
    batches: Table
    schema: Table


def build_tables(prefix: str = "conveyor_") -> Tables:
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
        Column("group_lock", Label(), unique=True),
        # Equals priority while the job is in a claimable state, NULL otherwise: the claim
        # scans the index (claim_priority, id) in order and stops at its LIMIT.
        Column("claim_priority", Integer),
        Column("unique_lock", Label(), unique=True),
        sqlite_autoincrement=True,  # ids are never reused, even after pruning (JOB-001)
    )
    Index(f"{prefix}ix_claim", jobs.c.claim_priority, jobs.c.id)
    Index(f"{prefix}ix_queue", jobs.c.queue, jobs.c.state)
    Index(f"{prefix}ix_group", jobs.c.serial_group, jobs.c.state)
    Index(f"{prefix}ix_identifier", jobs.c.identifier, jobs.c.state)
    Index(f"{prefix}ix_prune", jobs.c.state, jobs.c.finished_at)
    Index(f"{prefix}ix_lease", jobs.c.state, jobs.c.lease_expires_at)
    Index(f"{prefix}ix_batch", jobs.c.batch_id, jobs.c.state)
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
    return Tables(metadata, jobs, dependencies, tags, batches, schema)


def _create_v1(connection: Connection, tables: Tables) -> None:
    tables.metadata.create_all(connection, checkfirst=True)


# Each migration brings the schema from version (index) to version (index + 1). Add new
# steps at the end; never edit a released one.
MIGRATIONS: list[Callable[[Connection, Tables], None]] = [_create_v1]


def current_version(connection: Connection, tables: Tables) -> int:
    if not inspect(connection).has_table(tables.schema.name):
        return 0
    found = connection.execute(select(tables.schema.c.version)).scalars().all()
    return max(found, default=0)
