"""A producer in another language wakes the reference consumer (spec.md#amqp).

``conformance-tests/examples/node-producer/producer.js`` publishes the envelope of a stored job
with Node's amqplib, following AMQP-001 to AMQP-004 alone (no code shared with the library); the
reference consumer, with no repair loop to hand the job over itself, then runs the job.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor import Conveyor

from ..conftest import AppFactory
from .conftest import AMQP_URL, settings_for
from .test_consumer import consumer, running, wait_until
from .test_publish import depth, take_bodies

EXAMPLE = Path(__file__).resolve().parents[3] / "conformance-tests" / "examples" / "node-producer"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_node_producer_wakes_the_reference_consumer(
    make_app: AppFactory, broker_prefix: str
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    assert (EXAMPLE / "node_modules" / "amqplib").is_dir(), "run `just setup` (npm ci)"
    app: Conveyor = make_app(broker_settings=settings_for(broker_prefix, repair_every=None))
    ran: list[int] = []
    app.register("work", ran.append)
    job = app.publish("work", 7)
    assert len(take_bodies(app)) == 1  # the library's own message is gone: the job waits
    mode = app.broker
    assert mode is not None
    band = mode.bands().band(job.priority)
    completed = subprocess.run(
        [node, str(EXAMPLE / "producer.js"), AMQP_URL, broker_prefix, job.queue, str(band),
         job.id, str(job.priority)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert depth(app) == 1
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: app.get(job.id).state == "finished", what="the job to run")
    assert ran == [7]
