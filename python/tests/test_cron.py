"""Cron schedules (spec.md#cron): fire times with DST, one run per fire time across apps,
missed-run and overlap policies, on every backend; time is the ManualClock's.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, InvalidRequest, ManualClock
from conveyor.cron import fire_times, zone
from conveyor.handlers import JobContext

from .conftest import AppFactory


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def firsts(expression: str, tz: str, after: str, count: int) -> list[str]:
    found = fire_times(expression, zone(tz), at(after))
    return [next(found).strftime("%m-%d %H:%M") for _ in range(count)]


def test_fire_times_are_local_times_in_utc() -> None:
    """CRON-002: Europe/Paris is UTC+1 in winter, UTC+2 in summer."""
    assert firsts("0 9 * * 1-5", "Europe/Paris", "2026-01-02 09:00", 2) == [
        "01-05 08:00",  # Monday 09:00 CET
        "01-06 08:00",
    ]
    assert firsts("0 9 * * *", "Europe/Paris", "2026-07-01 00:00", 1) == ["07-01 07:00"]
    assert firsts("*/20 * * * *", "UTC", "2026-01-01 10:05", 3) == [
        "01-01 10:20",
        "01-01 10:40",
        "01-01 11:00",
    ]


def test_a_local_time_skipped_by_dst_fires_at_the_change() -> None:
    """CRON-002: 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00 UTC): 02:00, 02:30 and 03:00
    local make one fire time, the instant of the change."""
    assert firsts("*/30 1-3 * * *", "Europe/Paris", "2026-03-28 23:00", 4) == [
        "03-29 00:00",  # 01:00 CET
        "03-29 00:30",  # 01:30 CET
        "03-29 01:00",  # 02:00, 02:30 (skipped) and 03:00 CEST: one run
        "03-29 01:30",  # 03:30 CEST
    ]
    assert firsts("30 2 * * *", "Europe/Paris", "2026-03-28 12:00", 2) == [
        "03-29 01:00",
        "03-30 00:30",
    ]


def test_a_local_time_repeated_by_dst_fires_once() -> None:
    """CRON-002: 2026-10-25 03:00 CEST goes back to 02:00 CET; 02:30 occurs twice and fires at
    its first occurrence (00:30 UTC) only."""
    assert firsts("30 2 * * *", "Europe/Paris", "2026-10-24 12:00", 2) == [
        "10-25 00:30",
        "10-26 01:30",
    ]
    assert firsts("*/30 2 * * *", "Europe/Paris", "2026-10-24 23:00", 3) == [
        "10-25 00:00",
        "10-25 00:30",
        "10-26 01:00",
    ]


@pytest.mark.parametrize(
    ("expression", "tz", "problem"),
    [
        ("* * * *", "UTC", "five fields"),
        ("61 * * * *", "UTC", "not valid"),
        ("* * * * * *", "UTC", "five fields"),
        ("0 9 * * *", "Mars/Olympus", "IANA time zone"),
    ],
)
def test_a_bad_expression_or_zone_is_refused(expression: str, tz: str, problem: str) -> None:
    """CRON-001, checked at declaration, before any store is touched."""
    app = Conveyor("memory://")
    app.register("tick", lambda: None)
    with pytest.raises(InvalidRequest, match=problem):
        app.schedule("s", expression, "tick", tz=tz)


def test_bad_policies_and_duplicate_names_are_refused() -> None:
    app = Conveyor("memory://")
    app.register("tick", lambda: None)
    with pytest.raises(InvalidRequest, match="overlap='never' is not a policy"):
        app.schedule("s", "* * * * *", "tick", overlap="never")
    with pytest.raises(InvalidRequest, match="missed='all' is not a policy"):
        app.schedule("s", "* * * * *", "tick", missed="all")
    with pytest.raises(InvalidRequest, match="cannot take delay"):
        app.schedule("s", "* * * * *", "tick", delay=5)
    app.schedule("s", "* * * * *", "tick")
    with pytest.raises(ConfigurationError, match="already declared"):
        app.schedule("s", "0 * * * *", "tick")


def _twin(make_app: AppFactory, app: Conveyor, backend: str, clock: ManualClock) -> Conveyor:
    """Another process's app on the same store (memory: the same store object)."""
    if backend == "memory":
        return Conveyor(store=app.store, clock=clock)
    return make_app()


