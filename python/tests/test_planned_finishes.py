"""The success of plain jobs on their last request in one statement (PostgreSQL and SQLite,
store/sql/plannedfinish.py) leaves the rows and jobs the machine fired per job leaves
(OUT-001, LEASE-002, JOB-010, MULTI-002, RESULT-001).

The same reports are recorded twice, each time in a transaction rolled back afterwards:
once with the finish plan, once firing the machine per report. Both must raise the same
refusal, or return the same jobs, read the same dependents in passing, and leave every row
of the table alike (the requests' JSON compared as JSON: only its spacing may differ).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from conveyor import Conveyor, ManualClock
from conveyor.engine import JobEngine
from conveyor.errors import PartlyRecorded, StaleLease
from conveyor.execution import Performed
from conveyor.finishplan import finish_plan
from conveyor.model import Job, JobError, Lease, Request, replace
from conveyor.retry import RetryPolicy
from conveyor.worker import Worker

from .conftest import SERVER_URLS, _factory, require_service

ENGINE = JobEngine()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ERROR = JobError(kind="temporary", message='é "x"', attempt=1, at=T0)
PAYLOADS = st.sampled_from(
    [{"n": 1}, {"x": 1.5e300, "y": 0.1}, {"text": 'ünï "q" \\ ✓', "nested": [1, None]}, []]
)
RESULTS = st.sampled_from([None, None, {"sum": 3}, [1.5e300, "ü"], "x" * 70_000])


NAMES = itertools.count()


class RolledBack(Exception):
    """Raised to leave a transaction without committing it."""


@pytest.fixture(params=("postgresql", "sqlite"))
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conveyor]:
    """The stores with a planned finish: one statement on PostgreSQL (alone in autocommit
    where every outcome is planned), one in the worker's transaction on SQLite."""
    if request.param in SERVER_URLS:
        require_service(request.param)
    for make in _factory(request.param, tmp_path, ManualClock(T0)):
        yield make()


def _postgresql_only(app: Conveyor) -> None:
    if not app.store.display_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL records planned successes alone, in autocommit")


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, ...]:
    """Succeeded requests, then the one running (or, now and then, in another state), then
    pending ones: one left as a rule."""
    done = draw(st.integers(0, 2))
    left = draw(st.sampled_from([1, 1, 1, 2]))
    states = ["succeeded"] * done + [draw(st.sampled_from(["running"] * 4 + ["pending"]))]
    states += ["pending"] * (left - 1)
    return tuple(
        Request(
            index=i,
            type="task",
            payload=draw(PAYLOADS),
            state=state,
            attempts=draw(st.integers(0, 3)),
            error=draw(st.none() | st.just(ERROR)),
        )
        for i, state in enumerate(states)
    )


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    """A job being processed, plain as a rule; some use a feature the plan leaves to the
    machine (a serial group, unique mode, recurrence), some are in another state or have no
    lease (rescued), some have a cancel requested."""
    featured = draw(st.sampled_from([None, None, None, "serial", "unique", "recurring"]))
    # a group or identifier of its own: two leased jobs cannot share one (their locks)
    own = str(next(NAMES))
    token = draw(st.integers(1, 3))
    leased = draw(st.sampled_from([True, True, True, False]))
    return Job(
        id="0",
        sequence=0,
        queue="default",
        priority=0,
        state=draw(st.sampled_from(["processing"] * 5 + ["ready"])),
        available_at=T0 - timedelta(seconds=20),
        created_at=T0 - timedelta(minutes=1),
        updated_at=T0 - timedelta(seconds=10),
        retry_policy=RetryPolicy("constant", 1000, 1000, max_attempts=3),
        requests=draw(requests()),
        attempts=draw(st.integers(1, 3)),
        serial_group=own if featured == "serial" else None,
        identifier=own if featured == "unique" else None,
        unique=featured == "unique",
        recurring_interval_ms=60_000 if featured == "recurring" else None,
        metadata=draw(st.sampled_from([{}, {"k": "v"}])),
        lease_token=token,
        lease=Lease(token, "w1", T0 + timedelta(seconds=30)) if leased else None,
        cancel_requested_at=draw(st.sampled_from([None, None, None, T0])),
    )


@st.composite
def reports(draw: st.DrawFn, job: Job) -> tuple[Job, str, dict[str, Any], dict[str, Any]]:
    """A worker's report of a success: mostly with the job's token, as last written."""
    token = draw(st.sampled_from([job.lease_token] * 4 + [job.lease_token + 1]))
    update: dict[str, Any] = {
        "execution": {"pid": 7, "duration_ms": draw(st.integers(0, 5)), "worker_id": "w1"},
        "metadata": draw(st.sampled_from([job.metadata, {"added": "ü"}])),
    }
    result = draw(RESULTS)
    if result is not None:
        update["result"] = result
    return job, "succeed", {"lease_token": token}, update


def _record(app: Conveyor, planned: bool, recorded: list[Any]) -> tuple[Any, ...]:
    """(refusal type or None, jobs returned, jobs of the outcome, dependents read, rows)."""
    lifecycle = app.lifecycle
    saved = lifecycle.finish_plan
    lifecycle.finish_plan = finish_plan(lifecycle.engine) if planned else None
    found: list[Any] = []

    def record_and_roll_back() -> None:
        with app.store.transaction() as tx:
            try:
                finals, outcome = lifecycle.record_all(tx, recorded, app.now())
            except Exception as error:  # the refusal is compared, then rolled back
                found.extend([type(error), None, None, None, None])
                raise RolledBack from error
            table = app.store.tables.jobs  # type: ignore[attr-defined]
            rows = tx.connection.execute(select(table).order_by(table.c.id)).mappings().all()
            found.extend(
                [
                    None,
                    finals,
                    [job.id for job in outcome.jobs],
                    outcome.dependents_read,
                    [{**row, "requests": json.loads(row["requests"])} for row in rows],
                ]
            )
            raise RolledBack

    try:
        record_and_roll_back()
    except RolledBack:
        pass
    finally:
        lifecycle.finish_plan = saved
    return tuple(found)


