"""Operations: cancel, requeue, retry, recurring jobs, batches, tags, pruning, listing, status.

Spec: OPS-008..006, REC-001..003, BATCH-001..004, TAG-001/002, JOB-001/005.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import (
    BatchClosed,
    Call,
    Conveyor,
    InvalidRequest,
    InvalidTransition,
    Job,
    JobNotFound,
    ManualClock,
    PermanentError,
    RetryPolicy,
    UnknownType,
)

from .core_support import PERMANENT, TEMPORARY, claim_one, drive_to, memory_app, report


def ids(jobs: Sequence[Job]) -> list[str]:
    return [job.id for job in jobs]


# -- cancel, requeue, retry ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        ("ready", True),
        ("temporarily_failed", True),
        ("waiting", True),
        ("broker_failed", True),
        ("back_to_broker", True),
        ("finished", False),
        ("permanently_failed", False),
        ("cancelled", False),
    ],
)
def test_cancel_ends_active_jobs_that_are_not_running(
    app: Conveyor, state: str, allowed: bool
) -> None:
    """OPS-008: cancel works in every active state but processing (a request there, see
    test_cancel_running.py); elsewhere it is refused."""
    job = drive_to(app, state)
    if allowed:
        cancelled = app.cancel(job.id)
        assert (cancelled.state, cancelled.finished_at) == ("cancelled", app.now())
    else:
        with pytest.raises(InvalidTransition):
            app.cancel(job.id)
        assert app.get(job.id) == job


def test_operations_on_a_missing_job_are_not_found(app: Conveyor) -> None:
    """OPS-002: naming a job or batch that is not stored is refused with not_found."""
    for operation in (app.get, app.cancel, app.requeue, app.retry):
        with pytest.raises(JobNotFound):
            operation("987654")
    with pytest.raises(JobNotFound):
        app.get_batch("987654")
    with pytest.raises(JobNotFound):
        app.seal_batch("987654")


@pytest.mark.parametrize("state", ["temporarily_failed", "waiting", "broker_failed"])
def test_requeue_makes_a_held_job_ready_and_due_now(app: Conveyor, state: str) -> None:
    """OPS-003: requeue moves the job to ready with available_at = now, attempts kept."""
    job = drive_to(app, state)
    again = app.requeue(job.id)
    assert (again.state, again.available_at, again.attempts) == ("ready", app.now(), job.attempts)
    assert ids(app.claim("w1")) == [job.id]


def test_requeue_of_a_ready_job_is_refused(app: Conveyor) -> None:
    """OPS-003: only held jobs can be requeued."""
    job = drive_to(app, "ready")
    with pytest.raises(InvalidTransition):
        app.requeue(job.id)


def test_retry_grants_fresh_attempts_and_reopens_requests(
    app: Conveyor, clock: ManualClock
) -> None:
    """OPS-004: attempts 0, due now, finished_at null, failed requests pending again."""
    app.register("fragile", lambda: None, retry=RetryPolicy("constant", 10, 10, max_attempts=2))
    job = app.publish_job([Call("fragile"), Call("fragile")])
    for attempt in range(2):
        claimed = claim_one(app, job)
        if attempt == 0:
            report(app, claimed, "succeed")
        report(app, claimed, "fail_temporarily", error=TEMPORARY)
        clock.advance(1)
    failed = app.get(job.id)
    assert (failed.state, failed.attempts) == ("permanently_failed", 2)
    clock.advance(60)
    again = app.retry(job.id)
    assert (again.state, again.attempts, again.finished_at) == ("ready", 0, None)
    assert again.available_at == clock.now()
    assert [r.state for r in again.requests] == ["succeeded", "pending"]
    assert len(again.errors) == 2
    report(app, claim_one(app, job), "succeed")
    assert app.get(job.id).state == "finished"


# -- recurring -------------------------------------------------------------------------------


def occurrences(app: Conveyor) -> list[Job]:
    return app.jobs(limit=1000)


def test_a_finished_recurring_job_publishes_its_next_occurrence(
    app: Conveyor, clock: ManualClock
) -> None:
    """REC-001/002: a copy, available at now + interval, same options, fresh state."""
    app.register("tick", lambda n: None)
    first = app.publish(
        "tick",
        {"n": 1},
        recurring=timedelta(minutes=10),
        priority=7,
        queue="upkeep",
        serial_group="ticks",
        identifier="tick",
        tags=["kind:tick"],
        metadata={"owner": "ops"},
        retry="progressive",
    )
    clock.advance(30)
    report(app, claim_one(app, first), "succeed")
    old, copy = occurrences(app)
    assert old.id == first.id
    assert old.state == "finished"
    assert copy.sequence > first.sequence
    assert (copy.state, copy.attempts, copy.lease, copy.lease_token) == ("ready", 0, None, 0)
    assert copy.available_at == clock.now() + timedelta(minutes=10)
    assert copy.created_at == clock.now()
    assert (copy.errors, copy.last_error, copy.finished_at) == ((), None, None)
    for field in ("queue", "priority", "serial_group", "identifier", "tags", "metadata"):
        assert getattr(copy, field) == getattr(first, field), field
    assert copy.retry_policy == first.retry_policy
    assert copy.recurring_interval_ms == 600_000
    assert [(r.type, r.payload, r.state) for r in copy.requests] == [("tick", {"n": 1}, "pending")]


def test_recurrence_continues_through_the_copies(app: Conveyor, clock: ManualClock) -> None:
    """REC-001: each occurrence, once finished, publishes the next."""
    runs: list[int] = []
    app.register("tick", lambda: runs.append(1))
    app.publish("tick", recurring=60)
    for _ in range(3):
        app.process()
        clock.advance(60)
    assert len(runs) == 3
    states = [j.state for j in occurrences(app)]
    assert states == ["finished", "finished", "finished", "ready"]


@pytest.mark.parametrize("how", ["permanent", "attempts_exhausted"])
def test_a_recurring_job_that_fails_for_good_still_recurs(app: Conveyor, how: str) -> None:
    """REC-001: J07 and J08 (a report of the handler) publish the next occurrence."""

    def broken() -> None:
        if how == "permanent":
            raise PermanentError("bad")
        raise ConnectionError("down")

    app.register("broken", broken, retry=RetryPolicy("constant", 1, 1, max_attempts=1))
    app.publish("broken", recurring=60)
    app.process()
    assert [j.state for j in occurrences(app)] == ["permanently_failed", "ready"]


def test_cancelling_a_recurring_job_stops_the_recurrence(app: Conveyor) -> None:
    """REC-003: a cancelled occurrence publishes no copy."""
    app.register("tick", lambda: None)
    job = app.publish("tick", recurring=60)
    app.cancel(job.id)
    assert [j.state for j in occurrences(app)] == ["cancelled"]


def test_a_recurring_job_whose_lease_expires_for_good_does_not_recur(
    app: Conveyor, clock: ManualClock
) -> None:
    """REC-003: J11 (lease expired, no attempts left) publishes no copy."""
    app.register("tick", lambda: None, retry=RetryPolicy("constant", 1, 1, max_attempts=1))
    job = app.publish("tick", recurring=60)
    claim_one(app, job, lease_ms=1000)
    clock.advance(2)
    app.rescue_expired()
    assert [j.state for j in occurrences(app)] == ["permanently_failed"]


def test_a_recurring_interval_below_one_second_is_refused(app: Conveyor) -> None:
    """The schema's recurring.interval_ms minimum is 1000."""
    app.register("tick", lambda: None)
    with pytest.raises(InvalidRequest, match="interval_ms"):
        app.publish("tick", recurring=0.5)
    assert app.status() == []


