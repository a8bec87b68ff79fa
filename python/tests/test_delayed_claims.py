"""Delayed jobs wait outside the claim index and enter it once due (schema version 5): the
claim order and ORDER-005 are unchanged, and a claim never reads jobs that are not due."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, ManualClock
from conveyor.store.base import ClaimQuery
from conveyor.store.sql import store as sql_store
from conveyor.store.sql.claim import COUNT_AHEAD_BELOW

from .conftest import SERVER_URLS, _factory, require_service
from .core_support import TEMPORARY

SQL = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(params=SQL)
def sql_app(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Conveyor]:
    require_service(request.param)
    factory = _factory(request.param, tmp_path, clock)
    app = next(factory)()
    app.register("task", lambda: None)
    yield app
    for _ in factory:
        pass


def test_delayed_jobs_enter_the_claim_order_once_due(sql_app: Conveyor, clock: ManualClock) -> None:
    """Delayed jobs published first wait; once due they go by priority and sequence among
    the jobs that were ready all along (ORDER-002, ORDER-005)."""
    app = sql_app
    delayed = [app.publish("task", priority=p, delay=timedelta(seconds=10)) for p in (3, 1, 3)]
    ready = [app.publish("task", priority=p) for p in (2, 5)]
    assert [j.id for j in app.claim("w", limit=1)] == [ready[0].id]
    clock.advance(timedelta(seconds=10))
    claimed = [j.id for j in app.claim("w", limit=10)]
    assert claimed == [delayed[1].id, delayed[0].id, delayed[2].id, ready[1].id]


def test_a_retry_delay_keeps_the_job_out_of_the_claim_until_due(
    sql_app: Conveyor, clock: ManualClock
) -> None:
    """A job made claimable again with a delay (a failed attempt) is delayed like a new one."""
    app = sql_app
    policy = {"backoff": "constant", "initial_delay_ms": 60_000, "max_delay_ms": 60_000}
    job = app.publish("task", retry={**policy, "max_attempts": 3})
    (claimed,) = app.claim("w", limit=1)
    app.fire(job.id, "fail_temporarily", {"lease_token": claimed.lease_token, "error": TEMPORARY})
    assert app.get(job.id).available_at > app.now()
    assert app.claim("w", limit=1) == []
    clock.advance(timedelta(minutes=5))
    assert [j.id for j in app.claim("w", limit=1)] == [job.id]


def test_more_due_jobs_than_one_promotion_are_all_claimed(
    sql_app: Conveyor, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store, "PROMOTE_LIMIT", 2)
    app = sql_app
    published = [app.publish("task", delay=timedelta(seconds=1)) for _ in range(5)]
    clock.advance(timedelta(seconds=1))
    claimed = [j.id for _ in range(5) for j in app.claim("w", limit=1)]
    assert sorted(claimed, key=int) == [j.id for j in published]
    assert app.claim("w", limit=1) == []


def test_a_job_claimed_by_id_while_delayed_but_due(sql_app: Conveyor, clock: ManualClock) -> None:
    """A claim by id (broker mode) reads the delayed rows too, promoted or not."""
    app = sql_app
    job = app.publish("task", delay=timedelta(seconds=1))
    store: Any = app.store
    with store.transaction() as tx:
        assert list(tx.candidates(ClaimQuery(job_id=job.id), app.now(), 1)) == []
    clock.advance(timedelta(seconds=1))
    with store.transaction() as tx:
        found = list(tx.candidates(ClaimQuery(job_id=job.id), app.now(), 1))
    assert [c.job.id for c in found] == [job.id]


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """The plan's nodes, leaving out InitPlans (the claim's probe of the earliest delayed
    job, one entry of the delayed-job index, is one)."""
    yield plan
    for child in plan.get("Plans", []):
        if child.get("Parent Relationship") != "InitPlan":
            yield from _nodes(child)


def _init_plans(plan: Any) -> Iterator[dict[str, Any]]:
    for child in plan.get("Plans", []):
        if child.get("Parent Relationship") == "InitPlan":
            yield child
        else:
            yield from _init_plans(child)


def test_postgresql_claim_reads_no_delayed_or_finished_row(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The claim's index scan returns the rows it claims and no more: 300 delayed jobs
    published before the ready ones are not in its way."""
    require_service("postgresql")
    factory = _factory("postgresql", tmp_path, clock)
    app = next(factory)()
    try:
        app.register("task", lambda: None)
        with app.bulk():
            for _ in range(300):
                app.publish("task", delay=timedelta(hours=1))
        ready = [app.publish("task") for _ in range(3)]
        store: Any = app.store
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"ANALYZE {store.tables.jobs.name}")
        with store.transaction() as tx:
            query = ClaimQuery()
            compiled = store.claims.statement(query).compile(dialect=tx.connection.dialect)
            parameters = store.claims.parameters(query, int(app.now().timestamp() * 1000), 2)
            plan = tx.connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", parameters
            ).scalar()
        document = plan if isinstance(plan, list) else json.loads(plan)
        scans = [
            node
            for node in _nodes(document[0]["Plan"])
            if node.get("Index Name", "").endswith("ix_claim")
        ]
        assert scans, document
        assert all(node.get("Rows Removed by Filter", 0) == 0 for node in scans)
        assert scans[0]["Actual Rows"] <= 2
        assert [j.id for j in app.claim("w", limit=5)] == [j.id for j in ready]
    finally:
        for _ in factory:
            pass


