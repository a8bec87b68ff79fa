"""The worker runtime: many jobs at once, async handlers, fairness, rescue timing, stopping.

Waits are bounded waits on conditions (events, barriers), never sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import Call, Conveyor, ManualClock, SystemClock, Waiting

from .conftest import TEST_PREFIX, AppFactory, backend_url, require_service, wipe

BOUND = 20.0  # seconds any wait below may take at most before the test fails


def run_in_thread(worker: Any) -> threading.Thread:
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    return thread


def stopped(worker: Any, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(BOUND)
    assert not thread.is_alive(), "the worker did not stop"


# -- async handlers ---------------------------------------------------------------------------


def test_an_async_handler_runs_in_process_run_now_and_execute(app: Conveyor) -> None:
    """An ``async def`` handler's body runs (it was once recorded finished without running)."""
    ran: list[int] = []

    async def fetch(n: int) -> None:
        await asyncio.sleep(0)
        ran.append(n)

    app.register("fetch", fetch)
    app.publish("fetch", {"n": 1})
    assert app.process().outcomes == {"finished": 1}
    assert app.run_now("fetch", {"n": 2}).state == "finished"
    assert app.execute(app.publish("fetch", {"n": 3}).id).state == "finished"
    assert ran == [1, 2, 3]


def test_an_async_handler_s_errors_are_outcomes(app: Conveyor) -> None:
    async def wait_a_bit() -> None:
        raise Waiting(delay=5)

    async def broken() -> None:
        raise ValueError("no")

    app.register("wait_a_bit", wait_a_bit)
    app.register("broken", broken)
    assert app.run_now("wait_a_bit").state == "waiting"
    failed = app.run_now("broken")
    assert failed.state == "temporarily_failed"
    assert failed.last_error is not None
    assert failed.last_error.message == "no"


def test_a_callable_returning_a_coroutine_is_awaited(app: Conveyor) -> None:
    ran: list[str] = []

    class Client:
        async def __call__(self, name: str) -> None:
            ran.append(name)

    def deferred(name: str) -> Any:  # a plain function handing back a coroutine
        return Client()(name)

    app.register("client", Client())
    app.register("deferred", deferred)
    assert app.run_now("client", {"name": "a"}).state == "finished"
    assert app.run_now("deferred", {"name": "b"}).state == "finished"
    assert ran == ["a", "b"]


def test_run_now_leaves_no_threads_behind(tmp_path: Path) -> None:
    """One heartbeat and one event loop per app, joined by close(): 1,000 direct runs leave
    the thread count where it was."""
    app = Conveyor(f"sqlite:///{tmp_path / 'threads.db'}")
    app.register("sync", lambda: None)

    async def async_job() -> None:
        await asyncio.sleep(0)

    app.register("async_job", async_job)
    app.run_now("sync")
    app.run_now("async_job")
    settled = set(threading.enumerate())
    assert {t.name for t in settled} >= {"conveyor-heartbeat", "conveyor-async"}
    for n in range(1000):
        app.run_now("sync" if n % 2 else "async_job")
    assert not set(threading.enumerate()) - settled, "run_now started threads it left behind"
    ours = [app.heartbeat_thread._thread, app.loop._thread]
    app.close()
    assert all(t is not None and not t.is_alive() for t in ours), "close() left them running"


# -- many jobs at once ------------------------------------------------------------------------


def test_one_worker_runs_sync_and_async_jobs_at_once(app: Conveyor) -> None:
    """concurrency 8: eight jobs, half sync and half async, are all running at the same time
    (each waits until all eight have started)."""
    started = threading.Semaphore(0)
    all_in = threading.Event()
    running = 0
    peak = 0
    guard = threading.Lock()

    def enter() -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
            if running == 8:
                all_in.set()
        started.release()

    def leave() -> None:
        nonlocal running
        with guard:
            running -= 1

    def blocking() -> None:
        enter()
        assert all_in.wait(BOUND)
        leave()

    async def awaiting() -> None:
        enter()
        assert await asyncio.to_thread(all_in.wait, BOUND)
        leave()

    app.register("blocking", blocking)
    app.register("awaiting", awaiting)
    for n in range(8):
        app.publish("blocking" if n % 2 else "awaiting")
    stats = app.worker(concurrency=8, stop_when_empty=True, handle_signals=False).run()
    assert stats.outcomes == {"finished": 8}
    assert peak == 8


