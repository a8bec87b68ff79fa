"""Process isolation (``isolation="process"``): sync handlers in handler processes that the
worker kills at a job's timeout and replaces when they die (isolation.py).

The handlers live in tests/isolated_handlers.py, which handler processes import by name.
Each test runs a few real processes; ``process()`` drains the due jobs, so the tests wait on
no timer but the timeouts under test.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.isolation import app_spec_of

from . import isolated_handlers
from .conftest import AppFactory

SPEC = "tests.isolated_handlers:app"
BOUND = 20.0
pytestmark = pytest.mark.slow
BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def isolated_app(make_app: AppFactory) -> Conveyor:
    app = make_app()
    isolated_handlers.register(app)
    return app


def run(app: Conveyor, **options: Any) -> Any:
    return app.process(isolation="process", app_spec=SPEC, **options)


@BOTH
def test_killed_and_crashed_handlers_end_their_attempts_and_the_worker_goes_on(
    make_app: AppFactory,
) -> None:
    """One drained run: a busy handler killed at its timeout, one whose process exits, then
    a result with progress, a permanent error and an exception of another class, each in
    order through one slot (every kill or crash replaces the process)."""
    app = isolated_app(make_app)
    spinning = app.publish("spin", timeout=0.3)
    exiting = app.publish("exit")
    doubled = app.publish("double", {"n": 2})
    refused = app.publish("refuse", {"reason": "no such account"})
    broken = app.publish("broken")
    seen: list[BaseException] = []
    app.on_error(lambda job, error: seen.append(error))
    stats = run(app)
    assert stats.jobs == 5

    killed = app.get(spinning.id)
    assert killed.state == "temporarily_failed"
    assert killed.last_error is not None
    assert killed.last_error.kind == "timeout"
    assert "timeout of 0.3 s" in killed.last_error.message

    crashed = app.get(exiting.id)
    assert crashed.state == "temporarily_failed"
    error = crashed.last_error
    assert error is not None
    assert (error.kind, error.type) == ("temporary", "HandlerProcessDied")
    assert "exited with code 1" in error.message

    done = app.get(doubled.id)
    assert done.state == "finished"
    assert done.result is not None
    assert done.result["doubled"] == 4
    assert done.result["pid"] != os.getpid()  # it ran in a handler process
    assert done.progress is not None
    assert (done.progress["percent"], done.progress["message"]) == (50, "half way")

    permanent = app.get(refused.id)
    assert permanent.state == "permanently_failed"
    assert permanent.last_error is not None
    assert permanent.last_error.message == "no such account"
    other = app.get(broken.id).last_error
    assert other is not None
    assert (other.kind, other.type) == ("temporary", "KeyError")
    assert other.traceback is not None
    assert "in broken" in other.traceback
    assert "isolation.py" not in other.traceback  # from the handler down
    assert 'raise KeyError("missing")' in other.traceback
    names = [type(error).__name__ for error in seen]
    assert names == ["HandlerProcessDied", "PermanentError", "HandlerRaised"]


@SQLITE
def test_a_handler_process_past_the_memory_limit_is_replaced(make_app: AppFactory) -> None:
    app = isolated_app(make_app)
    jobs = [app.publish("pid") for _ in range(2)]
    run(app, memory_limit=1)  # every handler process is over it after its job
    pids = {app.get(job.id).result for job in jobs}
    assert len(pids) == 2
    assert os.getpid() not in pids


@SQLITE
def test_an_app_the_handler_processes_cannot_load_stops_the_worker(
    make_app: AppFactory,
) -> None:
    app = isolated_app(make_app)
    job = app.publish("pid")
    with pytest.raises(ConfigurationError, match="could not load the app"):
        app.process(isolation="process", app_spec="tests.isolated_handlers:nothing")
    assert app.get(job.id).state == "ready"


@SQLITE
def test_a_stop_kills_a_handler_still_running_after_the_grace_period(
    make_app: AppFactory,
) -> None:
    """A consuming worker: the job running past the grace period is handed back and its
    handler process killed, so the worker returns at once instead of leaving it behind."""
    app = isolated_app(make_app)
    job = app.publish("spin")  # no timeout: only the stop ends it
    worker: Any = app.worker(
        isolation="process", app_spec=SPEC, grace_period=0.2, handle_signals=False
    )
    started = threading.Event()
    app.before_job(lambda _: started.set())
    stopper = threading.Thread(target=lambda: started.wait(BOUND) and worker.stop())
    stopper.start()
    worker.run()
    stopper.join(BOUND)
    handed_back = app.get(job.id)
    assert handed_back.state == "waiting"
    assert handed_back.attempts == 0


def test_handler_processes_import_the_module_global_that_holds_the_app() -> None:
    assert app_spec_of(isolated_handlers.app) == SPEC
    with pytest.raises(ConfigurationError, match="app_spec"):
        app_spec_of(Conveyor("memory://"))  # held by no module


@SQLITE
def test_a_cancel_request_kills_the_handler_process_and_cancels_the_job(
    make_app: AppFactory,
) -> None:
    """A handler process cannot see the request (CANCEL-002): the worker kills it instead,
    the job ends cancelled (CANCEL-003) and the slot's process is replaced."""
    app = isolated_app(make_app)
    job = app.publish("spin")  # no timeout: only the cancel ends it
    after = app.publish("pid")
    started = threading.Event()
    app.before_job(lambda claimed: claimed.id == job.id and started.set())
    canceller = threading.Thread(target=lambda: started.wait(BOUND) and app.cancel(job.id))
    canceller.start()
    stats = run(app)
    canceller.join(BOUND)
    assert stats.jobs == 2
    assert app.get(job.id).state == "cancelled"
    finished = app.get(after.id)
    assert finished.state == "finished"
    assert finished.result != os.getpid()
