"""The compiled form of the job machine writes what the generic engine writes.

At load, each transition of machines/job.json becomes the effect calls it makes and the job
fields it may write (engine.JobEngine). The hot path fires that form and writes the columns
of those fields without comparing the two versions of the job; the generic path looks each
effect up by name, copies the job per effect and finds the columns by comparison. For random
jobs and events both give the same job, the same system effects, and the same row; and the
set-based write of many outcomes (PostgreSQL) leaves the rows the single writes leave.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, ManualClock
from conveyor.clock import to_ms
from conveyor.engine import EFFECT_FIELDS, Firing, JobEngine
from conveyor.errors import ConveyorError
from conveyor.lifecycle import state_sets
from conveyor.model import Job, JobError, Lease, Request, replace
from conveyor.retry import RetryPolicy
from conveyor.store.sql.rows import changed_values, flags_of, job_values, written_values
from conveyor.store.sql.setwrites import SetWrites

from .conftest import _factory, require_service
from .core_support import JOB_MACHINE, REQUEST_MACHINE, report

ENGINE = JobEngine()
STATES = state_sets(ENGINE.machine)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MOMENTS = st.sampled_from([T0 - timedelta(seconds=5), T0, T0 + timedelta(seconds=5)])
LABELS = st.none() | st.sampled_from(["g1", "ïd-2", 'quote"d'])
ERROR = st.builds(
    lambda kind, message: {"kind": kind, "message": message, "type": "ValueError"},
    st.sampled_from(["temporary", "permanent"]),
    st.sampled_from(["boom", "ünïcode ✓", 'a "quoted" \\ message']),
)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    request_states = sorted(REQUEST_MACHINE["states"])
    count = draw(st.integers(1, 3))
    requests = tuple(
        Request(
            index=i,
            type="task",
            payload=draw(st.sampled_from(['{"n":1}', "[]", '"ü"'])),
            state=draw(st.sampled_from(request_states)),
            attempts=draw(st.integers(0, 3)),
        )
        for i in range(count)
    )
    token = draw(st.integers(0, 3))
    state = draw(st.sampled_from(sorted(JOB_MACHINE["states"])))
    # A job holds a lease exactly while its state is a leased one (processing).
    lease = Lease(max(token, 1), "w1", draw(MOMENTS)) if state in STATES.leased else None
    errors = tuple(
        JobError(kind="temporary", message=f"e{i}", attempt=i, at=T0)
        for i in range(draw(st.integers(0, 2)))
    )
    return Job(
        id="7",
        sequence=7,
        queue=draw(st.sampled_from(["default", "mails"])),
        priority=draw(st.integers(-2, 2)),
        state=state,
        available_at=draw(MOMENTS),
        created_at=T0 - timedelta(minutes=1),
        updated_at=T0 - timedelta(seconds=30),
        retry_policy=RetryPolicy(
            "constant", 1000, 1000, max_attempts=draw(st.none() | st.integers(1, 3))
        ),
        requests=requests,
        # A leased job has counted the attempt it runs (a retry's delay is read from it).
        attempts=draw(st.integers(1 if lease else 0, 4)),
        finished_at=draw(st.none() | MOMENTS),
        serial_group=draw(LABELS),
        identifier=draw(LABELS),
        unique=draw(st.booleans()),
        metadata=draw(st.sampled_from([{}, {"k": "v"}])),
        lease_token=max(token, lease.token) if lease else token,
        lease=lease,
        last_error=errors[-1] if errors else None,
        errors=errors,
    )


@st.composite
def firings(draw: st.DrawFn, job: Job) -> Firing:
    event = draw(st.sampled_from(sorted(JOB_MACHINE["events"])))
    params: dict[str, Any] = {"worker_id": "w2", "lease_ms": draw(st.sampled_from([1000, 30_000]))}
    token = draw(st.sampled_from(["current", "stale", "none"]))
    if token == "current":
        params["lease_token"] = job.lease.token if job.lease else job.lease_token
    elif token == "stale":
        params["lease_token"] = job.lease_token + 5
    if draw(st.booleans()):
        params["error"] = draw(ERROR)
    if draw(st.booleans()):
        params["retry_after_ms"] = draw(st.integers(0, 5000))
    if draw(st.booleans()):
        params["delay_ms"] = draw(st.integers(0, 5000))
    facts = {
        name: draw(st.booleans())
        for name in (
            "dependencies_succeeded",
            "serial_group_idle",
            "serial_group_head",
            "unique_sibling_processing",
            "unique_sibling_succeeded",
        )
    }
    return Firing(event, draw(MOMENTS), params, facts, waiting_delay_ms=1500)


def _row_after(before: Job, changes: dict[str, Any]) -> dict[str, Any]:
    return {**job_values(before, flags_of(before, STATES)), **changes}


@given(data=st.data(), job=jobs())
@settings(max_examples=400, deadline=None)
def test_the_compiled_transition_gives_the_generic_engines_job_and_row(
    data: st.DataObject, job: Job
) -> None:
    """Same refusal or same transition, job, system effects; the columns the compiled form
    writes and the columns the comparison finds make the same row, the row of the new job."""
    firing = data.draw(firings(job))
    try:
        generic = ENGINE.fire_by_name(job, firing)
    except ConveyorError as error:
        refusal: type[ConveyorError] = type(error)
        with pytest.raises(refusal):
            ENGINE.fire(job, firing)
        return
    # A worker's outcome also sets plain fields; the same metadata object is no change.
    update = data.draw(
        st.sampled_from(
            [{}, {"execution": {"pid": 1}}, {"execution": {"pid": 2}, "metadata": job.metadata}]
        )
    )
    generic = replace(generic, job=replace(generic.job, **update))
    compiled = ENGINE.fire(job, firing, update)
    assert compiled.transition == generic.transition
    assert compiled.job == generic.job
    assert compiled.system_effects == generic.system_effects
    after = compiled.job
    flags = (flags_of(job, STATES), flags_of(after, STATES))
    written = written_values(job, after, *flags, compiled.fields)
    compared = changed_values(job, after, *flags)
    expected = job_values(after, flags[1])
    assert _row_after(job, written) == expected
    assert _row_after(job, compared) == expected
    # A lock column is written only where the comparison writes it: no write takes a lock
    # (and a savepoint) that the generic path would not.
    for lock in ("group_lock", "unique_lock"):
        assert (lock in written) == (lock in compared)
    # The compiled fields are every field the transition changed.
    changed = {name for name in job.__dict__ if job.__dict__[name] != after.__dict__[name]}
    assert changed <= compiled.fields


def test_every_job_effect_declares_the_fields_it_writes() -> None:
    """The compiled form is derived from the machine file and EFFECT_FIELDS: each effect the
    file names that changes the job's own fields has an entry (SpecError at load otherwise)."""
    job_effects = {
        name
        for name, effect in JOB_MACHINE["effects"].items()
        if effect.get("scope", "job") == "job" and "request_event" not in effect
    }
    assert job_effects == set(EFFECT_FIELDS)