def _declare(app: Conveyor, **options: Any) -> None:
    app.register("report", lambda: None)
    app.schedule("nightly", "0 2 * * *", "report", tz="Europe/Paris", **options)


def test_each_fire_time_is_published_once_across_apps(
    make_app: AppFactory, backend: str, clock: ManualClock
) -> None:
    """CRON-003, CRON-005: four apps evaluate at once; one job, with the schedule's name and
    fire time in its metadata; evaluating again publishes nothing."""
    clock.set(at("2026-01-10 01:00:05"))  # 02:00:05 in Paris
    first = make_app()
    apps = [first] + [_twin(make_app, first, backend, clock) for _ in range(3)]
    for each in apps:
        _declare(each, tags=["nightly"])
    barrier = threading.Barrier(len(apps))
    results: list[Any] = [None] * len(apps)

    def evaluate(index: int) -> None:
        barrier.wait(10)
        results[index] = apps[index].run_schedules()

    threads = [threading.Thread(target=evaluate, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    published = [run for runs in results for run in runs]
    assert len(published) == 1
    jobs = first.jobs()
    assert len(jobs) == 1
    assert jobs[0].metadata == {"schedule": "nightly", "scheduled_for": "2026-01-10T01:00:00.000Z"}
    assert jobs[0].tags == ("nightly",)
    assert published[0].fire_at == at("2026-01-10 01:00")
    assert [each.run_schedules() for each in apps] == [[], [], [], []]
    fresh = _twin(make_app, first, backend, clock)  # a restart at the same instant
    _declare(fresh)
    assert fresh.run_schedules() == []
    assert len(first.jobs()) == 1


def test_a_missed_run_is_skipped_or_run_once_after_downtime(
    make_app: AppFactory, backend: str, clock: ManualClock
) -> None:
    """CRON-004: after a downtime over several fire times, `skip` publishes none of them and
    `run_once` publishes one, for the latest."""
    clock.set(at("2026-01-10 10:00:30"))
    app = make_app()
    app.register("tick", lambda: None)
    app.schedule("skipping", "0 * * * *", "tick")
    app.schedule("catching", "0 * * * *", "tick", missed="run_once")
    assert {run.name for run in app.run_schedules()} == {"skipping", "catching"}

    clock.set(at("2026-01-10 13:30:00"))  # down from 10:01 to 13:30
    later = _twin(make_app, app, backend, clock)
    later.register("tick", lambda: None)
    later.schedule("skipping", "0 * * * *", "tick")
    later.schedule("catching", "0 * * * *", "tick", missed="run_once")
    runs = later.run_schedules()
    assert [(run.name, run.fire_at) for run in runs] == [("catching", at("2026-01-10 13:00"))]
    clock.set(at("2026-01-10 14:00:01"))
    assert {run.name for run in later.run_schedules()} == {"skipping", "catching"}
    assert len(later.jobs()) == 5


def test_a_new_schedule_starts_with_its_next_fire_time(app: Conveyor, clock: ManualClock) -> None:
    """CRON-004: nothing recorded, and the latest fire time is late: no run, even run_once."""
    clock.set(at("2026-01-10 10:05:00"))
    app.register("tick", lambda: None)
    app.schedule("hourly", "0 * * * *", "tick", missed="run_once")
    assert app.run_schedules() == []
    clock.set(at("2026-01-10 11:00:59"))
    (run,) = app.run_schedules()
    assert run.fire_at == at("2026-01-10 11:00")


def test_overlap_skip_publishes_nothing_while_the_previous_run_is_unfinished(
    app: Conveyor, clock: ManualClock
) -> None:
    """CRON-005: the fire time is recorded as skipped; the next one runs again."""
    clock.set(at("2026-01-10 10:00:00"))
    app.register("tick", lambda: None)
    app.schedule("sync", "*/10 * * * *", "tick", overlap="skip")
    (first,) = app.run_schedules()
    assert first.job is not None
    (claimed,) = app.claim("w1")
    clock.set(at("2026-01-10 10:10:00"))
    (skipped,) = app.run_schedules()
    assert (skipped.fire_at, skipped.job) == (at("2026-01-10 10:10"), None)
    assert claimed.lease is not None
    app.report(claimed.id, "succeed", {"lease_token": claimed.lease.token})
    clock.set(at("2026-01-10 10:20:00"))
    (again,) = app.run_schedules()
    assert again.job is not None
    assert len(app.jobs()) == 2


def test_overlap_queue_runs_one_after_another(app: Conveyor, clock: ManualClock) -> None:
    """CRON-005: the runs share the serial group schedule:<name>."""
    clock.set(at("2026-01-10 10:00:00"))
    app.register("tick", lambda: None)
    app.schedule("sync", "*/10 * * * *", "tick", overlap="queue")
    app.run_schedules()
    (claimed,) = app.claim("w1")
    clock.set(at("2026-01-10 10:10:00"))
    (queued,) = app.run_schedules()
    assert queued.job is not None
    assert queued.job.serial_group == "schedule:sync"
    assert app.claim("w2") == []  # waits for the running one
    assert claimed.lease is not None
    app.report(claimed.id, "succeed", {"lease_token": claimed.lease.token})
    assert [job.id for job in app.claim("w2")] == [queued.job.id]


def test_a_dst_gap_run_happens_at_the_change(app: Conveyor, clock: ManualClock) -> None:
    """CRON-002 through the app: 02:30 Paris on the spring-forward night runs at 01:00 UTC."""
    app.register("report", lambda: None)
    clock.set(at("2026-03-29 00:59:00"))
    app.schedule("nightly", "30 2 * * *", "report", tz="Europe/Paris")
    assert app.run_schedules() == []
    clock.set(at("2026-03-29 01:00:00"))
    (run,) = app.run_schedules()
    assert run.fire_at == at("2026-03-29 01:00")


def test_workers_run_the_schedules_of_a_cron_handler(app: Conveyor, clock: ManualClock) -> None:
    """The decorator registers the handler and the schedule; process() evaluates schedules
    first (CRON-006) and runs the job, which reads its fire time from its metadata."""
    seen: list[Any] = []

    @app.cron("*/5 * * * *", name="cleanup", tz="UTC", queue="upkeep")
    def cleanup() -> str:
        seen.append("ran")
        return "cleaned"

    @app.handler("reader", pass_context=True)
    def reader(context: JobContext) -> None:
        seen.append(context.metadata["scheduled_for"])

    app.schedule("read", "*/5 * * * *", "reader")
    clock.set(at("2026-01-10 10:05:10"))
    stats = app.process()
    assert stats.outcomes == {"finished": 2}
    assert sorted(map(str, seen)) == ["2026-01-10T10:05:00.000Z", "ran"]
    (job,) = app.jobs(queue="upkeep")
    assert job.result == "cleaned"
    assert app.process().outcomes == {}  # nothing more is due at the same instant
    clock.advance(timedelta(minutes=5))
    assert app.process().outcomes == {"finished": 2}


def test_the_store_records_each_fire_time_once(app: Conveyor, clock: ManualClock) -> None:
    """CRON-003's uniqueness rule, whatever the interleaving: a second transaction recording
    the same (name, fire time) while the first is still open gets False once it commits."""
    store = app.store
    fire_at = at("2026-01-10 10:00")
    answers: list[bool] = []

    def second() -> None:
        with store.transaction() as tx:
            answers.append(tx.insert_schedule_run("s", fire_at, clock.now()))
        app.release_thread()

    with store.transaction() as tx:
        assert tx.insert_schedule_run("s", fire_at, clock.now())
        thread = threading.Thread(target=second)
        thread.start()
    thread.join(30)
    assert answers == [False]
    with store.transaction() as tx:
        assert tx.insert_schedule_run("s", fire_at + timedelta(minutes=1), clock.now())
        assert tx.insert_schedule_run("other", fire_at, clock.now())
        last = tx.last_schedule_run("s")
        assert last is not None
        assert (last.fire_at, last.job_id) == (fire_at + timedelta(minutes=1), None)
        assert tx.last_schedule_run("s", with_job=True) is None