def _known_ids(found: tuple[Any, ...], known: set[str]) -> tuple[Any, ...]:
    """A recurring job's next run has an id of its own in each run (a sequence does not roll
    back): its id and sequence are left out of the comparison."""
    refusal, finals, jobs, dependents, rows = found
    if refusal is not None:
        return found
    jobs = [job_id if job_id in known else "next" for job_id in jobs]
    rows = [
        row if str(row["id"]) in known else {**row, "id": None, "sequence": None} for row in rows
    ]
    return refusal, finals, jobs, dependents, rows


@given(data=st.data(), published=st.lists(jobs(), min_size=1, max_size=5))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_successes_in_one_statement_leave_the_rows_firing_the_machine_leaves(
    app: Conveyor, data: st.DataObject, published: list[Job]
) -> None:
    """Plain and other jobs, last requests and others, current and lost leases, valid and
    oversized results, mixed in one batch; one job depends on the first (its dependents are
    read in passing)."""
    app.store.erase()
    with app.store.transaction() as tx:
        stored = tx.insert_jobs(published)
        dependant = replace(published[0], state="ready", lease=None, depends_on=(stored[0].id,))
        [waiting] = tx.insert_jobs([dependant])
    recorded = [data.draw(reports(job)) for job in stored]
    known = {job.id for job in stored} | {waiting.id}
    planned = _known_ids(_record(app, True, recorded), known)
    fired = _known_ids(_record(app, False, recorded), known)
    assert planned[0] == fired[0]
    assert planned[1] == fired[1]
    assert planned[2] == fired[2]
    assert planned[4] == fired[4]
    if planned[0] is None:  # the jobs ended whose dependents were read, and those dependents:
        # the statement reads them for every job it ends, the machine's writes for some
        (read, dependents), (fired_read, _) = planned[3], fired[3]
        assert fired_read <= read
        assert (waiting.id in dependents) >= (stored[0].id in read)


def test_the_job_machine_success_is_planned(app: Conveyor) -> None:
    """The spec's success on the last request compiles, and a worker's outcomes of plain
    jobs are then written by the planned statement: no machine fired for them."""
    plan = finish_plan(ENGINE)
    assert plan is not None
    assert plan.effects == ("succeed_request", "release_lease", "stamp_finished")
    assert plan.request.target == "succeeded"
    app.register("task", lambda: 41 + 1)
    job = app.publish("task")
    fired: list[str] = []
    fire = app.lifecycle.engine.fire

    def counting(job: Job, *args: Any, **kwargs: Any) -> Any:
        fired.append(job.state)
        return fire(job, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.lifecycle.engine, "fire", counting)
        app.process()
    done = app.get(job.id)
    assert done.state == "finished"
    assert done.result == 42
    assert done.requests[0].state == "succeeded"
    assert done.lease is None
    assert "processing" not in fired  # the claim is planned too: the machine fired for none


def _success(job: Job, token: int | None = None) -> Performed:
    """A worker's report that ``job`` succeeded (with its lease's token unless told)."""
    assert job.lease is not None
    return Performed(
        job=job,
        current=job,
        event="succeed",
        params={"lease_token": job.lease.token if token is None else token},
        update={"execution": {"pid": 1, "duration_ms": 0}, "metadata": job.metadata},
        die=False,
    )


def test_an_idle_worker_s_success_is_one_statement_that_commits_itself(app: Conveyor) -> None:
    """Outcomes that are all planned successes are written on the autocommit connection:
    one round trip, no BEGIN or COMMIT of their own."""
    _postgresql_only(app)
    import psycopg

    app.register("task", lambda: None)
    assert app.record_and_claim([], "w1").jobs == []  # the connections are set up
    job = app.publish("task")
    [claimed] = app.claim("w1")
    seen: list[tuple[str, bool]] = []
    execute = psycopg.Cursor.execute

    def recording(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((str(query).lstrip()[:12], cursor.connection.autocommit))
        return execute(cursor, query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", recording)
        result = app.record_and_claim([_success(claimed)], "w1", limit=0)
    assert seen == [("WITH written", True)]
    assert [j.state for j in result.recorded] == ["finished"]
    assert app.get(job.id).state == "finished"  # committed: another session sees it


def test_successes_recorded_alone_are_not_recorded_again_when_the_rest_is_refused(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    """One report of two lost its lease: the statement commits the other; the refusal of
    the lost one comes as PartlyRecorded with the job it recorded, and a worker then records
    only the lost one again (one warning, for it)."""
    _postgresql_only(app)
    app.register("task", lambda: None)
    first, second = app.publish("task"), app.publish("task")
    claimed = app.claim("w1", limit=2)
    assert [j.id for j in claimed] == [first.id, second.id]
    assert claimed[1].lease is not None
    lost = _success(claimed[1], token=claimed[1].lease.token + 1)
    reports = [_success(claimed[0]), lost]
    with pytest.raises(PartlyRecorded) as refused:
        app.record_and_claim(reports, "w1", limit=0)
    assert isinstance(refused.value.__cause__, StaleLease)
    assert list(refused.value.recorded) == [first.id]
    assert app.get(first.id).state == "finished"
    assert app.get(second.id).state == "processing"
    worker = app.worker(stop_when_empty=True)
    assert isinstance(worker, Worker)
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        worker._record_each(reports, refused.value)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert second.id in warned[0]
    assert app.get(first.id).state == "finished"