def test_many_outcomes_written_in_one_statement_leave_the_rows_single_writes_leave(
    app: Conveyor, clock: ManualClock
) -> None:
    """LEASE-002 on the batched path: claims and outcomes of several jobs at once (one
    set-based statement on PostgreSQL) store exactly the jobs the engine computed, text
    with quotes and non-ASCII characters included, and a moved row fails the whole write."""
    app.register("task", lambda **kw: None)
    published = [
        app.publish("task", {"text": f'ünï "{i}" \\ ✓'}, metadata={"k": f"v{i}"}) for i in range(5)
    ]
    claimed = app.claim("w1", limit=5, lease_ms=10_000)
    assert sorted(job.id for job in claimed) == sorted(job.id for job in published)
    for job in claimed:
        assert app.get(job.id) == job
    clock.advance(2)
    now = app.now()
    recorded = []
    with app.store.transaction() as tx:
        finals, _ = app.lifecycle.record_all(
            tx, [(job, "succeed", {"lease_token": 1}, {}) for job in claimed[:3]], now
        )
        recorded.extend(finals)
    for job in recorded:
        assert job.state == "finished"
        assert app.get(job.id) == job
    report(app, claimed[4], "succeed")  # its row moves on: a batch naming it fails whole
    stale = [(job, replace(job, attempts=9)) for job in claimed[3:]]
    with app.store.transaction() as tx:
        assert not tx.save_jobs(stale, [frozenset({"attempts"})] * len(stale))


