"""The core-rule tests of the library, run again in broker mode (SQLite and PostgreSQL).

Every test of the modules below that works through the ``app``/``make_app`` fixtures (and not a
hypothesis strategy) is collected here a second time. This package's conftest overrides
``backend`` and ``make_app``, so these apps hand jobs to RabbitMQ, ``process()`` runs the repair
loop and then consumes from the broker, and the same assertions must hold: the broker changes
how jobs reach a worker, never what happens to them.
"""

from __future__ import annotations

import inspect
from types import ModuleType

from .. import (
    test_cancel_running,
    test_concurrency_limits,
    test_cron,
    test_ordering,
    test_rate_limits,
    test_results,
    test_retry,
    test_serial_groups,
    test_smoke,
    test_unique,
    test_unique_keys,
)

FIXTURES = {"app", "make_app", "clock", "backend"}


def _parametrized(function: object) -> set[str]:
    names: set[str] = set()
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize":
            argnames = mark.args[0]
            if isinstance(argnames, str):
                names.update(name.strip() for name in argnames.split(","))
            else:
                names.update(argnames)
    return names


def _collect(module: ModuleType) -> dict[str, object]:
    found: dict[str, object] = {}
    short = module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    for name, function in vars(module).items():
        if not name.startswith("test_") or not inspect.isfunction(function):
            continue
        if hasattr(function, "hypothesis"):
            continue  # property tests build their own apps (see test_properties.py)
        parameters = set(inspect.signature(function).parameters) - _parametrized(function)
        if parameters & {"app", "make_app"} and parameters <= FIXTURES:
            found[f"test_{short}__{name.removeprefix('test_')}"] = function
    return found


# Of the modules of features built on the claim and the store, the tests whose path crosses the
# broker: workers consuming, hand-overs after a job ends, waiting on a job run by a consumer.
_BROKER_PATHS = {
    test_results: (
        "test_the_last_request_s_return_value_is_the_job_s_result",
        "test_a_handler_reports_progress_that_outlives_the_attempt",
        "test_wait_returns_the_finished_job_with_its_result",
    ),
    test_cron: (
        "test_workers_run_the_schedules_of_a_cron_handler",
        "test_each_fire_time_is_published_once_across_apps",
    ),
    test_concurrency_limits: ("test_workers_never_run_more_than_the_limit",),
    test_rate_limits: ("test_workers_never_start_more_than_the_rate",),
    test_cancel_running: (
        "test_a_sync_handler_that_polls_the_request_ends_cancelled",
        "test_an_async_handler_is_cancelled",
        "test_an_async_handler_learns_of_the_request_from_the_heartbeat",
        "test_a_handler_that_ignores_the_request_ends_as_the_spec_says",
    ),
}
for _feature, _names in _BROKER_PATHS.items():
    _short = _feature.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    globals().update(
        {f"test_{_short}__{name.removeprefix('test_')}": getattr(_feature, name) for name in _names}
    )

for _module in (
    test_smoke,
    test_ordering,
    test_serial_groups,
    test_retry,
    test_unique,
    test_unique_keys,
):
    globals().update(_collect(_module))
