"""Job timeouts (spec.md#timeouts): stored at publish, enforced by workers and direct runs.

Handlers block on events that the test releases after its assertions; no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, InvalidRequest

BOUND = 20.0
SHORT = 0.05  # seconds: the timeout under test


def test_a_job_keeps_its_timeout(app: Conveyor) -> None:
    """TIMEOUT-001: given at publish, else the handler's, else none; stored and read back."""
    app.register("plain", lambda: None)
    app.register("bounded", lambda: None, timeout=timedelta(seconds=30))
    assert app.publish("plain").timeout_ms is None
    assert app.get(app.publish("plain", timeout=2.5).id).timeout_ms == 2500
    assert app.get(app.publish("bounded").id).timeout_ms == 30_000
    assert app.get(app.publish("bounded", timeout=1).id).timeout_ms == 1000
    assert app.get(app.publish("bounded").id).to_dict()["timeout_ms"] == 30_000
    assert "timeout_ms" not in app.publish("plain").to_dict()


@pytest.mark.parametrize("bad", [0, -1, timedelta(days=8), float("nan"), "10", True])
def test_a_timeout_out_of_range_is_refused(app: Conveyor, bad: Any) -> None:
    app.register("plain", lambda: None)
    with pytest.raises(InvalidRequest, match="timeout"):
        app.publish("plain", timeout=bad)
    assert app.jobs() == []


def test_a_handler_timeout_out_of_range_is_a_configuration_error(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="timeout of handler 'slow'"):
        app.register("slow", lambda: None, timeout=0)


def test_a_sync_attempt_that_runs_too_long_is_a_temporary_timeout(app: Conveyor) -> None:
    """TIMEOUT-002/003: the worker records the timeout, stops the lease's heartbeat, keeps the
    slot while the thread runs on, and discards what the thread returns later."""
    release = threading.Event()
    started = threading.Event()
    finished_late = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(BOUND)
        finished_late.set()

    recorded = threading.Event()
    seen: list[str] = []

    def on_job(job: Any) -> None:
        seen.append(job.state)
        recorded.set()

    app.register("stuck", stuck, timeout=SHORT)  # retried in a minute
    job = app.publish("stuck")
    worker: Any = app.worker(concurrency=2, handle_signals=False, on_job=on_job, idle_delay=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert recorded.wait(BOUND), "the timeout was not recorded"
        timed_out = app.get(job.id)
        assert timed_out.state == "temporarily_failed"
        assert timed_out.last_error is not None
        assert timed_out.last_error.kind == "timeout"
        assert "timeout of 0.05 s" in timed_out.last_error.message
        assert not worker.runner.heartbeat.holds(job.id)
        assert worker._free() == 1  # the stuck thread still holds its slot
    finally:
        release.set()
    assert finished_late.wait(BOUND)
    worker.stop()
    thread.join(BOUND)
    assert not thread.is_alive()
    assert seen == ["temporarily_failed"]  # the late return recorded nothing
    assert app.get(job.id).state == "temporarily_failed"


def test_an_async_attempt_that_runs_too_long_is_cancelled(app: Conveyor) -> None:
    cancelled = threading.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(BOUND)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app.register("stuck", stuck, timeout=SHORT)
    job = app.publish("stuck")
    stats = app.worker(stop_when_empty=True, handle_signals=False).run()
    assert stats.outcomes == {"temporarily_failed": 1}
    assert cancelled.is_set()
    failed = app.get(job.id)
    assert failed.last_error is not None
    assert failed.last_error.kind == "timeout"


def test_run_now_ends_an_attempt_at_its_timeout(app: Conveyor) -> None:
    release = threading.Event()

    async def slow_async() -> None:
        await asyncio.sleep(BOUND)

    app.register("slow_sync", lambda: release.wait(BOUND), timeout=SHORT)
    app.register("slow_async", slow_async, timeout=SHORT)
    try:
        for kind in ("slow_sync", "slow_async"):
            job = app.run_now(kind)
            assert job.state == "temporarily_failed", kind
            assert job.last_error is not None
            assert job.last_error.kind == "timeout", kind
    finally:
        release.set()


def test_a_timeout_in_the_last_attempt_fails_the_job_for_good(app: Conveyor) -> None:
    async def stuck() -> None:
        await asyncio.sleep(BOUND)

    app.register(
        "stuck",
        stuck,
        timeout=SHORT,
        retry={"backoff": "constant", "initial_delay_ms": 0, "max_delay_ms": 0, "max_attempts": 1},
    )
    job = app.run_now("stuck")
    assert job.state == "permanently_failed"
    assert job.last_error is not None
    assert job.last_error.kind == "timeout"


def test_a_sync_attempt_in_the_worker_s_own_thread_is_interrupted(app: Conveyor) -> None:
    """At concurrency 1 in the main thread a sync handler runs in the worker's thread; at its
    timeout it is interrupted (the exception unwinds it), not left running."""
    unwound = threading.Event()

    def stuck() -> None:
        try:
            threading.Event().wait(BOUND)  # interruptible, as blocking calls are
        finally:
            unwound.set()

    app.register("stuck", stuck, timeout=SHORT)
    job = app.publish("stuck")
    assert threading.current_thread() is threading.main_thread()
    stats = app.worker(stop_when_empty=True).run()
    assert stats.outcomes == {"temporarily_failed": 1}
    assert unwound.is_set()
    failed = app.get(job.id)
    assert failed.last_error is not None
    assert failed.last_error.kind == "timeout"
