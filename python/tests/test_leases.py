"""Leases and fencing tokens: one holder at a time, stale reports refused, dead workers rescued.

Spec: LEASE-001..008, RETRY-004, MACH-007.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sql_events

from conveyor import Conveyor, ManualClock, RetryPolicy, StaleLease

from .core_support import PERMANENT, TEMPORARY, claim_one, memory_app, report, sqlite_app

LEASE = timedelta(seconds=30)


def test_each_claim_grants_the_next_token(app: Conveyor, clock: ManualClock) -> None:
    """LEASE-001: token = previous + 1, expires_at = now + lease_ms; tokens never repeat."""
    app.register("task", lambda: None)
    job = app.publish("task")
    tokens = []
    for _ in range(3):
        claimed = claim_one(app, job, lease_ms=10_000)
        assert claimed.lease is not None
        assert claimed.lease.expires_at == clock.now() + timedelta(seconds=10)
        tokens.append(claimed.lease.token)
        report(app, claimed, "wait", delay_ms=0)
        assert app.get(job.id).lease_token == claimed.lease.token
    assert tokens == [1, 2, 3]


def test_heartbeat_extends_the_lease(app: Conveyor, clock: ManualClock) -> None:
    """LEASE-004: a heartbeat of the holder sets expires_at = now + lease_ms; the job survives."""
    app.register("task", lambda: None)
    claimed = claim_one(app, app.publish("task"), lease_ms=10_000)
    clock.advance(8)
    app.heartbeat(claimed.id, 1, 10_000)
    clock.advance(8)
    assert app.rescue_expired() == []
    got = app.get(claimed.id)
    assert got.lease is not None
    assert got.lease.expires_at == clock.now() + timedelta(seconds=2)
    assert got.state == "processing"


def test_a_heartbeat_that_changes_nothing_is_still_accepted(app: Conveyor) -> None:
    """LEASE-004: a heartbeat at the instant of the claim, with the same lease_ms, succeeds."""
    app.register("task", lambda: None)
    claimed = claim_one(app, app.publish("task"), lease_ms=10_000)
    assert app.heartbeat(claimed.id, 1, 10_000).lease == claimed.lease
    with pytest.raises(StaleLease):
        app.heartbeat(claimed.id, 2, 10_000)


def test_a_report_with_a_stale_token_changes_nothing(app: Conveyor) -> None:
    """LEASE-007: any holder event with another token is StaleLease; the job is untouched."""
    app.register("task", lambda: None)
    claimed = claim_one(app, app.publish("task"))
    before = app.get(claimed.id)
    for event, params in [
        ("succeed", {}),
        ("fail_temporarily", {"error": TEMPORARY}),
        ("fail_permanently", {"error": PERMANENT}),
        ("wait", {}),
        ("heartbeat", {"lease_ms": 1000}),
    ]:
        for token in (2, 0):  # 0 is never granted: stale too, not invalid_transition
            with pytest.raises(StaleLease):
                app.fire(claimed.id, event, {"lease_token": token, **params})
            assert app.get(claimed.id) == before


def test_an_expired_lease_is_rescued_and_the_old_holder_is_fenced_off(
    app: Conveyor, clock: ManualClock
) -> None:
    """LEASE-005/007: rescue counts the attempt, records lease_expired; the old report is stale."""
    app.register("task", lambda: None)
    job = app.publish("task")
    first = claim_one(app, job, lease_ms=30_000)
    clock.advance(29.999)
    assert app.rescue_expired() == []
    clock.advance(0.001)
    rescued = app.rescue_expired()
    assert [j.id for j in rescued] == [job.id]
    got = app.get(job.id)
    assert (got.state, got.attempts, got.lease) == ("temporarily_failed", 1, None)
    assert got.last_error is not None
    assert got.last_error.kind == "lease_expired"
    assert "w1" in got.last_error.message
    assert got.errors[-1] == got.last_error  # OUT-007: the entry itself
    assert (got.last_error.attempt, got.last_error.request) == (1, 0)
    abandoned = got.requests[0]
    assert abandoned.state == "failed"
    assert abandoned.error is not None  # LEASE-009: the request says why it failed
    assert (abandoned.error.kind, abandoned.error.message) == (
        "lease_expired",
        got.last_error.message,
    )
    with pytest.raises(StaleLease):
        report(app, first, "succeed")
    clock.advance(timedelta(minutes=1))
    second = claim_one(app, job, worker="w2")
    assert second.lease is not None
    assert second.lease.token == 2
    with pytest.raises(StaleLease):
        report(app, first, "succeed")
    assert report(app, second, "succeed").state == "finished"
    assert app.get(job.id).attempts == 2


def test_a_job_that_keeps_killing_its_worker_ends_after_max_attempts(
    app: Conveyor, clock: ManualClock
) -> None:
    """LEASE-003/006: attempts are counted at claim, so with max_attempts=2 it stops after 2."""
    app.register("task", lambda: None)
    policy = RetryPolicy("constant", 1000, 1000, max_attempts=2)
    job = app.publish("task", retry=policy)
    claims = 0
    for _ in range(10):
        clock.advance(2)
        if app.claim("w1", lease_ms=1000):
            claims += 1
        clock.advance(2)
        app.rescue_expired()
    got = app.get(job.id)
    assert claims == 2
    assert (got.state, got.attempts) == ("permanently_failed", 2)
    assert [e.kind for e in got.errors] == ["lease_expired", "lease_expired"]


def test_heartbeat_after_the_job_left_processing_is_stale(app: Conveyor) -> None:
    """LEASE-007: after the lease is released, even the right token is refused."""
    app.register("task", lambda: None)
    claimed = claim_one(app, app.publish("task"))
    report(app, claimed, "succeed")
    with pytest.raises(StaleLease):
        app.heartbeat(claimed.id, 1)


# -- interleavings of claim, heartbeat, time, rescue and reports -----------------------------


@dataclass
class Model:
    state: str = "ready"
    token: int = 0
    expires: datetime | None = None
    attempts: int = 0
    available_at: datetime | None = None


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.sampled_from([1, 5, 10, 29, 30, 31, 60])),
        st.tuples(st.just("claim"), st.just(0)),
        st.tuples(st.just("heartbeat"), st.sampled_from([0, -1, 1])),
        st.tuples(st.just("rescue"), st.just(0)),
        st.tuples(st.just("succeed"), st.sampled_from([0, -1])),
        st.tuples(st.just("fail"), st.sampled_from([0, -1])),
    ),
    max_size=30,
)
MAX_ATTEMPTS = 3
RETRY_MS = 5_000


def run_interleaving(app: Conveyor, ops: list[tuple[str, int]]) -> None:
    clock: ManualClock = app.clock  # type: ignore[assignment]
    policy = RetryPolicy("constant", RETRY_MS, RETRY_MS, max_attempts=MAX_ATTEMPTS)
    job = app.publish("task", retry=policy)
    model = Model(available_at=job.available_at)
    for op, arg in ops:
        now = clock.now()
        if op == "advance":
            clock.advance(arg)
            continue
        if op == "claim":
            claimed = app.claim("w", lease_ms=30_000)
            claimable = model.state in ("ready", "temporarily_failed")
            if claimable and model.available_at is not None and model.available_at <= now:
                assert [j.id for j in claimed] == [job.id]
                model.state, model.token, model.attempts = (
                    "processing",
                    model.token + 1,
                    model.attempts + 1,
                )
                model.expires = now + LEASE
            else:
                assert claimed == []
        elif op == "rescue":
            rescued = app.rescue_expired()
            if model.state == "processing" and model.expires is not None and model.expires <= now:
                assert [j.id for j in rescued] == [job.id]
                retry = model.attempts < MAX_ATTEMPTS
                model.state = "temporarily_failed" if retry else "permanently_failed"
                model.available_at = now + timedelta(milliseconds=RETRY_MS)
                model.expires = None
            else:
                assert rescued == []
        else:
            token = model.token + arg if model.token + arg > 0 else 1
            valid = model.state == "processing" and token == model.token
            event, params = {
                "heartbeat": ("heartbeat", {"lease_ms": 30_000}),
                "succeed": ("succeed", {}),
                "fail": ("fail_temporarily", {"error": TEMPORARY}),
            }[op]
            before = app.get(job.id)
            if not valid:
                with pytest.raises(StaleLease):
                    app.fire(job.id, event, {"lease_token": token, **params})
                assert app.get(job.id) == before
                continue
            app.fire(job.id, event, {"lease_token": token, **params})
            if op == "heartbeat":
                model.expires = now + LEASE
            elif op == "succeed":
                model.state, model.expires = "finished", None
            else:
                retry = model.attempts < MAX_ATTEMPTS
                model.state = "temporarily_failed" if retry else "permanently_failed"
                model.available_at = now + timedelta(milliseconds=RETRY_MS)
                model.expires = None
        got = app.get(job.id)
        assert got.state == model.state
        assert got.attempts == model.attempts
        assert got.lease_token == model.token
        assert (got.lease.expires_at if got.lease else None) == model.expires
        if model.state == "temporarily_failed":
            assert got.available_at == model.available_at


@given(ops=OPS)
@settings(max_examples=80, deadline=None)
def test_lease_interleavings_match_the_model_on_memory(ops: list[tuple[str, int]]) -> None:
    """LEASE-001..007: any interleaving of claim/heartbeat/time/rescue/report follows the model."""
    run_interleaving(memory_app(), ops)


@given(ops=OPS)
@settings(max_examples=10, deadline=None)
def test_lease_interleavings_match_the_model_on_sqlite(ops: list[tuple[str, int]]) -> None:
    """The SQL store's conditional writes give the same results as the model."""
    with sqlite_app() as app:
        run_interleaving(app, ops)


