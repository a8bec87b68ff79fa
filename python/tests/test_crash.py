"""A worker killed with SIGKILL mid-job: the job is rescued after its lease and finishes once."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from conveyor import Conveyor, ManualClock

from .conftest import TEST_PREFIX, backend_url, require_service, wipe

HANDLER_MODULE = """
    import os
    import sys
    from datetime import timedelta
    from pathlib import Path

    from conveyor import Conveyor


    def work(n: int) -> None:
        runs = Path(os.environ["CRASH_RUNS"])
        with runs.open("a") as log:
            log.write(f"start {n}\\n")
        if runs.read_text().count("start") == 1:
            print("started", flush=True)
            sys.stdin.read()  # the first run blocks until the process is killed
        with runs.open("a") as log:
            log.write(f"done {n}\\n")


    if __name__ == "__main__":
        app = Conveyor(sys.argv[1], table_prefix=sys.argv[2], lease=timedelta(seconds=60))
        app.register("work", work)
        app.worker(idle_delay=0.05, handle_signals=False).run()
"""


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_handlers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Crash:
    """A handler module in tmp_path, its run log, and an app on the backend's tables."""

    app: Conveyor
    clock: ManualClock
    module_path: Path
    runs: Path
    url: str
    prefix: str


def _crash_setup(
    source: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> Crash:
    require_service(backend)
    url = backend_url(backend, tmp_path)
    module_path = tmp_path / "crash_handlers.py"
    module_path.write_text(textwrap.dedent(source))
    runs = tmp_path / "runs.log"
    runs.touch()
    monkeypatch.setenv("CRASH_RUNS", str(runs))
    clock = ManualClock()
    app = Conveyor(url, clock=clock, table_prefix=prefix, lease=timedelta(seconds=60))
    wipe(app)
    app.register("work", _load(module_path).work)
    return Crash(app, clock, module_path, runs, url, prefix)


def _kill_once_started(crash: Crash) -> None:
    """Run the module's worker until a handler prints "started", then SIGKILL it."""
    with subprocess.Popen(
        [sys.executable, str(crash.module_path), crash.url, crash.prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "started"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_killed_worker_job_is_rescued_and_finishes_once(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LEASE-003/LEASE-005: kill -9 mid-job loses nothing; the handler completes exactly once."""
    crash = _crash_setup(HANDLER_MODULE, backend, tmp_path, monkeypatch, f"{TEST_PREFIX}crash_")
    app, clock, runs = crash.app, crash.clock, crash.runs
    job = app.publish("work", {"n": 1})
    clock.set(clock.now().replace(year=2100))  # the child's wall clock is far behind this one
    _kill_once_started(crash)

    held = app.get(job.id)
    assert held.state == "processing"
    assert held.attempts == 1
    rescued = app.rescue_expired()
    assert [j.id for j in rescued] == [job.id]
    after_rescue = app.get(job.id)
    assert after_rescue.state == "temporarily_failed"
    assert after_rescue.last_error is not None
    assert after_rescue.last_error.kind == "lease_expired"

    clock.advance(timedelta(hours=1))
    stats = app.process()

    final = app.get(job.id)
    assert stats.jobs == 1
    assert final.state == "finished"
    assert final.attempts == 2
    assert runs.read_text().splitlines() == ["start 1", "start 1", "done 1"]
    app.close()


BATCH_HANDLER_MODULE = """
    import os
    import sys
    from datetime import timedelta
    from pathlib import Path

    from conveyor import Conveyor


    def work(n: int) -> None:
        runs = Path(os.environ["CRASH_RUNS"])
        with runs.open("a") as log:
            log.write(f"start {n}\\n")
        if n == 3 and runs.read_text().count("start 3") == 1:
            print("started", flush=True)
            sys.stdin.read()  # the batch's third job blocks until the process is killed
        with runs.open("a") as log:
            log.write(f"done {n}\\n")


    if __name__ == "__main__":
        app = Conveyor(sys.argv[1], table_prefix=sys.argv[2], lease=timedelta(seconds=60))
        app.register("work", work)
        app.worker(batch_size=4, record_delay=60, idle_delay=0.05, handle_signals=False).run()
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_at_most_its_batch(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes wait for the batch's commit: kill -9 in the middle of a batch of 4 loses no
    job; the two finished but unrecorded ones run again (the documented window: one batch)."""
    crash = _crash_setup(
        BATCH_HANDLER_MODULE, backend, tmp_path, monkeypatch, f"{TEST_PREFIX}crashb_"
    )
    app, clock, runs = crash.app, crash.clock, crash.runs
    jobs = [app.publish("work", {"n": n}) for n in (1, 2, 3, 4, 5)]
    clock.set(clock.now().replace(year=2100))  # the child's wall clock is far behind this one
    _kill_once_started(crash)

    # The whole first batch is still leased (two outcomes were waiting), the fifth untouched.
    assert [app.get(job.id).state for job in jobs] == ["processing"] * 4 + ["ready"]
    assert sorted(j.id for j in app.rescue_expired()) == sorted(job.id for job in jobs[:4])
    clock.advance(timedelta(hours=1))
    stats = app.process()

    assert stats.jobs == 5
    assert {app.get(job.id).state for job in jobs} == {"finished"}
    log = runs.read_text().splitlines()
    done = {n: log.count(f"done {n}") for n in range(1, 6)}
    assert done == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}  # lost: 0; repeated: the batch's two
    app.close()


CONCURRENT_HANDLER_MODULE = """
    import faulthandler
    import os
    import signal
    import sys
    import threading
    from datetime import timedelta
    from pathlib import Path

    from conveyor import Conveyor

    lock = threading.Lock()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view of a hang


    def work(n: int) -> None:
        runs = Path(os.environ["CRASH_RUNS"])
        with lock:
            with runs.open("a") as log:
                log.write(f"start {n}\\n")
            first = runs.read_text().count(f"start {n}") == 1
            if first:  # one write per line: threads must not interleave them
                sys.stdout.write(f"started {n}\\n")
                sys.stdout.flush()
        if first:
            sys.stdin.read()  # every first run blocks until the process is killed or stops
        with lock, runs.open("a") as log:
            log.write(f"done {n}\\n")


    if __name__ == "__main__":
        app = Conveyor(sys.argv[1], table_prefix=sys.argv[2], lease=timedelta(seconds=60))
        app.register("work", work)
        app.worker(
            concurrency=int(sys.argv[4]), grace_period=float(sys.argv[3]), idle_delay=0.05
        ).run()
"""


def _in_flight(crash: Crash, jobs: int, stop: signal.Signals, grace: float) -> int:
    """Run the module's worker (concurrency ``jobs``) until ``jobs`` handlers run at once,
    send ``stop``; the exit code."""
    errors = crash.module_path.with_suffix(".stderr")
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            [
                sys.executable,
                str(crash.module_path),
                crash.url,
                crash.prefix,
                str(grace),
                str(jobs),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as child,
    ):
        try:
            assert child.stdout is not None
            started = {child.stdout.readline().strip() for _ in range(jobs)}
            assert started == {f"started {n}" for n in range(jobs)}
            child.send_signal(stop)
            try:
                return child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGUSR1)  # its threads' stacks, into its stderr
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)  # it does not exit: the stacks are written meanwhile
                raise AssertionError(f"the worker did not exit:\n{errors.read_text()}") from None
        finally:
            if child.poll() is None:
                child.kill()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_worker_killed_with_jobs_in_flight_loses_none(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency 4, kill -9 while four jobs run: all four are rescued after their lease and
    finish once; none is lost."""
    crash = _crash_setup(
        CONCURRENT_HANDLER_MODULE, backend, tmp_path, monkeypatch, f"{TEST_PREFIX}crashc_"
    )
    app, clock, runs = crash.app, crash.clock, crash.runs
    jobs = [app.publish("work", {"n": n}) for n in range(4)]
    clock.set(clock.now().replace(year=2100))  # the child's wall clock is far behind this one
    assert _in_flight(crash, 4, signal.SIGKILL, grace=25) == -signal.SIGKILL

    assert [app.get(job.id).state for job in jobs] == ["processing"] * 4
    assert sorted(j.id for j in app.rescue_expired()) == sorted(job.id for job in jobs)
    clock.advance(timedelta(hours=1))
    assert app.process(concurrency=4).jobs == 4
    assert {app.get(job.id).state for job in jobs} == {"finished"}
    log = runs.read_text().splitlines()
    runs_of = {n: (log.count(f"start {n}"), log.count(f"done {n}")) for n in range(4)}
    assert runs_of == dict.fromkeys(range(4), (2, 1))  # lost: none; finished: once each
    app.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_worker_stopped_with_jobs_in_flight_hands_them_back(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while four jobs run past the grace period: the worker exits 0 at once after it,
    the jobs are handed back (waiting, due now, attempt refunded) and run again without
    waiting for a lease to expire; none is lost."""
    crash = _crash_setup(
        CONCURRENT_HANDLER_MODULE, backend, tmp_path, monkeypatch, f"{TEST_PREFIX}crasht_"
    )
    app, clock, runs = crash.app, crash.clock, crash.runs
    jobs = [app.publish("work", {"n": n}) for n in range(4)]
    assert _in_flight(crash, 4, signal.SIGTERM, grace=0.2) == 0  # threads, left behind
    clock.set(clock.now().replace(year=2100))  # the child handed them back at its wall clock

    handed_back = [app.get(job.id) for job in jobs]
    assert {job.state for job in handed_back} == {"waiting"}
    assert {job.attempts for job in handed_back} == {0}
    assert app.process(concurrency=4).jobs == 4  # at once: no lease to wait for
    assert {app.get(job.id).state for job in jobs} == {"finished"}
    log = runs.read_text().splitlines()
    runs_of = {n: (log.count(f"start {n}"), log.count(f"done {n}")) for n in range(4)}
    assert runs_of == dict.fromkeys(range(4), (2, 1))  # lost: none; finished: once each
    app.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_job_in_the_worker_s_own_thread_is_handed_back_on_sigterm(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency 1: the job runs in the worker's main thread; SIGTERM past the grace period
    interrupts it and hands it back, and the process exits 0."""
    crash = _crash_setup(
        CONCURRENT_HANDLER_MODULE, backend, tmp_path, monkeypatch, f"{TEST_PREFIX}crashi_"
    )
    app, clock, runs = crash.app, crash.clock, crash.runs
    job = app.publish("work", {"n": 0})
    assert _in_flight(crash, 1, signal.SIGTERM, grace=0.2) == 0
    clock.set(clock.now().replace(year=2100))
    handed_back = app.get(job.id)
    assert (handed_back.state, handed_back.attempts) == ("waiting", 0)
    assert app.process().jobs == 1
    assert app.get(job.id).state == "finished"
    assert runs.read_text().splitlines() == ["start 0", "start 0", "done 0"]
    app.close()
