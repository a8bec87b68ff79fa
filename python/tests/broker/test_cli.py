"""The command line in broker mode: process runs the repair loop, reload-consumers restarts
consumers, SIGTERM returns prefetched messages, and no output shows a password."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.broker import RELOAD_EXIT_CODE

from ..conftest import TEST_PREFIX, wipe
from .conftest import AMQP_URL, delete_queues, require_amqp
from .processes import Environment, processes
from .test_faults import parent_app, wait_for
from .test_publish import depth

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, broker_prefix: str) -> Environment:
    require_amqp()
    return Environment.made(tmp_path, "sqlite", f"{TEST_PREFIX}cli_", broker_prefix, AMQP_URL)


@pytest.fixture
def app(env: Environment) -> Iterator[Conveyor]:
    made = parent_app(env)
    try:
        yield made
    finally:
        delete_queues([made])
        made.close()


def run(env: Environment, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        env.conveyor(*args),
        env={**env.variables(), **variables},
        cwd=env.directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_process_runs_the_repair_loop(env: Environment, app: Conveyor) -> None:
    job = app.publish("work", {"n": 1})
    app.fire(job.id, "broker_publish_failed", {"error": {"kind": "broker", "message": "test"}})
    done = run(env, "process")
    assert done.returncode == 0, done.stderr
    assert "repair through RabbitMQ at amqp://guest:***@" in done.stdout
    assert "requeued 1" in done.stdout
    assert app.get(job.id).state == "ready"
    # Its first message, one when it became broker_failed (claimable and due: handed over at
    # once), and the repair loop's.
    assert depth(app, "default", 100) == 3


def test_a_broker_that_cannot_be_reached_fails_process_without_showing_the_password(
    env: Environment, app: Conveyor
) -> None:
    secret = "Sup3r-Secret-pw"
    done = run(env, "process", BROKER_AMQP_URL=f"amqp://conveyor:{secret}@127.0.0.1:1/%2F")
    assert done.returncode == 1
    assert "127.0.0.1:1" in done.stdout + done.stderr
    assert secret not in done.stdout + done.stderr


def test_reload_consumers_makes_a_running_consumer_exit_with_code_3(
    env: Environment, app: Conveyor
) -> None:
    consumer = env.consumer("c1")
    with processes(consumer):
        app.publish("work", {"n": 1})
        wait_for(lambda: env.counts("done")[1] == 1, 60, "the consumer to run a job", env)
        done = run(env, "reload-consumers", "default", "1")
        assert done.returncode == 0, done.stderr
        assert "asked 1 consumer(s) of queue 'default'" in done.stdout
        assert consumer.wait(timeout=30) == RELOAD_EXIT_CODE
    assert "reload requested" in env.output("c1")


def test_reload_consumers_needs_a_broker(env: Environment) -> None:
    variables = {k: v for k, v in env.variables().items() if k != "CONVEYOR_BROKER_URL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--url",
            f"sqlite:///{env.directory / 'other.db'}",
            "reload-consumers",
            "default",
            "1",
        ],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "CONVEYOR_BROKER_URL" in done.stderr


def test_sigterm_finishes_the_job_and_returns_prefetched_messages(
    env: Environment, app: Conveyor
) -> None:
    consumer = env.consumer("c1", "--prefetch", "5")
    with processes(consumer):
        app.publish("work", {"n": 0, "sleep": 1.0})
        for n in range(1, 4):
            app.publish("work", {"n": n})
        wait_for(lambda: env.counts("start")[0] == 1, 60, "the slow job to start", env)
        time.sleep(0.2)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=30) == 0
    assert env.counts("done") == {0: 1}, "the current job finished; no other started"
    deadline = time.monotonic() + 10  # returned messages are requeued asynchronously
    while depth(app, "default", 100) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert depth(app, "default", 100) == 3, "the prefetched messages went back"


def test_sigterm_hands_running_jobs_back_after_the_grace_period(
    env: Environment, app: Conveyor
) -> None:
    """--concurrency 3: SIGTERM with three jobs running past the grace period and more
    prefetched. Nothing is lost: every job is claimable again with a message, attempts
    refunded, and a second consumer runs them all."""
    consumer = env.consumer("c1", "--concurrency", "3", "--grace-period", "0.3")
    with processes(consumer):
        for n in range(3):
            app.publish("work", {"n": n, "sleep": 5.0})
        for n in range(3, 8):
            app.publish("work", {"n": n, "sleep": 5.0})
        wait_for(lambda: len(env.counts("start")) == 3, 60, "three jobs to start", env)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=30) == 0
    assert env.counts("done") == {}, "no job finished: all were handed back"
    jobs = app.jobs()
    assert len(jobs) == 8
    assert {job.state for job in jobs} <= {"ready", "waiting"}
    assert {job.attempts for job in jobs} == {0}
    deadline = time.monotonic() + 10  # returned messages are requeued asynchronously
    while depth(app, "default", 100) != 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert depth(app, "default", 100) == 8, "one message per job"


def test_consume_in_broker_mode_says_where_it_consumes_from(
    env: Environment, app: Conveyor, tmp_path: Path
) -> None:
    consumer = env.consumer("c1", "--jobs", "1")
    with processes(consumer):
        app.publish("work", {"n": 1})
        assert consumer.wait(timeout=30) == 0
    output = env.output("c1")
    assert "through RabbitMQ at amqp://guest:***@" in output
    assert "guest:guest" not in output
    _ = wipe, TEST_PREFIX  # the fixtures above reuse the root helpers