def test_postgresql_set_based_write_finds_each_row_by_its_primary_key(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The batched write reads only the batch's rows: never through the lease index by expiry
    (every job of a claim has one expiry), whatever the planner estimates."""
    require_service("postgresql")
    factory = _factory("postgresql", tmp_path, clock)
    app = next(factory)()
    try:
        app.register("task", lambda: None)
        with app.bulk():
            for _ in range(300):
                app.publish("task")
        store: Any = app.store
        with store.engine.begin() as connection:  # statistics of a table with no lease held
            connection.exec_driver_sql(f"ANALYZE {store.tables.jobs.name}")
        claimed = app.claim("w1", limit=100, lease_ms=10_000)
        outcomes = [
            {
                "w_id": int(job.id),
                "w_state": job.state,
                "w_token": job.lease_token,
                "w_expires": job.lease and to_ms(job.lease.expires_at),
                "set_state": "finished",
            }
            for job in claimed
        ]
        sql, _ = store.set_writes.statement(frozenset({"state"}), False)
        with store.transaction() as tx:
            cursor = tx.connection.connection.dbapi_connection.cursor()
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            # on this small table a scan would do; the question is which index a probe takes
            for method in ("seqscan", "hashjoin", "mergejoin"):
                cursor.execute(f"SET LOCAL enable_{method} = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", SetWrites.parameters(outcomes))
            (document,) = cursor.fetchone()
            tx.connection.rollback()
        assert _reads_only_the_batch(document, store.tables.jobs.name), document
    finally:
        for _ in factory:
            pass


def _reads_only_the_batch(document: Any, table: str) -> bool:
    """Every read of ``table`` in the plan is narrowed to the batch's ids (by the primary key
    or the ids' array) before any join, and none probes an index by lease expiry."""
    reads = [
        node
        for node in _nodes(document[0]["Plan"])
        if node.get("Relation Name") == table and node["Node Type"] != "ModifyTable"
    ]
    for node in reads:
        index = node.get("Index Cond", "")
        narrowed = " ".join((index, node.get("Recheck Cond", ""), node.get("Filter", "")))
        if "lease_expires_at" in index or not ("= ANY" in narrowed or "(id = " in index):
            return False
    return bool(reads)


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_postgresql_set_based_write_reads_no_whole_table_without_statistics(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A table never analyzed (new, or truncated) looks nearly empty to the planner; the
    generic plan of a batched claim write made then must still reach rows by primary key,
    not scan the table once per batch."""
    require_service("postgresql")
    factory = _factory("postgresql", tmp_path, clock)
    app = next(factory)()
    try:
        app.register("task", lambda: None)
        app.publish_many("task", [None] * 2000)
        store: Any = app.store
        with store.engine.begin() as connection:  # statistics of nothing: as after TRUNCATE
            connection.exec_driver_sql(f"TRUNCATE {store.tables.jobs.name} CASCADE")
        app.publish_many("task", [None] * 2000)
        ready = app.jobs(limit=100)
        claims = [
            {"w_id": int(job.id), "w_state": job.state, "w_token": 0, "set_state": "processing"}
            for job in ready
        ]
        sql, _ = store.set_writes.statement(frozenset({"state"}), True)
        with store.transaction() as tx:
            cursor = tx.connection.connection.dbapi_connection.cursor()
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", SetWrites.parameters(claims))
            (document,) = cursor.fetchone()
            tx.connection.rollback()
        assert _reads_only_the_batch(document, store.tables.jobs.name), document
    finally:
        for _ in factory:
            pass