def test_claimed_rows_are_written_together_and_a_moved_row_fails_the_write(
    app: Conveyor, clock: ManualClock
) -> None:
    """LEASE-002: a batch claim writes every row or reports that one moved (save_jobs)."""
    app.register("task", lambda: None)
    jobs = [app.publish("task") for _ in range(4)]
    claimed = app.claim("w1", limit=4, lease_ms=10_000)
    assert [job.id for job in claimed] == [job.id for job in jobs]
    assert [job.lease.token for job in claimed if job.lease] == [1, 1, 1, 1]
    assert {app.get(job.id).state for job in jobs} == {"processing"}
    # Two further versions of two claimed jobs: written together while the rows match...
    beat = [
        (job, replace(job, updated_at=clock.now() + timedelta(seconds=1))) for job in claimed[:2]
    ]
    with app.store.transaction() as tx:
        assert tx.save_jobs(beat)
    # ...and refused when one row no longer matches its "before" copy (it finished).
    report(app, claimed[3], "succeed")
    stale = [(job, replace(job, attempts=9)) for job in claimed[2:]]
    with app.store.transaction() as tx:
        assert not tx.save_jobs(stale)


def test_a_worker_fenced_off_mid_job_records_nothing_and_goes_on(
    app: Conveyor, clock: ManualClock
) -> None:
    """LEASE-007 in the worker loop: the outcome of a job whose lease was lost while it ran is
    refused (it rides with the next claim, which still happens), and the job runs again."""
    runs: list[int] = []

    def task(n: int) -> None:
        runs.append(n)
        if n == 0 and runs.count(0) == 1:
            clock.advance(120)  # past the lease: another worker rescues the job meanwhile
            assert [job.id for job in app.rescue_expired()] == [first.id]
            clock.advance(3600)  # past the retry delay, so the rescued job is due again

    app.register("task", task, retry="progressive")
    first = app.publish("task", {"n": 0})
    app.publish("task", {"n": 1})
    options: dict[str, Any] = {
        "lease": timedelta(seconds=60),
        "stop_when_empty": True,
        "handle_signals": False,
    }
    stats = app.worker(**options).run()
    assert sorted(runs) == [0, 1]
    # A draining worker runs the jobs due when it started; the rescued job, due again only
    # after that, runs in the next run.
    assert app.get(first.id).state == "temporarily_failed"
    again = app.worker(**options).run()
    assert sorted(runs) == [0, 0, 1]
    got = app.get(first.id)
    assert got.state == "finished"
    assert got.attempts == 2
    assert [error.kind for error in got.errors] == ["lease_expired"]
    assert (stats.jobs, again.jobs) == (2, 1)