class _Occupancy:
    """Counts the jobs inside it at once, and the most it saw."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self._guard = threading.Lock()

    def __enter__(self) -> None:
        with self._guard:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *_: object) -> None:
        with self._guard:
            self.running -= 1


def test_concurrency_never_exceeds_its_slots(app: Conveyor) -> None:
    slots = _Occupancy()

    def work() -> None:
        with slots:
            pass

    app.register("work", work)
    with app.bulk():
        for _ in range(60):
            app.publish("work")
    stats = app.worker(
        concurrency=3, batch_size=10, stop_when_empty=True, handle_signals=False
    ).run()
    assert stats.jobs == 60
    assert 1 <= slots.peak <= 3


def test_slots_of_both_kinds_share_the_buffer_without_exceeding_the_concurrency(
    app: Conveyor,
) -> None:
    """A freed slot runs the next buffered job of its own kind; one of the other kind is left
    to the coordinating thread, and the two kinds together never exceed the slots."""
    slots = _Occupancy()

    def blocking() -> None:
        with slots:
            time.sleep(0.001)

    async def awaiting() -> None:
        with slots:
            await asyncio.sleep(0.001)

    app.register("blocking", blocking)
    app.register("awaiting", awaiting)
    with app.bulk():
        for n in range(60):
            app.publish("awaiting" if n % 3 else "blocking")
    stats = app.worker(
        concurrency=3, batch_size=12, stop_when_empty=True, handle_signals=False
    ).run()
    assert stats.outcomes == {"finished": 60}
    assert 1 <= slots.peak <= 3


def test_max_jobs_counts_jobs_not_claims(app: Conveyor) -> None:
    app.register("work", lambda: None)
    for _ in range(10):
        app.publish("work")
    stats = app.worker(concurrency=4, batch_size=4, max_jobs=6, handle_signals=False).run()
    assert stats.jobs == 6
    assert "processed 6 jobs" in stats.stop_reason
    assert sum(1 for job in app.jobs() if job.state == "ready") == 4


# -- fairness and draining -------------------------------------------------------------------


def test_a_job_waiting_without_delay_does_not_starve_the_others(app: Conveyor) -> None:
    """Waiting(delay=0) makes a job due again at once; the job published after it still runs
    next (the claim that records an outcome passes over the job it recorded)."""
    done: list[str] = []

    def patient() -> None:
        if "other" not in done:
            raise Waiting(delay=0)
        done.append("patient")

    app.register("patient", patient)
    app.register("other", lambda: done.append("other"))
    app.publish("patient")
    app.publish("other")
    app.process()
    assert done[0] == "other"


def test_process_returns_although_jobs_always_wait(tmp_path: Path) -> None:
    """process() runs the jobs due when it started: jobs that keep asking to wait without a
    delay (or retry without one) cannot keep it running for ever."""
    app = Conveyor(f"sqlite:///{tmp_path / 'drain.db'}")  # the real clock

    def never_ready() -> None:
        raise Waiting(delay=0)

    def failing() -> None:
        raise ValueError("down")

    app.register("never_ready", never_ready)
    app.register("failing", failing, retry="progressive")  # its first retry has no delay
    for _ in range(3):
        app.publish("never_ready")
        app.publish("failing")
    stats = app.process()
    assert stats.jobs >= 6
    assert {job.state for job in app.jobs()} <= {"waiting", "temporarily_failed"}
    app.close()


def test_a_consuming_worker_lets_older_jobs_go_before_one_due_again_at_once(
    app: Conveyor,
) -> None:
    order: list[str] = []

    def patient() -> None:
        order.append("patient")
        if "other" not in order:
            raise Waiting(delay=0)

    app.register("patient", patient)
    app.register("other", lambda: order.append("other"))
    app.publish("patient")
    app.publish("other")
    # Without the yield, the patient job is claimed again and again (it is first in order).
    app.worker(max_jobs=3, handle_signals=False).run()
    assert order == ["patient", "other", "patient"]


# -- rescue ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql"])
def test_a_dead_worker_s_job_is_rescued_when_its_lease_expires(
    backend: str, tmp_path: Path
) -> None:
    """The rescue runs as soon as the earliest lease expires, not on a fixed 30 s timer."""
    require_service(backend)
    app = Conveyor(backend_url(backend, tmp_path), table_prefix=f"{TEST_PREFIX}rescue_")
    wipe(app)
    done = threading.Event()
    app.register("work", done.set, retry="progressive")  # the first retry has no delay
    job = app.publish("work")
    assert app.claim("a-worker-that-died", lease_ms=300)[0].id == job.id
    worker = app.worker(idle_delay=60, handle_signals=False)  # rescue interval: 30 s
    thread = run_in_thread(worker)
    try:
        assert done.wait(BOUND), "the expired lease was not rescued"
    finally:
        stopped(worker, thread)
    assert worker.stats.rescued == 1
    assert app.get(job.id).attempts == 2
    app.close()


# -- stopping --------------------------------------------------------------------------------


def test_an_idle_worker_stops_at_once(local_backend: str, tmp_path: Path) -> None:
    app = Conveyor(backend_url(local_backend, tmp_path))
    idle = threading.Event()
    worker = app.worker(idle_delay=30, on_idle=idle.set, handle_signals=False)
    thread = run_in_thread(worker)
    assert idle.wait(BOUND)
    worker.stop()
    thread.join(2)  # well below the 30 s idle delay
    assert not thread.is_alive()
    app.close()


def test_jobs_still_running_after_the_grace_period_are_handed_back(app: Conveyor) -> None:
    """On stop, a job that does not finish within the grace period is handed back (waiting,
    due at once, its attempt refunded) so another worker takes it now; its late result is
    discarded."""
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(BOUND)

    app.register("stuck", stuck)
    job = app.publish("stuck")
    worker = app.worker(concurrency=2, grace_period=0.05, handle_signals=False)
    thread = run_in_thread(worker)
    try:
        assert started.wait(BOUND)
        worker.stop()
        thread.join(BOUND)
        assert not thread.is_alive()
    finally:
        release.set()
    handed_back = app.get(job.id)
    assert handed_back.state == "waiting"
    assert handed_back.attempts == 0
    assert handed_back.available_at <= app.now()
    assert app.process().outcomes == {"finished": 1}  # taken again at once


def test_jobs_that_finish_within_the_grace_period_are_recorded(app: Conveyor) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow() -> None:
        started.set()
        assert release.wait(BOUND)

    app.register("slow", slow)
    job = app.publish("slow")
    worker = app.worker(concurrency=2, grace_period=BOUND, handle_signals=False)
    thread = run_in_thread(worker)
    assert started.wait(BOUND)
    worker.stop()
    release.set()
    thread.join(BOUND)
    assert not thread.is_alive()
    assert app.get(job.id).state == "finished"


def test_hurry_hands_running_jobs_back_at_once(app: Conveyor) -> None:
    release = threading.Event()
    started = threading.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.to_thread(release.wait, BOUND)

    app.register("stuck", stuck)
    job = app.publish("stuck")
    worker = app.worker(grace_period=BOUND, handle_signals=False)
    thread = run_in_thread(worker)
    try:
        assert started.wait(BOUND)
        worker.stop()
        worker.hurry()
        thread.join(BOUND / 2)
        assert not thread.is_alive()
    finally:
        release.set()
    assert app.get(job.id).state == "waiting"


def test_worker_options_are_checked() -> None:
    app = Conveyor("memory://")
    from conveyor import ConfigurationError

    for bad in (
        {"concurrency": 0},
        {"batch_size": 0},
        {"grace_period": -1},
        {"rescue_interval": 0},
    ):
        with pytest.raises(ConfigurationError):
            app.worker(**bad)


def test_a_server_backend_shares_the_runtime(make_app: AppFactory) -> None:
    """The fixture-built app on every backend runs a mixed batch with concurrency."""
    app = make_app()
    seen: list[int] = []
    guard = threading.Lock()

    def sync_job(n: int) -> None:
        with guard:
            seen.append(n)

    async def async_job(n: int) -> None:
        with guard:
            seen.append(n)

    app.register("sync_job", sync_job)
    app.register("async_job", async_job)
    for n in range(20):
        app.publish("sync_job" if n % 2 else "async_job", {"n": n})
    stats = app.worker(concurrency=4, stop_when_empty=True, handle_signals=False).run()
    assert stats.outcomes == {"finished": 20}
    assert sorted(seen) == list(range(20))


def test_a_job_in_the_worker_s_own_thread_is_handed_back_after_the_grace_period(
    app: Conveyor,
) -> None:
    """At concurrency 1 in the main thread the job runs in the worker's thread: a stop's grace
    period still ends it (it is interrupted and handed back)."""
    started = threading.Event()
    unwound = threading.Event()

    def stuck() -> None:
        started.set()
        try:
            threading.Event().wait(BOUND)
        finally:
            unwound.set()

    app.register("stuck", stuck)
    job = app.publish("stuck")
    worker = app.worker(grace_period=0.05)
    stopper = threading.Thread(target=lambda: started.wait(BOUND) and worker.stop())
    stopper.start()
    assert threading.current_thread() is threading.main_thread()
    worker.run()
    stopper.join(BOUND)
    assert unwound.is_set()
    handed_back = app.get(job.id)
    assert handed_back.state == "waiting"
    assert handed_back.attempts == 0


def test_a_claimed_job_whose_lease_ran_out_in_the_buffer_is_not_started(tmp_path: Path) -> None:
    """A worker held up (here by a slow job ahead of it; in production a partition) must not
    start a claimed job whose lease ends before its first renewal: another worker may have
    taken it. It is handed back, and runs once.

    The first job moves the app's clock past most of the lease instead of sleeping through
    it: on a loaded machine a real lease this short could also lapse under the running job."""
    clock = ManualClock()
    app = Conveyor(backend_url("sqlite", tmp_path), table_prefix="rt_spent_", clock=clock)
    starts: list[str] = []

    def work(name: str, hold_ms: int = 0) -> None:
        starts.append(name)
        clock.advance(timedelta(milliseconds=hold_ms))  # longer than two thirds of the lease

    app.register("work", work)
    first = app.publish("work", {"name": "first", "hold_ms": 500})
    second = app.publish("work", {"name": "second"})
    worker = app.worker(
        batch_size=2,
        lease=timedelta(milliseconds=600),
        max_jobs=2,
        idle_delay=0.05,
        handle_signals=False,
    )
    stats = worker.run()  # both claimed at once; the second handed back, claimed again, run
    assert stats.outcomes == {"finished": 2, "waiting": 1}  # one handed back
    assert starts == ["first", "second"]
    assert app.get(first.id).attempts == 1
    assert app.get(second.id).state == "finished"
    assert app.get(second.id).attempts == 1  # handed back: the unstarted claim counts nothing
    app.close()


def test_a_worker_with_several_slots_starts_jobs_while_it_claims(tmp_path: Path) -> None:
    """With several slots the claim runs in a thread of its own: the buffered jobs keep
    starting while it waits for the database, instead of every slot idling until it returns."""
    app = Conveyor(backend_url("sqlite", tmp_path), table_prefix="rt_overlap_")
    claiming = threading.Event()
    lock = threading.Lock()
    ran: list[int] = []
    during: list[int] = []
    active = [0]

    def work(n: int) -> None:
        with lock:
            active[0] += 1
            if claiming.is_set():
                during.append(n)
        time.sleep(0.005)  # the job's own work
        with lock:
            active[0] -= 1
            ran.append(n)

    app.register("work", work)
    for n in range(40):
        app.publish("work", n)
    worker = app.worker(concurrency=4, batch_size=8, max_jobs=40, handle_signals=False)
    claim = worker.source.claim

    def slow_claim(limit: int, recorded: Any = (), due_by: Any = None) -> Any:
        claiming.set()
        try:
            # A claim that takes a while, as on a busy database: while jobs run, wait (at
            # most a second) for one more to start.
            deadline = time.monotonic() + 1.0
            while active[0] and not during and time.monotonic() < deadline:
                time.sleep(0.002)
            return claim(limit, recorded, due_by)
        finally:
            claiming.clear()

    worker.source.claim = slow_claim  # type: ignore[method-assign]
    stats = worker.run()
    assert stats.jobs == 40
    assert sorted(ran) == list(range(40))
    assert during, "no job started while the worker claimed"
    app.close()


def test_the_coordinator_sleeps_while_a_background_claim_is_in_flight(tmp_path: Path) -> None:
    """With several slots the claim runs in its own thread; meanwhile the coordinator waits for
    it (or a job's end) instead of turning its loop: spinning there took the GIL from the
    handler threads (over 100 turns per job here, a quarter of the throughput at concurrency
    32); a job's end or a claim's end wakes it, a few turns per job."""
    require_service("postgresql")
    app = Conveyor(backend_url("postgresql", tmp_path), table_prefix=f"{TEST_PREFIX}spin_")
    wipe(app)
    app.register("noop", lambda: None)
    app.publish_many("noop", [None] * 600)
    worker: Any = app.worker(concurrency=16, batch_size=100, max_jobs=600, handle_signals=False)
    turns = [0]
    turn = worker._turn

    def counted() -> None:
        turns[0] += 1
        turn()

    worker._turn = counted
    try:
        assert worker.run().jobs == 600
        assert turns[0] < 10 * 600, f"{turns[0]} turns of the loop for 600 jobs"
    finally:
        app.store.drop_schema()  # type: ignore[attr-defined]
        app.close()


def test_process_runs_the_work_its_own_outcomes_made_due(make_app: AppFactory) -> None:
    """process() claims every job due when it starts, and again once its outcomes made other
    jobs due: a batch's completion job, published by the last part's outcome, runs in the same
    call."""
    app = make_app(clock=SystemClock())  # real time: the completion is due after the start
    completed: list[str] = []
    app.register("part", lambda n: None)
    app.register("complete", lambda: completed.append("done"))
    with app.batch(Call("complete")) as batch:
        for n in range(3):
            app.publish("part", n, batch=batch)
    stats = app.process()
    assert completed == ["done"]
    assert stats.outcomes == {"finished": 4}
    assert {job.state for job in app.jobs()} == {"finished"}


def test_a_memory_reading_is_reused_within_its_age_and_read_again_after() -> None:
    """Workers with several slots reuse a recent reading (the read releases the interpreter
    lock); at concurrency 1 only a job shorter than a millisecond shares one."""
    from conveyor.execution import RecentReading, resident_memory

    reads = iter(range(1, 100))
    reading = RecentReading(lambda: next(reads))
    assert reading() == 1
    assert reading(max_age=3600) == 1  # reused: no read
    assert reading() == 2  # no age accepted: read again
    assert reading(max_age=1e-9) == 3  # older than accepted: read again

    first = resident_memory()
    grown = bytearray(64 * 1024 * 1024)  # touched: resident
    grown[::4096] = b"x" * len(grown[::4096])
    assert resident_memory() > first + 32 * 1024 * 1024
    del grown


def test_a_job_that_grows_the_process_shows_it_in_its_execution_record(app: Conveyor) -> None:
    """At concurrency 1 a job longer than the reading age gets readings of its own: the
    memory it holds at its end is in memory_after, and in memory_peak."""
    kept: list[bytearray] = []

    def grow() -> None:
        grown = bytearray(64 * 1024 * 1024)
        grown[::4096] = b"x" * len(grown[::4096])  # touched: resident
        kept.append(grown)

    app.register("noop", lambda: None)
    app.register("grow", grow)
    app.publish("noop")
    job = app.publish("grow")
    app.worker(handle_signals=False, max_jobs=2).run()
    execution = app.get(job.id).execution
    kept.clear()
    assert execution is not None
    assert execution["memory_after"] - execution["memory_before"] > 32 * 1024 * 1024
    assert execution["memory_peak"] - execution["memory_before"] > 32 * 1024 * 1024


def test_a_worker_with_slots_reuses_memory_readings(app: Conveyor) -> None:
    app.register("ok", lambda: None)
    from conveyor.worker import OWN_MEMORY_READING_AGE, SHARED_MEMORY_READING_AGE

    assert app.worker(concurrency=4, handle_signals=False).runner.memory_age == (
        SHARED_MEMORY_READING_AGE
    )
    # at concurrency 1 a job that runs longer than a millisecond reads its own
    assert app.worker(handle_signals=False).runner.memory_age == OWN_MEMORY_READING_AGE <= 0.001
