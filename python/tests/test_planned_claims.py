"""A claim in one statement (PostgreSQL, store/sql/plannedclaim.py) leaves the rows the
machine fired per job leaves (CLAIM-001, LEASE-001, MULTI-001).

The same jobs are claimed twice, each time in a transaction rolled back afterwards: once
through the planned statement, once firing the machine per job on the candidates. Both must
claim the same jobs, return the same jobs and the same jobs before the claim, and leave every
row of the table alike (the requests' JSON compared as JSON: only its spacing may differ).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from conveyor import Conveyor, ManualClock
from conveyor.claimplan import claim_plan
from conveyor.engine import JobEngine
from conveyor.lifecycle import Outcome, state_sets
from conveyor.model import Job, JobError, Request
from conveyor.retry import RetryPolicy
from conveyor.store.base import ClaimQuery

from .conftest import SERVER_URLS, _factory, require_service
from .core_support import REQUEST_MACHINE

ENGINE = JobEngine()
STATES = state_sets(ENGINE.machine)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAYLOADS = st.sampled_from(
    [
        {"n": 1},
        {"x": 1.5e300, "y": 0.1, "z": 10.0},
        {"text": 'ünï "q" \\ ✓', "nested": [1, [2.5, None], {"k": True}]},
        [],
        "plain",
    ]
)


class RolledBack(Exception):
    """Raised to leave a transaction without committing it."""


@pytest.fixture(params=("postgresql", "sqlite"))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conveyor]:
    """The stores with a planned claim: one statement on PostgreSQL, a read and a write on
    SQLite."""
    if request.param in SERVER_URLS:
        require_service(request.param)
    for make in _factory(request.param, tmp_path, ManualClock(T0)):
        yield make()


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, ...]:
    states = sorted(REQUEST_MACHINE["states"])
    return tuple(
        Request(
            index=i,
            type="task",
            payload=draw(PAYLOADS),
            state=draw(st.sampled_from(states)),
            attempts=draw(st.integers(0, 3)),
            error=draw(
                st.none() | st.just(JobError(kind="temporary", message='é "x"', attempt=1, at=T0))
            ),
        )
        for i in range(draw(st.integers(1, 3)))
    )


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    """A job in a claimable state, plain as a rule; some use a serial group or unique mode,
    which the planned claim leaves to the machine."""
    featured = draw(st.sampled_from([None, None, None, "serial", "unique"]))
    return Job(
        id="0",
        sequence=0,
        queue=draw(st.sampled_from(["default", "mails"])),
        priority=draw(st.integers(-1, 1)),
        state=draw(st.sampled_from(sorted(STATES.claimable))),
        # Due when written (in the claim index), due since (to be promoted), not yet due.
        available_at=T0 + timedelta(seconds=draw(st.sampled_from([-20, -10, -5, 5]))),
        created_at=T0 - timedelta(minutes=1),
        updated_at=T0 - timedelta(seconds=10),
        retry_policy=RetryPolicy("constant", 1000, 1000, max_attempts=3),
        requests=draw(requests()),
        attempts=draw(st.integers(0, 3)),
        serial_group="g" if featured == "serial" else None,
        identifier="u" if featured == "unique" else None,
        unique=featured == "unique",
        metadata=draw(st.sampled_from([{}, {"k": "v"}])),
        lease_token=draw(st.integers(0, 3)),
    )


def _claim(app: Conveyor, planned: bool, limit: int, query: ClaimQuery) -> tuple[Any, ...]:
    """(claimed jobs, jobs before, every row) of one claim, rolled back."""
    lifecycle = app.lifecycle
    saved = lifecycle.claim_plan
    lifecycle.claim_plan = claim_plan(lifecycle.engine) if planned else None
    found: list[Any] = []

    def claim_and_roll_back() -> None:
        with app.store.transaction() as tx:
            outcome: Outcome = lifecycle.claim(tx, query, "w2", 30_000, limit, app.now())
            table = app.store.tables.jobs  # type: ignore[attr-defined]
            rows = tx.connection.execute(select(table).order_by(table.c.id)).mappings().all()
            found.extend(
                [
                    outcome.jobs,
                    outcome.claimed_from,
                    [{**row, "requests": json.loads(row["requests"])} for row in rows],
                ]
            )
            raise RolledBack

    try:
        claim_and_roll_back()
    except RolledBack:
        pass
    finally:
        lifecycle.claim_plan = saved
    return tuple(found)


@given(
    data=st.data(),
    published=st.lists(jobs(), min_size=1, max_size=6),
    limit=st.integers(1, 5),
    queues=st.sampled_from([(), ("default",)]),
    named=st.sampled_from(["none", "ids", "id"]),
)
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_claim_in_one_statement_leaves_the_rows_firing_the_machine_leaves(
    app: Conveyor,
    data: st.DataObject,
    published: list[Job],
    limit: int,
    queues: tuple[str, ...],
    named: str,
) -> None:
    """In claim order, and by id (a broker consumer's claim of the jobs its messages name,
    an id that names no job among them)."""
    app.store.erase()
    with app.store.transaction() as tx:
        ids = [job.id for job in tx.insert_jobs(published)]
    query = ClaimQuery(queues=queues)
    if named == "ids":
        chosen = data.draw(st.lists(st.sampled_from([*ids, "999999", "x"]), unique=True))
        query = ClaimQuery(queues=queues, job_ids=tuple(chosen))
    elif named == "id":
        query = ClaimQuery(queues=queues, job_id=data.draw(st.sampled_from(ids)))
    assert app.lifecycle.claim_plan is not None  # the machine's claim is planned
    planned = _claim(app, True, limit, query)
    fired = _claim(app, False, limit, query)
    assert [job.id for job in planned[0]] == [job.id for job in fired[0]]
    assert planned[0] == fired[0]
    assert planned[1] == fired[1]
    assert planned[2] == fired[2]


def test_the_job_machine_claim_is_planned_and_a_store_declines_what_it_cannot_write(
    app: Conveyor,
) -> None:
    """The spec's claim compiles (so a worker's claim is one statement on PostgreSQL); a plan
    with an effect the store has no SQL for is declined, and the claim fires the machine."""
    plan = claim_plan(ENGINE)
    assert plan is not None
    assert plan.effects == ("count_attempt", "grant_lease", "start_request")
    assert plan.request is not None
    assert plan.request.target == "running"
    app.register("task", lambda: None)
    app.publish("task")
    odd = plan.__class__(**{**plan.__dict__, "effects": (*plan.effects, "record_error")})
    with app.store.transaction() as tx:
        params = {"worker_id": "w1", "lease_ms": 1000}
        assert tx.claim_planned(odd, ClaimQuery(), app.now(), app.now(), params, 1, ()) is None
    app.lifecycle.claim_plan = odd
    [job] = app.claim("w1")
    assert job.state == "processing"
    assert job.requests[0].state == "running"


def test_an_idle_worker_s_claim_is_one_statement_that_commits_itself(app: Conveyor) -> None:
    """A claim with no outcome to record (a worker woken for a new job) runs the planned
    statement on an autocommit connection on PostgreSQL: one round trip, no BEGIN or COMMIT
    of its own."""
    if app.store.display_url.startswith("sqlite"):
        pytest.skip("SQLite's planned claim is two statements: it runs in a transaction")
    assert app.store.claims_alone
    import psycopg

    app.register("task", lambda: None)
    assert app.record_and_claim([], "w1").jobs == []  # the connections are set up
    job = app.publish("task")
    seen: list[tuple[str, bool]] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((str(query).lstrip()[:10], cursor.connection.autocommit))
        return execute(cursor, query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", recording)
        claimed = app.record_and_claim([], "w1", limit=5)
    assert [j.id for j in claimed.jobs] == [job.id]
    assert seen == [("WITH stats", True)]
    assert app.get(job.id).state == "processing"  # committed: another session sees it


def test_sqlite_s_idle_claim_opens_no_autocommit_connection(app: Conveyor) -> None:
    """SQLite's planned claim (a read, then the write) must not run where another writer
    could claim between its statements: an idle worker's claim goes straight to a
    transaction, without opening the autocommit connection it could not use."""
    if not app.store.display_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    assert not app.store.claims_alone
    app.register("task", lambda: None)
    job = app.publish("task")

    def refused() -> Any:
        raise AssertionError("the idle claim opened an autocommit connection")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.store, "autocommit", refused)
        claimed = app.record_and_claim([], "w1", limit=5)
    assert [j.id for j in claimed.jobs] == [job.id]
    assert app.get(job.id).state == "processing"


def test_a_claim_alone_that_leaves_jobs_to_the_machine_goes_on_in_a_transaction(
    app: Conveyor,
) -> None:
    """Jobs of a serial group ahead of a plain one: the statement claims the plain job, the
    machine the group's first job, and the worker gets both, in claim order."""
    app.register("task", lambda: None)
    grouped = app.publish("task", serial_group="g")
    behind = app.publish("task", serial_group="g")
    plain = app.publish("task")
    claimed = app.record_and_claim([], "w1", limit=3)
    assert [j.id for j in claimed.jobs] == [grouped.id, plain.id]
    assert app.get(behind.id).state == "ready"  # the group's next job waits its turn
    assert {app.get(j).state for j in (grouped.id, plain.id)} == {"processing"}
