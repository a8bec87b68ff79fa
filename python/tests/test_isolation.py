"""Process isolation (``isolation="process"``): sync handlers in handler processes that the
worker kills at a job's timeout and replaces when they die (isolation.py).

The handlers live in tests/isolated_handlers.py, which handler processes import by name.
Each test runs a few real processes; ``process()`` drains the due jobs, so the tests wait on
no timer but the timeouts under test.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor

from . import isolated_handlers
from .conftest import AppFactory

SPEC = "tests.isolated_handlers:app"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]


def isolated_app(make_app: AppFactory) -> Conveyor:
    app = make_app()
    isolated_handlers.register(app)
    return app


def run(app: Conveyor, **options: Any) -> Any:
    return app.process(isolation="process", app_spec=SPEC, **options)


def test_a_busy_handler_is_killed_at_its_timeout_and_the_next_job_runs(
    make_app: AppFactory,
) -> None:
    app = isolated_app(make_app)
    spinning = app.publish("spin", timeout=0.3)
    after = app.publish("double", {"n": 2})
    stats = run(app)
    assert stats.jobs == 2
    killed = app.get(spinning.id)
    assert killed.state == "temporarily_failed"
    assert killed.last_error is not None
    assert killed.last_error.kind == "timeout"
    assert "timeout of 0.3 s" in killed.last_error.message
    done = app.get(after.id)
    assert done.state == "finished"
    assert done.result is not None
    assert done.result["doubled"] == 4
    assert done.result["pid"] != os.getpid()  # it ran in a handler process
    assert done.progress is not None
    assert (done.progress["percent"], done.progress["message"]) == (50, "half way")


def test_a_handler_process_that_exits_fails_the_job_temporarily(make_app: AppFactory) -> None:
    app = isolated_app(make_app)
    exiting = app.publish("exit")
    first = app.publish("pid")
    stats = run(app)
    assert stats.jobs == 2
    crashed = app.get(exiting.id)
    assert crashed.state == "temporarily_failed"
    error = crashed.last_error
    assert error is not None
    assert (error.kind, error.type) == ("temporary", "HandlerProcessDied")
    assert "exited with code 1" in error.message
    assert app.get(first.id).state == "finished"  # the worker went on, in a new process


def test_handler_errors_keep_their_outcome_type_and_traceback(make_app: AppFactory) -> None:
    app = isolated_app(make_app)
    refused = app.publish("refuse", {"reason": "no such account"})
    broken = app.publish("broken")
    seen: list[BaseException] = []
    app.on_error(lambda job, error: seen.append(error))
    run(app, concurrency=2)
    permanent = app.get(refused.id)
    assert permanent.state == "permanently_failed"
    assert permanent.last_error is not None
    assert permanent.last_error.message == "no such account"
    temporary = app.get(broken.id).last_error
    assert temporary is not None
    assert temporary.kind == "temporary"
    assert temporary.type == "KeyError"
    assert temporary.traceback is not None
    assert "in broken" in temporary.traceback
    assert "isolation.py" not in temporary.traceback  # the handler down
    assert 'raise KeyError("missing")' in temporary.traceback
    assert sorted(type(error).__name__ for error in seen) == ["HandlerRaised", "PermanentError"]


def test_a_handler_process_past_the_memory_limit_is_replaced(make_app: AppFactory) -> None:
    app = isolated_app(make_app)
    jobs = [app.publish("pid") for _ in range(2)]
    run(app, memory_limit=1)  # every handler process is over it after its job
    pids = {app.get(job.id).result for job in jobs}
    assert len(pids) == 2
    assert os.getpid() not in pids


def test_an_app_the_handler_processes_cannot_load_stops_the_worker(
    make_app: AppFactory,
) -> None:
    app = isolated_app(make_app)
    job = app.publish("pid")
    with pytest.raises(ConfigurationError, match="could not load the app"):
        app.process(isolation="process", app_spec="tests.isolated_handlers:nothing")
    assert app.get(job.id).state == "ready"
