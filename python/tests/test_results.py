"""Results, progress and waiting for a job (spec.md#results, spec.md#progress), on every backend.

Handlers block on events the test sets; waits are bounded; no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import (
    Call,
    Conveyor,
    InvalidRequest,
    JobNotFound,
    ManualClock,
    PayloadTooLarge,
    StaleLease,
)
from conveyor.errors import WaitTimeout
from conveyor.handlers import JobContext
from conveyor.results import MAX_RESULT_BYTES, check_result

BOUND = 20.0


def test_the_last_request_s_return_value_is_the_job_s_result(app: Conveyor) -> None:
    """RESULT-001: stored when the success finishes the job; typed values through the codec."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    app.register("report", lambda n: {"rows": n, "at": moment, "raw": b"\x00\x01"})
    job = app.publish("report", {"n": 3})
    app.process()
    done = app.get(job.id)
    assert done.state == "finished"
    assert done.result == {
        "rows": 3,
        "at": {"$datetime": "2026-01-02T03:04:05+00:00"},
        "raw": {"$bytes": "AAE="},
    }
    assert done.result_value == {"rows": 3, "at": moment, "raw": b"\x00\x01"}
    assert done.to_dict()["result"] == done.result


def test_a_handler_that_returns_none_stores_no_result(app: Conveyor) -> None:
    app.register("quiet", lambda: None)
    job = app.publish("quiet")
    app.process()
    done = app.get(job.id)
    assert done.state == "finished"
    assert done.result is None
    assert "result" not in done.to_dict()


def test_only_the_last_request_s_value_is_kept(app: Conveyor) -> None:
    app.register("first", lambda: "not kept")
    app.register("second", lambda: "kept")
    job = app.publish_job([Call("first"), Call("second")])
    app.process()
    assert app.get(job.id).result == "kept"


