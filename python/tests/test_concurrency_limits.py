"""Concurrency limits (spec.md#concurrency): at most N running jobs of a key, kept by the
store at claim across every worker; on every backend.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, InvalidRequest, ManualClock

from .conftest import AppFactory

BOUND = 60.0


def _token(job: Any) -> int:
    assert job.lease is not None
    return int(job.lease.token)


def test_a_job_keeps_its_concurrency_key_and_limit(app: Conveyor) -> None:
    """CONC-001: given at publish, else the handler's (a function of the payload allowed)."""
    app.register(
        "sync",
        lambda customer: None,
        concurrency_key=lambda payload: f"customer:{payload['customer']}",
        concurrency_limit=1,
    )
    app.register("plain", lambda: None)
    job = app.get(app.publish("sync", {"customer": 7}).id)
    assert (job.concurrency_key, job.concurrency_limit) == ("customer:7", 1)
    assert job.to_dict()["concurrency_key"] == "customer:7"
    given = app.publish("plain", concurrency_key="partner-api", concurrency_limit=5)
    assert (given.concurrency_key, given.concurrency_limit) == ("partner-api", 5)
    assert "concurrency_key" not in app.publish("plain").to_dict()
    with pytest.raises(InvalidRequest, match="go together"):
        app.publish("plain", concurrency_key="k")
    with pytest.raises(InvalidRequest):
        app.publish("plain", concurrency_key="k", concurrency_limit=0)
    with pytest.raises(ConfigurationError, match="go together"):
        app.register("half", lambda: None, concurrency_limit=2)


def test_a_claim_takes_only_free_slots_and_passes_over_the_rest(app: Conveyor) -> None:
    """CONC-002/003: two slots; the third job waits without holding back the unlimited one."""
    app.register("call", lambda: None)
    limited = [app.publish("call", concurrency_key="api", concurrency_limit=2) for _ in range(3)]
    free = app.publish("call")
    claimed = app.claim("w1", limit=10)
    assert [job.id for job in claimed] == [limited[0].id, limited[1].id, free.id]
    assert sorted(job.concurrency_slot for job in claimed[:2]) == [0, 1]
    assert app.claim("w2", limit=10) == []
    assert app.get(limited[2].id).state == "ready"
    app.report(claimed[1].id, "succeed", {"lease_token": _token(claimed[1])})
    (third,) = app.claim("w2", limit=10)
    assert (third.id, third.concurrency_slot) == (limited[2].id, 1)


def test_a_rescued_job_frees_its_slot(app: Conveyor, clock: ManualClock) -> None:
    app.register("call", lambda: None)
    first, second = (
        app.publish("call", concurrency_key="one", concurrency_limit=1) for _ in range(2)
    )
    (held,) = app.claim("w1", lease_ms=1000)
    assert held.id == first.id
    assert app.claim("w2") == []
    clock.advance(timedelta(seconds=2))
    app.rescue_expired()
    assert [job.id for job in app.claim("w2", limit=2)] == [second.id]


def test_workers_never_run_more_than_the_limit(
    make_app: AppFactory, backend: str, clock: ManualClock
) -> None:
    """CONC-002 under concurrent claims: three apps (processes' stores), four slots each, one
    key limited to 3; every start and end is recorded and the limit is never exceeded."""
    limit, total = 3, 18
    lock = threading.Lock()
    running: dict[str, int] = {"partner": 0}
    spans: list[tuple[float, float]] = []
    done = threading.Event()
    peak = [0]

    def call(n: int) -> None:
        with lock:
            running["partner"] += 1
            peak[0] = max(peak[0], running["partner"])
            started = time.monotonic()
        threading.Event().wait(0.02)  # holds its slot a moment, so that claims overlap
        with lock:
            running["partner"] -= 1
            spans.append((started, time.monotonic()))
            if len(spans) == total:
                done.set()

    first = make_app()
    apps = [first] + [
        Conveyor(store=first.store, clock=clock) if backend == "memory" else make_app()
        for _ in range(2)
    ]
    for each in apps:
        each.register("call", call, concurrency_key="partner", concurrency_limit=limit)
    for n in range(total):
        first.publish("call", {"n": n})
    workers: list[Any] = [
        each.worker(concurrency=4, handle_signals=False, idle_delay=0.02) for each in apps
    ]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        assert done.wait(BOUND), f"only {len(spans)} of {total} jobs ran"
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(BOUND)
    assert peak[0] <= limit
    overlaps = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert overlaps <= limit
    assert {job.state for job in first.jobs(limit=100)} == {"finished"}
