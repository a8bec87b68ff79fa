"""Property tests of earlier issues, in broker mode: the order jobs start in, retries.

Each example gets a fresh store, a fresh queue prefix and its own RabbitMQ queues (deleted when
the example ends). Fewer examples than the store-only versions: every example runs real
consumers over real queues.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, ManualClock, RetryPolicy

from ..test_ordering import PLANS, Planned, model_order, run_plan
from ..test_retry import POLICIES
from .conftest import AMQP_URL, delete_queues, require_amqp, settings_for

pytestmark = pytest.mark.usefixtures("_amqp")


@pytest.fixture
def _amqp() -> None:
    require_amqp()


@contextmanager
def broker_app(store: str = "memory", **options: Any) -> Iterator[Conveyor]:
    prefix = f"cp{os.getpid()}.{uuid.uuid4().hex[:8]}."
    with tempfile.TemporaryDirectory() as directory:
        url = "memory://" if store == "memory" else f"sqlite:///{Path(directory) / 'c.db'}"
        options.setdefault("clock", ManualClock())
        app = Conveyor(url, broker_url=AMQP_URL, broker_settings=settings_for(prefix), **options)
        try:
            yield app
        finally:
            try:
                delete_queues([app])
            finally:
                app.close()


@given(plan=PLANS)
@settings(max_examples=10, deadline=None)
def test_jobs_start_in_model_order_through_one_queue(plan: list[Planned]) -> None:
    """ORDER-002 / GROUP-002 in broker mode: every priority travels in one band (the
    app has no configured priorities), and the claim decides the order."""
    with broker_app("sqlite") as app:
        assert run_plan(app, plan) == model_order(plan)


@given(plan=PLANS)
@settings(max_examples=10, deadline=None)
def test_jobs_start_in_model_order_through_a_queue_per_priority(plan: list[Planned]) -> None:
    """One queue per priority: a message of a worse band claims the better job first
    (BROKER-007) and hands a message back to its own band, so nothing is stranded."""
    with broker_app("memory", priorities=range(5)) as app:
        assert run_plan(app, plan) == model_order(plan)


@given(policy=POLICIES, failures=st.integers(0, 4))
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_temporary_failures_retry_through_the_repair_loop(
    policy: RetryPolicy, failures: int
) -> None:
    """RETRY-001/004 and BROKER-005: a temporarily failed job is requeued when due and runs
    again; never before its delay."""
    with broker_app("memory") as app:
        runs: list[int] = []

        def flaky() -> None:
            runs.append(1)
            if len(runs) <= failures:
                raise ConnectionError("upstream down")

        app.register("flaky", flaky, retry=policy)
        clock = app.clock
        assert isinstance(clock, ManualClock)
        job = app.publish("flaky")
        for attempt in range(1, failures + 2):
            assert app.process(limit=1).jobs == 1
            got = app.get(job.id)
            assert got.attempts == attempt
            if attempt > failures:
                assert got.state == "finished"
                break
            if policy.exhausted(attempt):
                assert got.state == "permanently_failed"
                break
            assert got.state == "temporarily_failed"
            delay = timedelta(milliseconds=policy.delay_ms(attempt))
            if delay:
                clock.advance(delay - timedelta(milliseconds=1))
                assert app.process().jobs == 0
                clock.advance(timedelta(milliseconds=1))
        assert len(runs) == app.get(job.id).attempts