def test_postgresql_generic_claim_plan_walks_the_claim_index_on_a_new_table() -> None:
    """On a new job table that was never analyzed (as a new deployment's, or any table in
    its first minutes), the generic plan Conveyor's connections use still walks the claim
    index and stops at the LIMIT, instead of reading and sorting every claimable job. A small
    claim also counts the claim index up to one entry past its limit; a large one reads
    nothing more (COUNT_AHEAD_BELOW): on a table a long drain left with dead index entries,
    a second walk from the index's start would double the claim's cost."""
    require_service("postgresql")
    app = Conveyor(SERVER_URLS["postgresql"], table_prefix=f"newplan{uuid.uuid4().hex[:8]}_")
    try:
        app.register("task", lambda: None)
        app.publish_many("task", [None] * 3000)
        store: Any = app.store
        query = ClaimQuery()
        sql = store.direct.compiled(store.claims.statement(query)).sql
        names: list[str] = []
        numbered = re.sub(
            r"%\((\w+)\)s",
            lambda m: f"${(names.append(m.group(1)) or len(names))}",
            sql.replace("%%", "%"),
        )
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(f"PREPARE newplan AS {numbered}")
            plans = {}
            for limit in (1, COUNT_AHEAD_BELOW - 1, COUNT_AHEAD_BELOW, 100):
                now_ms = int(app.now().timestamp() * 1000)
                parameters = store.claims.parameters(query, now_ms, limit)
                values = ", ".join(str(int(parameters[name])) for name in names)
                cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE newplan({values})")
                plans[limit] = cursor.fetchone()[0][0]["Plan"]
                raw.rollback()
        finally:
            raw.rollback()
            raw.close()
        for limit, plan in plans.items():
            scans = [n for n in _nodes(plan) if n.get("Relation Name", "").endswith("jobs")]
            assert scans, plan
            assert scans[0].get("Index Name", "").endswith("ix_claim"), plan
            assert scans[0]["Actual Rows"] == limit
            probes = [
                n
                for init in _init_plans(plan)
                for n in _nodes(init)
                if n.get("Relation Name", "").endswith("jobs")
            ]
            # The probe for due delayed jobs reads one entry of their index, and the one for
            # more jobs behind a small claim the first limit + 1 entries of the claim index:
            # never the table.
            indexes = [n.get("Index Name", "").rsplit("_", 2)[-2:] for n in probes]
            assert indexes == [["ix", "delayed"], ["ix", "claim"]], probes
            assert probes[0]["Actual Rows"] <= 1
            if limit < COUNT_AHEAD_BELOW:
                assert probes[1]["Actual Rows"] == limit + 1, (limit, probes)
            else:  # not counted: the scan never runs
                assert probes[1]["Actual Loops"] == 0, (limit, probes)
    finally:
        app.store.drop_schema()  # type: ignore[attr-defined]
        app.close()