# -- batches ---------------------------------------------------------------------------------


def test_a_batch_publishes_its_completion_once_every_job_is_terminal(
    app: Conveyor, clock: ManualClock
) -> None:
    """BATCH-002..004: after seal, the last of its jobs to end publishes the completion."""
    done: list[int] = []
    app.register("part", lambda n: None)
    app.register("summary", done.append)
    batch = app.open_batch(Call("summary", 3))
    assert (batch.state, batch.total, batch.created_at) == ("open", 0, clock.now())
    parts = [app.publish("part", {"n": n}, batch=batch) for n in range(3)]
    assert app.get_batch(batch.id).total == 3
    assert {j.batch_id for j in parts} == {batch.id}
    assert ids(app.jobs(batch=batch.id)) == ids(parts)
    report(app, claim_one(app, parts[0]), "succeed")
    report(app, claim_one(app, parts[1]), "fail_permanently", error=PERMANENT)
    assert app.seal_batch(batch).state == "sealed"
    assert len(app.jobs()) == 3
    clock.advance(5)
    report(app, claim_one(app, parts[2]), "succeed")
    finished = app.get_batch(batch.id)
    assert (finished.state, finished.finished_at) == ("finished", clock.now())
    [completion] = [j for j in app.jobs() if j.requests[0].type == "summary"]
    assert (completion.state, completion.batch_id) == ("ready", None)
    assert completion.created_at == clock.now()
    app.process()
    assert done == [3]
    assert len(app.jobs()) == 4


def test_adding_to_a_sealed_or_finished_batch_is_refused(app: Conveyor) -> None:
    """BATCH-002: batch_closed for sealed and finished batches; nothing is stored."""
    app.register("part", lambda: None)
    sealed = app.open_batch()
    app.publish("part", batch=sealed)
    app.seal_batch(sealed)
    finished = app.open_batch()
    assert app.seal_batch(finished).state == "finished"
    before = app.status()
    for batch in (sealed, finished):
        with pytest.raises(BatchClosed):
            app.publish("part", batch=batch)
    with pytest.raises(JobNotFound):
        app.publish("part", batch="987654")
    assert app.status() == before


