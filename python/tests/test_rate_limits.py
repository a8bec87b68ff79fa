"""Rate limits (spec.md#rate-limits): at most R claims of a key per window of a period, kept by
the store at claim across every worker; on every backend, on the ManualClock.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, InvalidRequest, ManualClock

from .conftest import AppFactory

BOUND = 60.0


def test_a_job_keeps_its_rate_limit(app: Conveyor) -> None:
    """RATE-001: given at publish, else the handler's (the key a function of the payload)."""
    app.register(
        "call",
        lambda region: None,
        rate_key=lambda payload: f"api:{payload['region']}",
        rate_limit=100,
        rate_period=timedelta(minutes=1),
    )
    job = app.get(app.publish("call", {"region": "eu"}).id)
    assert (job.rate_key, job.rate_limit, job.rate_period_ms) == ("api:eu", 100, 60_000)
    assert job.to_dict()["rate_period_ms"] == 60_000
    app.register("plain", lambda: None)
    with pytest.raises(InvalidRequest, match="go together"):
        app.publish("plain", rate_key="k", rate_limit=1)
    with pytest.raises(InvalidRequest, match="31 days"):
        app.publish("plain", rate_key="k", rate_limit=1, rate_period=0)
    with pytest.raises(ConfigurationError, match="go together"):
        app.register("half", lambda: None, rate_limit=2)
    assert "rate_key" not in app.publish("plain").to_dict()


def test_a_full_window_passes_jobs_over_until_the_next(app: Conveyor, clock: ManualClock) -> None:
    """RATE-002/003: two claims per minute; claims of failed attempts count too."""
    clock.set(datetime(2026, 1, 10, 10, 0, 30, tzinfo=UTC))
    app.register("call", lambda: None)
    options: dict[str, Any] = {"rate_key": "api", "rate_limit": 2, "rate_period": 60}
    limited = [app.publish("call", **options) for _ in range(4)]
    free = app.publish("call")
    first = app.claim("w1", limit=10)
    assert [job.id for job in first] == [limited[0].id, limited[1].id, free.id]
    assert app.claim("w1", limit=10) == []
    failed = first[0]
    assert failed.lease is not None
    app.report(
        failed.id,
        "fail_temporarily",
        {
            "lease_token": failed.lease.token,
            "retry_after_ms": 0,
            "error": {"kind": "temporary", "message": "x"},
        },
    )
    assert app.claim("w1", limit=10) == []  # its retry waits for the next window
    clock.set(datetime(2026, 1, 10, 10, 1, 0, tzinfo=UTC))  # the next window starts
    assert [job.id for job in app.claim("w1", limit=10)] == [failed.id, limited[2].id]


def test_workers_never_start_more_than_the_rate(
    make_app: AppFactory, backend: str, clock: ManualClock
) -> None:
    """RATE-002 under concurrent claims: three apps, four slots each, 5 starts per minute; on
    a clock that stands still only 5 of 12 jobs ever start, then 5 more in the next minute."""
    clock.set(datetime(2026, 1, 10, 10, 0, 0, tzinfo=UTC))
    rate, total = 5, 12
    lock = threading.Lock()
    started: list[int] = []

    def call(n: int) -> None:
        with lock:
            started.append(n)

    first = make_app()
    apps = [first] + [
        Conveyor(store=first.store, clock=clock) if backend == "memory" else make_app()
        for _ in range(2)
    ]
    for each in apps:
        each.register("call", call, rate_key="api", rate_limit=rate, rate_period=60)
    for n in range(total):
        first.publish("call", {"n": n})

    def run_until_idle() -> None:
        idle = [threading.Event() for _ in apps]
        workers: list[Any] = [
            each.worker(concurrency=4, handle_signals=False, idle_delay=0.02, on_idle=flag.set)
            for each, flag in zip(apps, idle, strict=True)
        ]
        threads = [threading.Thread(target=worker.run) for worker in workers]
        for thread in threads:
            thread.start()
        try:
            for flag in idle:
                assert flag.wait(BOUND), "a worker never went idle"
        finally:
            for worker in workers:
                worker.stop()
            for thread in threads:
                thread.join(BOUND)

    run_until_idle()
    assert len(started) == rate
    clock.advance(timedelta(seconds=60))
    if first.broker is not None:  # passed over, their messages are gone: the repair loop's
        first.repair(stale_after=timedelta(0))
    run_until_idle()
    assert len(started) == 2 * rate
    states = sorted(job.state for job in first.jobs(limit=100))
    assert states.count("finished") == 2 * rate
    assert states.count("ready") == total - 2 * rate
