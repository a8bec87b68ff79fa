"""Helpers shared by the core-rule tests: fresh apps, jobs driven into a state, a notifier.

Everything goes through the public app API (publish, claim, fire): no store is mocked.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import Conveyor, Job, ManualClock, WorkerStats
from conveyor.specfiles import machine_document
from conveyor.worker import Worker

TEMPORARY = {"kind": "temporary", "message": "service unavailable", "type": "OSError"}
PERMANENT = {"kind": "permanent", "message": "bad input", "type": "ValueError"}
BROKER = {"kind": "broker", "message": "not confirmed"}

JOB_MACHINE = machine_document("job")
REQUEST_MACHINE = machine_document("request")
BATCH_MACHINE = machine_document("batch")


def tagged(tag: str, machine: dict[str, Any] = JOB_MACHINE) -> frozenset[str]:
    """States of a machine file carrying ``tag``."""
    return frozenset(name for name, state in machine["states"].items() if tag in state["tags"])


def memory_app(**options: Any) -> Conveyor:
    """A fresh in-memory app on its own manual clock, with a no-op handler ``task``."""
    options.setdefault("clock", ManualClock())
    app = Conveyor("memory://", **options)
    app.register("task", lambda *args, **kwargs: None)
    return app


@contextmanager
def sqlite_app(**options: Any) -> Iterator[Conveyor]:
    """A fresh app on a new SQLite file (for property tests needing a new store per example)."""
    with tempfile.TemporaryDirectory() as directory:
        options.setdefault("clock", ManualClock())
        app = Conveyor(f"sqlite:///{Path(directory) / 'conveyor.db'}", **options)
        app.register("task", lambda *args, **kwargs: None)
        try:
            yield app
        finally:
            app.close()


def ensure_task(app: Conveyor) -> None:
    if "task" not in app.handlers:
        app.register("task", lambda *args, **kwargs: None)


def claim_one(app: Conveyor, job: Job, worker: str = "w1", **options: Any) -> Job:
    """Claim exactly ``job``; fail the test if it cannot be claimed."""
    claimed = app.claim(worker, job_id=job.id, **options)
    assert [c.id for c in claimed] == [job.id], f"job {job.id} was not claimable"
    return claimed[0]


def report(app: Conveyor, job: Job, event: str, **params: Any) -> Job:
    """Fire a lease holder's event with the job's current token."""
    assert job.lease is not None
    return app.fire(job.id, event, {"lease_token": job.lease.token, **params})


def drive_to(app: Conveyor, state: str, **options: Any) -> Job:
    """Publish a ``task`` job and move it into ``state`` through the public API."""
    ensure_task(app)
    if state == "redundant":
        identifier = options.pop("identifier", "once")
        first = app.publish("task", unique=True, identifier=identifier, **options)
        for claimed in app.claim("w1", job_id=first.id):  # none if a sibling already finished
            report(app, claimed, "succeed")
        duplicate = app.publish("task", unique=True, identifier=identifier, **options)
        assert app.claim("w1", job_id=duplicate.id) == []
        return app.get(duplicate.id)
    job = app.publish("task", **options)
    if state == "ready":
        return job
    if state == "cancelled":
        return app.cancel(job.id)
    if state == "broker_failed":
        return app.fire(job.id, "broker_publish_failed", {"error": BROKER})
    claimed = claim_one(app, job)
    steps = {
        "processing": lambda: claimed,
        "finished": lambda: report(app, claimed, "succeed"),
        "temporarily_failed": lambda: report(app, claimed, "fail_temporarily", error=TEMPORARY),
        "permanently_failed": lambda: report(app, claimed, "fail_permanently", error=PERMANENT),
        "waiting": lambda: report(app, claimed, "wait"),
        "back_to_broker": lambda: app.fire(
            report(app, claimed, "fail_permanently", error=PERMANENT).id, "return_to_broker"
        ),
    }
    reached = steps[state]()
    assert reached.state == state
    return reached


@dataclass
class RecordingNotifier:
    """The app's notifier plug-in, keeping (kind, job id, state, attempts) of every call."""

    calls: list[tuple[str, str, str, int]] = field(default_factory=list)

    def notify(self, kind: str, job: Job) -> None:
        self.calls.append((kind, job.id, job.state, job.attempts))


def states_by_id(app: Conveyor) -> dict[str, str]:
    return {job.id: job.state for job in app.jobs(limit=100_000)}


@contextmanager
def running(consumer: Worker) -> Iterator[list[WorkerStats]]:
    """Run a worker (or broker consumer) in a thread; stop it, and wait for it, when the
    block ends."""
    result: list[WorkerStats] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(consumer.run())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        consumer.stop("test over")
        thread.join(timeout=30)
        assert not thread.is_alive(), "the consumer did not stop"
        assert errors == []