def test_a_batch_context_seals_on_exit(app: Conveyor) -> None:
    """BATCH-003: ``with app.batch()`` seals when the block ends."""
    app.register("part", lambda: None)
    with app.batch(Call("part")) as batch:
        app.publish("part", batch=batch)
        assert app.get_batch(batch.id).state == "open"
    assert app.get_batch(batch.id).state == "sealed"
    app.process()
    assert app.get_batch(batch.id).state == "finished"
    assert [j.state for j in app.jobs()] == ["finished", "finished"]


def test_a_completion_is_validated_when_the_batch_opens(app: Conveyor) -> None:
    """BATCH-001: an invalid completion, or one with a batch or dependencies, is refused."""
    app.register("part", lambda: None)
    with pytest.raises(UnknownType):
        app.open_batch(Call("nobody"))
    with pytest.raises(InvalidRequest):
        app.open_batch(Call("part"), queue="Not A Queue")
    other = app.open_batch()
    dependency = app.publish("part")
    with pytest.raises(InvalidRequest):
        app.open_batch(Call("part"), batch_id=other.id)
    with pytest.raises(InvalidRequest):
        app.open_batch(Call("part"), depends_on=[dependency.id])


# -- tags and listing ------------------------------------------------------------------------


def test_jobs_are_found_by_every_tag_they_carry(app: Conveyor) -> None:
    """TAG-001/002: jobs(tag=...) returns every job with exactly that tag, in sequence order."""
    app.register("task", lambda: None)
    a = app.publish("task", tags=["customer:42", "invoice:7"])
    app.publish("task", tags=["customer:420"])
    c = app.publish("task", tags=["Customer:42", "customer:42"])
    app.publish("task")
    assert ids(app.jobs(tag="customer:42")) == [a.id, c.id]
    assert ids(app.jobs(tag="invoice:7")) == [a.id]
    assert ids(app.jobs(tag="Customer:42")) == [c.id]
    assert app.get(c.id).tags == ("Customer:42", "customer:42")
    report(app, claim_one(app, a), "succeed")
    assert ids(app.jobs(tag="customer:42")) == [a.id, c.id]


@given(
    specs=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", None])),
        max_size=12,
    ),
    page=st.integers(1, 5),
)
@settings(max_examples=40, deadline=None)
def test_listing_filters_and_pages_in_sequence_order(
    specs: list[tuple[str, str | None]], page: int
) -> None:
    """OPS-006: filters combine; pages continue after the last sequence seen."""
    app = memory_app()
    published = [app.publish("task", queue=q, identifier=i) for q, i in specs]
    wanted = [j.id for j in published if j.queue == "a" and j.identifier == "x"]
    seen: list[str] = []
    after = 0
    while True:
        chunk = app.jobs(queue="a", identifier="x", limit=page, after_sequence=after)
        if not chunk:
            break
        assert len(chunk) <= page
        seen.extend(ids(chunk))
        after = chunk[-1].sequence
    assert seen == wanted


# -- pruning, ids, status --------------------------------------------------------------------


def test_clear_finished_deletes_only_old_finished_and_redundant_jobs(
    app: Conveyor, clock: ManualClock
) -> None:
    """OPS-005: prunable states finished before now - older_than, in chunks; the rest stay."""
    old = [drive_to(app, "finished") for _ in range(5)]
    old.append(drive_to(app, "redundant", identifier="r"))
    kept_states = ["permanently_failed", "cancelled", "ready", "temporarily_failed"]
    kept = [drive_to(app, state) for state in kept_states]
    clock.advance(timedelta(hours=2))
    recent = drive_to(app, "finished")
    clock.advance(timedelta(minutes=30))
    assert app.clear_finished(older_than=timedelta(hours=1), chunk=2) == 7
    remaining = set(ids(app.jobs()))
    assert remaining == {*ids(kept), recent.id}
    assert all(job.id not in remaining for job in old)
    assert app.clear_finished(older_than=timedelta(hours=1)) == 0
    clock.advance(timedelta(hours=1))
    assert app.clear_finished(older_than=timedelta(hours=1)) == 1


def test_ids_and_sequences_are_never_reused_after_pruning(
    app: Conveyor, clock: ManualClock
) -> None:
    """JOB-001/005: a new job gets a sequence above every job ever published, even deleted ones."""
    app.register("task", lambda: None)
    jobs = [app.publish("task") for _ in range(3)]
    app.process()
    clock.advance(60)
    assert app.clear_finished() == 3
    later = app.publish("task")
    assert later.id not in ids(jobs)
    assert later.sequence > max(j.sequence for j in jobs)


def test_status_counts_jobs_by_queue_and_state(app: Conveyor) -> None:
    """status() reports (queue, state, count) for every non-empty combination."""
    app.register("task", lambda: None)
    for queue in ("a", "a", "b"):
        app.publish("task", queue=queue)
    drive_to(app, "finished", queue="b")
    drive_to(app, "cancelled", queue="a")
    assert sorted(app.status()) == [
        ("a", "cancelled", 1),
        ("a", "ready", 2),
        ("b", "finished", 1),
        ("b", "ready", 1),
    ]
