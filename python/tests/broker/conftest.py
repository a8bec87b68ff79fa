"""Fixtures for broker mode, against the real RabbitMQ (never a mock).

The broker comes from CONVEYOR_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2F).
Every test gets its own queue-name prefix, and the queues its apps declared are deleted when it
ends. Locally an unreachable broker skips the tests with the reason; under CI=true it fails them.

``backend`` and ``make_app`` override the root fixtures, so a core test imported into this
package runs unchanged in broker mode, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, ManualClock
from conveyor.broker import BrokerSettings

from ..conftest import AppFactory, _factory, require_service

AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BROKER_BACKENDS = ("sqlite", "postgresql")

_problem: list[str | None] = []


def amqp_problem() -> str | None:
    """None when RabbitMQ answers, else why not."""
    if not _problem:
        try:
            import pika

            parameters = pika.URLParameters(AMQP_URL)
            parameters.socket_timeout = 3
            parameters.connection_attempts = 1
            pika.BlockingConnection(parameters).close()
            _problem.append(None)
        except Exception as error:
            _problem.append(f"RabbitMQ is not reachable at {AMQP_URL.split('@')[-1]}: {error}")
    return _problem[0]


def require_amqp() -> None:
    problem = amqp_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(problem)


def settings_for(prefix: str, **overrides: Any) -> BrokerSettings:
    options: dict[str, Any] = {"prefix": prefix, "confirm_timeout": 5.0, "connect_timeout": 3.0}
    options.update(overrides)
    return BrokerSettings(**options)


def queue_names(app: Conveyor) -> set[str]:
    """Every queue an app of this test may have declared: what its broker declared, and the
    queues and control queues of every queue and band it knows."""
    mode = app.broker
    assert mode is not None
    names = set(mode.broker.declared)
    for queue in mode.consumer_queues(()):
        names.add(mode.topology.control_name(queue))
        for band in mode.bands().starts:
            names.add(mode.topology.queue_name(queue, band))
    return names


def delete_queues(apps: list[Conveyor]) -> None:
    """Delete the queues of a test's apps on the test broker (whatever URL an app used)."""
    import pika

    names: set[str] = set()
    for app in apps:
        if app.broker is None:
            continue
        try:
            names |= queue_names(app)
        except Exception:  # a store that is gone: the broker's own list still counts
            names |= app.broker.broker.declared
    if not names:
        return
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in sorted(names):
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def broker_prefix() -> str:
    return f"ct{os.getpid()}.{uuid.uuid4().hex[:8]}."


@pytest.fixture(params=BROKER_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_service(name)
    require_amqp()
    return name


@pytest.fixture
def make_app(
    backend: str, tmp_path: Path, clock: ManualClock, broker_prefix: str
) -> Iterator[AppFactory]:
    """Apps in broker mode on the parametrised backend: one store, one clock, one prefix."""
    factory = _factory(backend, tmp_path, clock)
    make = next(factory)
    apps: list[Conveyor] = []

    def make_broker_app(**options: Any) -> Conveyor:
        options.setdefault("broker_url", AMQP_URL)
        options.setdefault("broker_settings", settings_for(broker_prefix))
        app = make(**options)
        apps.append(app)
        return app

    try:
        yield make_broker_app
    finally:
        try:
            delete_queues(apps)
        finally:
            next(factory, None)


@pytest.fixture
def app(make_app: AppFactory) -> Conveyor:
    return make_app()