def test_an_async_handler_s_result_is_stored(app: Conveyor) -> None:
    async def compute(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    app.register("compute", compute)
    job = app.publish("compute", {"n": 21})
    app.process()
    assert app.get(job.id).result == 42


def test_a_result_above_64_kib_fails_the_job_naming_the_limit(app: Conveyor) -> None:
    """RESULT-002: a worker reports a permanent error in place of a result it cannot store."""
    app.register("big", lambda: "x" * MAX_RESULT_BYTES)  # 2 bytes of quotes too many
    app.register("fits", lambda: "x" * (MAX_RESULT_BYTES - 2))
    big = app.publish("big")
    fits = app.publish("fits")
    app.process()
    failed = app.get(big.id)
    assert failed.state == "permanently_failed"
    assert failed.result is None
    assert failed.last_error is not None
    assert "65536 byte limit of a result" in failed.last_error.message
    assert len(app.get(fits.id).result) == MAX_RESULT_BYTES - 2


def test_a_result_the_codec_cannot_carry_fails_the_job(app: Conveyor) -> None:
    app.register("odd", object)
    job = app.publish("odd")
    app.process()
    failed = app.get(job.id)
    assert failed.state == "permanently_failed"
    assert failed.last_error is not None
    assert "result cannot be stored" in failed.last_error.message


def test_a_report_refuses_a_result_before_the_last_request(app: Conveyor) -> None:
    """RESULT-001: the success of a request that leaves others to run carries none."""
    app.register("a", lambda: None)
    job = app.publish_job([Call("a"), Call("a")])
    (claimed,) = app.claim("w1")
    assert claimed.lease is not None
    token = claimed.lease.token
    with pytest.raises(InvalidRequest, match="RESULT-001"):
        app.report(job.id, "succeed", {"lease_token": token}, update={"result": 1})
    assert app.get(job.id).state == "processing"
    app.report(job.id, "succeed", {"lease_token": token})
    done = app.report(job.id, "succeed", {"lease_token": token}, update={"result": 2})
    assert (done.state, done.result) == ("finished", 2)


def test_a_result_expires_after_its_time_to_live(app: Conveyor, clock: ManualClock) -> None:
    """RESULT-003: publish option, else the handler's; read as null from expiry on."""
    app.register("short", lambda: "v", result_ttl=timedelta(minutes=1))
    app.register("kept", lambda: "v")
    short = app.publish("short")
    overridden = app.publish("short", result_ttl=3600)
    kept = app.publish("kept")
    assert (short.result_ttl_ms, overridden.result_ttl_ms, kept.result_ttl_ms) == (
        60_000,
        3_600_000,
        None,
    )
    app.process()
    finished = app.get(short.id)
    assert finished.finished_at is not None
    assert finished.result_expires_at == finished.finished_at + timedelta(minutes=1)
    assert finished.to_dict()["result_ttl_ms"] == 60_000
    clock.advance(timedelta(seconds=59))
    assert app.get(short.id).result == "v"
    clock.advance(timedelta(seconds=1))
    assert app.get(short.id).result is None
    assert [j.result for j in app.jobs()] == [None, "v", "v"]
    assert app.get(kept.id).result_expires_at is None


@pytest.mark.parametrize("bad", [0, -1, timedelta(days=367), float("inf"), "60", True])
def test_a_result_ttl_out_of_range_is_refused(bad: Any) -> None:
    """Checked before any store is touched: one backend is enough."""
    app = Conveyor("memory://")
    app.register("plain", lambda: None)
    with pytest.raises(InvalidRequest, match="result_ttl"):
        app.publish("plain", result_ttl=bad)
    assert app.jobs() == []


def test_a_handler_reports_progress_that_outlives_the_attempt(app: Conveyor) -> None:
    """PROGRESS-001/002: stored under the lease, kept when the job ends, updated_at untouched."""
    seen: list[Any] = []

    def long(context: JobContext) -> None:
        before = app.get(context.job_id)
        context.progress(40, "copied 4 of 10")
        during = app.get(context.job_id)
        seen.append((before.updated_at == during.updated_at, during.state, during.progress))

    app.register("long", long, pass_context=True)
    job = app.publish("long")
    app.process()
    ((unchanged, state, progress),) = seen
    assert unchanged
    assert state == "processing"
    assert progress is not None
    assert (progress["percent"], progress["message"]) == (40, "copied 4 of 10")
    done = app.get(job.id)
    assert done.state == "finished"
    assert done.progress == progress
    assert done.to_dict()["progress"]["message"] == "copied 4 of 10"


def test_a_recurring_copy_starts_without_the_result_and_progress(app: Conveyor) -> None:
    """REC-002 with RESULT-001 and PROGRESS-002: the copy has not run, so it has neither."""

    def tick(context: JobContext) -> dict[str, int]:
        context.progress(50, "half way")
        return {"sent": 3}

    app.register("tick", tick, pass_context=True)
    job = app.publish("tick", recurring=60)
    app.process()
    done, copy = app.jobs(limit=10)
    assert (done.id, done.result, done.progress is not None) == (job.id, {"sent": 3}, True)
    assert (copy.state, copy.result, copy.progress) == ("ready", None, None)
    assert app.get(copy.id).to_dict().get("result") is None


def test_an_async_handler_reports_progress(app: Conveyor) -> None:
    async def long(context: JobContext) -> None:
        await context.progress_async(message="started")
        await context.progress_async(100)

    app.register("long", long, pass_context=True)
    job = app.publish("long")
    app.process()
    progress = app.get(job.id).progress
    assert progress is not None
    assert (progress["percent"], progress["message"]) == (100, None)


def test_progress_under_a_stale_lease_or_for_no_job_is_refused(app: Conveyor) -> None:
    app.register("a", lambda: None)
    job = app.publish("a")
    with pytest.raises(StaleLease):
        app.report_progress(job.id, 1, 10)  # not claimed yet
    (claimed,) = app.claim("w1")
    assert claimed.lease is not None
    with pytest.raises(StaleLease):
        app.report_progress(job.id, claimed.lease.token + 1, 10)
    with pytest.raises(JobNotFound):
        app.report_progress("999999", 1, 10)
    for percent, message in ((101, None), (-1, None), (float("nan"), None), (None, "x" * 1025)):
        with pytest.raises(InvalidRequest):
            app.report_progress(job.id, claimed.lease.token, percent, message)
    assert app.get(job.id).progress is None
    app.report_progress(job.id, claimed.lease.token, 12.5)
    stored = app.get(job.id).progress
    assert stored is not None
    assert stored["percent"] == 12.5


def test_wait_returns_the_finished_job_with_its_result(app: Conveyor, backend: str) -> None:
    """RESULT-004: PostgreSQL (NOTIFY) and memory wake the caller without polling; the poll
    interval is set far beyond the bound there, so only the wake-up can pass the test."""
    release = threading.Event()

    def gated() -> str:
        assert release.wait(BOUND)
        return "done"

    app.register("gated", gated)
    job = app.publish("gated")
    worker: Any = app.worker(handle_signals=False, idle_delay=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    poll = 60.0 if backend in ("postgresql", "memory") else 0.05
    try:
        threading.Timer(0.1, release.set).start()
        started = time.monotonic()
        done = app.wait(job.id, timeout=BOUND, poll=poll)
        assert time.monotonic() - started < BOUND
        assert (done.state, done.result) == ("finished", "done")
    finally:
        release.set()
        worker.stop()
        thread.join(BOUND)
    assert not thread.is_alive()


def test_wait_gives_up_after_its_timeout(app: Conveyor) -> None:
    app.register("never", lambda: None)
    job = app.publish("never")
    with pytest.raises(WaitTimeout, match=f"job {job.id} is still ready"):
        app.wait(job.id, timeout=0.05, poll=0.01)
    with pytest.raises(JobNotFound):
        app.wait("999999", timeout=0.05)


def test_wait_returns_at_once_for_a_job_that_already_ended(app: Conveyor) -> None:
    app.register("a", lambda: 1)
    job = app.publish("a")
    app.cancel(job.id)
    assert app.wait(job.id, timeout=timedelta(seconds=1)).state == "cancelled"
    with pytest.raises(PayloadTooLarge):
        check_result("y" * MAX_RESULT_BYTES)


def test_wait_is_woken_by_a_job_that_ends_in_a_batch_of_outcomes(
    app: Conveyor, backend: str
) -> None:
    """RESULT-004 when the job's end is written with others (one set-based write carrying the
    notice on PostgreSQL): every waiter wakes, without polling (the poll is 60 s)."""
    if backend not in ("postgresql", "memory"):
        pytest.skip("only PostgreSQL and memory wake waiters without polling")
    app.register("quick", lambda n: n)
    jobs = app.publish_many("quick", range(40))
    woken: dict[str, Any] = {}

    def wait_for(job_id: str) -> None:
        woken[job_id] = app.wait(job_id, timeout=BOUND, poll=60.0)

    waiters = [threading.Thread(target=wait_for, args=(job.id,)) for job in jobs[-3:]]
    for waiter in waiters:
        waiter.start()
    stats = app.worker(stop_when_empty=True, handle_signals=False).run()
    for waiter in waiters:
        waiter.join(BOUND)
    assert stats.jobs == 40
    assert [woken[job.id].result for job in jobs[-3:]] == [37, 38, 39]


# -- PostgreSQL: ends are announced only while somebody watches -------------------------------


def _ends_channel(app: Conveyor, backend: str) -> tuple[str, str]:
    """The app's ends channel and a psycopg URL of its database (PostgreSQL only: the
    test is skipped elsewhere)."""
    if backend != "postgresql":
        pytest.skip("the ends channel is PostgreSQL's")
    from conveyor.store.sql.dialects import ended_channel

    store: Any = app.store
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return ended_channel(store.tables.jobs.name), url


def _notices_until_sentinel(listener: Any, channel: str, url: str) -> list[str]:
    """What ``listener`` (LISTENing on ``channel``) received before a sentinel sent now:
    notifications arrive in commit order, so this reads everything committed before."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, 'sentinel')", (channel,))
    payloads: list[str] = []
    for notice in listener.notifies(timeout=BOUND):
        if notice.payload == "sentinel":
            return payloads
        payloads.append(notice.payload)
    raise AssertionError("the sentinel never came")


def test_an_end_is_announced_only_while_somebody_watches(app: Conveyor, backend: str) -> None:
    """A NOTIFY serialises the commits of every notifying transaction (publishes too): a
    job's end is announced only while a waiter watches the ends channel (its shared lock,
    taken after its LISTEN), in each way ends are written: a worker's outcome alone or in a
    batch (the set-based write carries the notice), and a job cancelled (its own write)."""
    import psycopg

    channel, url = _ends_channel(app, backend)
    app.register("quick", lambda n: n)
    with psycopg.connect(url, autocommit=True) as listener:  # listens, does not watch
        listener.execute(f'LISTEN "{channel}"')
        unwatched = [app.publish("quick", 0), *app.publish_many("quick", [1, 2])]
        app.process()
        cancelled = app.cancel(app.publish("quick", 6).id)
        assert {app.get(job.id).state for job in unwatched} == {"finished"}
        assert cancelled.state == "cancelled"
        assert _notices_until_sentinel(listener, channel, url) == []

        watched = [app.publish("quick", 3), *app.publish_many("quick", [4, 5])]
        with app.store.watch_end(watched[0].id):
            app.process()
            watched.append(app.cancel(app.publish("quick", 7).id))
        announced = ",".join(_notices_until_sentinel(listener, channel, url)).split(",")
        assert sorted(announced) == sorted(job.id for job in watched)


def test_a_watch_waits_for_an_end_written_unannounced_to_commit(
    app: Conveyor, backend: str
) -> None:
    """A transaction that found nobody watching holds the watchers' lock to its commit: a
    watch that starts meanwhile waits, so the caller's first read sees the end it wrote."""
    import psycopg

    from conveyor.store.sql.dialects import ends_unwatched_sql

    channel, url = _ends_channel(app, backend)
    store: Any = app.store
    unwatched = f"SELECT {ends_unwatched_sql('%s')}"  # what a write that ends jobs asks
    watching = threading.Event()
    with psycopg.connect(url) as writer, psycopg.connect(url, autocommit=True) as monitor:
        (taken,) = writer.execute(unwatched, (channel,)).fetchone()
        assert taken  # nobody watches: an end written now would not be announced

        def watch() -> None:
            with store.watch_end("1"):
                watching.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + BOUND
        while monitor.execute(waiting).fetchone() == (0,):  # until the watch waits for it
            assert time.monotonic() < deadline, "the watch never asked for the lock"
        assert not watching.is_set()
        writer.commit()
        watcher.join(BOUND)
        assert watching.is_set()
        # and while it watched, a writer could not take the lock: it announces
        with store.watch_end("1"):
            (taken,) = writer.execute(unwatched, (channel,)).fetchone()
            assert not taken
        writer.rollback()


def test_a_wait_blocked_by_an_open_transaction_that_ended_jobs_polls_and_names_it(
    app: Conveyor, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller's transaction that ended a job and stays open holds the watchers' lock: a
    wait may not block on it past its own timeout (before, every wait took the watch's 5 s
    lock timeout first), and the warning names the session, so the operator can find it."""
    import psycopg

    from conveyor.store.sql.dialects import EndWatch, ends_unwatched_sql

    channel, url = _ends_channel(app, backend)
    app.register("quick", lambda n: n)
    job = app.publish("quick", 1)
    app.process()
    holder = "conveyor-test-open-transaction"
    with psycopg.connect(url, application_name=holder) as writer:
        (taken,) = writer.execute(f"SELECT {ends_unwatched_sql('%s')}", (channel,)).fetchone()
        assert taken  # as a transaction that ended jobs while nobody watched
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="conveyor.store"):
            waited = app.wait(job.id, timeout=0.5)
        elapsed = time.monotonic() - started
        with pytest.raises(WaitTimeout):  # and a job still running times out on time
            app.wait(app.publish("quick", 2).id, timeout=0.5)
        timed_out_after = time.monotonic() - started - elapsed
        writer.rollback()
    assert waited.state == "finished"
    assert elapsed < EndWatch.LOCK_TIMEOUT
    assert timed_out_after < EndWatch.LOCK_TIMEOUT
    warnings = [r.getMessage() for r in caplog.records if r.name == "conveyor.store"]
    assert any(holder in message and "idle in transaction" in message for message in warnings)