def _commits_of_a_worker_run(app: Conveyor, jobs: int, **options: Any) -> int:
    """Commits seen by the engine while a worker runs ``jobs`` no-op jobs to the end."""
    engine = getattr(app.store, "engine", None)
    if engine is None:
        pytest.skip("the memory store has no database commits")
    app.register("task", lambda: None)
    published = [app.publish("task") for _ in range(jobs)]
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    sql_events.listen(engine, "commit", count)
    try:
        stats = app.worker(stop_when_empty=True, handle_signals=False, **options).run()
    finally:
        sql_events.remove(engine, "commit", count)
    assert stats.jobs == jobs
    assert {app.get(job.id).state for job in published} == {"finished"}
    return len(commits)


def test_a_worker_commits_each_outcome_with_its_next_claim(app: Conveyor) -> None:
    """A job costs one commit: its outcome rides with the next claim (and the last one with
    the claim that finds nothing). Observed through the engine's commit events."""
    # The first claim, 12 outcome-and-claim transactions, and the rescue pass: not 2 per job.
    assert _commits_of_a_worker_run(app, 12) <= 12 + 2


def test_a_batch_s_outcomes_are_committed_together_with_the_next_claim(app: Conveyor) -> None:
    """batch_size 4: a batch costs one commit, however many jobs it holds."""
    # The first claim, 3 outcomes-and-claim transactions, and the rescue pass.
    assert _commits_of_a_worker_run(app, 12, batch_size=4, record_delay=60) <= 3 + 2


def test_outcomes_waiting_in_a_batch_keep_their_leases_alive(app: Conveyor) -> None:
    """A finished job whose outcome waits for the rest of its batch is still heart-beaten,
    so a long job after it cannot let its lease lapse (which would run it again)."""
    seen: dict[str, object] = {}

    def slow(first_id: str) -> None:
        seen["first_state"] = app.get(first_id).state
        seen["first_held"] = first_id in worker.runner.heartbeat._held

    app.register("quick", lambda: None)
    app.register("slow", slow)
    first = app.publish("quick")
    app.publish("slow", {"first_id": first.id})
    worker: Any = app.worker(
        batch_size=2, record_delay=60, stop_when_empty=True, handle_signals=False
    )
    stats = worker.run()
    assert stats.jobs == 2
    assert seen == {"first_state": "processing", "first_held": True}
    assert app.get(first.id).state == "finished"
    assert worker.runner.heartbeat._held == {}


def test_record_delay_0_records_each_job_before_the_next_one_starts(app: Conveyor) -> None:
    seen: list[str] = []

    def second(first_id: str) -> None:
        seen.append(app.get(first_id).state)

    app.register("first", lambda: None)
    app.register("second", second)
    first = app.publish("first")
    app.publish("second", {"first_id": first.id})
    app.worker(batch_size=2, record_delay=0, stop_when_empty=True, handle_signals=False).run()
    assert seen == ["finished"]


def test_outcomes_that_cannot_be_recorded_at_stop_stop_being_heart_beaten(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the last outcomes cannot be written when the worker stops, their jobs must be left
    to lapse and be rescued: the heartbeat thread lets go of them."""
    worker: Any = app.worker(handle_signals=False)
    app.register("task", worker.stop)  # its outcome is still pending at stop
    app.publish("task")
    claims = 0
    claim = worker.source.claim

    def first_claim_only(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        if claims > 1:
            raise RuntimeError("the database is gone for good")
        return claim(*args, **kwargs)

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database is gone for good")

    monkeypatch.setattr(worker.source, "claim", first_claim_only)
    monkeypatch.setattr(worker.runner, "record", unavailable)
    worker.run()
    assert claims == 2  # the claim, then the attempt to record the outcome at stop
    assert worker.runner.heartbeat._held == {}


def test_a_heartbeat_that_meets_an_unavailable_database_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the fault suite (SQLite on a full disk): a transient database error in a
    heartbeat was logged at ERROR with a traceback; it is a one-line warning, like the
    worker's own "database unavailable" lines."""
    import sqlite3
    import threading

    from sqlalchemy.exc import OperationalError

    from conveyor.heartbeat import Heartbeat

    failed = threading.Event()

    def beat(job_id: str, token: int, lease_ms: int) -> None:
        failed.set()
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    heartbeat = Heartbeat(beat)
    with caplog.at_level("WARNING", logger="conveyor"):
        heartbeat.hold("1", 1, 150)
        assert failed.wait(5)
        heartbeat.close()
    records = [r for r in caplog.records if "heartbeat for job 1" in r.getMessage()]
    assert records
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in records)
    assert "database or disk is full" in records[0].getMessage()
