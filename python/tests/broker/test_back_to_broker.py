"""An operator re-sends a job by setting its state to ``back_to_broker`` in the database (the way
the library Conveyor replaces documents): the repair loop, or ``jobs requeue``, makes it ready
and hands it over, and a consumer runs it.

Before, the row kept ``claim_priority`` NULL (the column only the library writes, from the
state), the requeue wrote only the columns whose value it thought had changed, and the ready
job was never claimed, although both commands reported success.

Spec: BROKER-004, BROKER-005, OPS-003.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from conveyor import Conveyor, PermanentError

from .test_consumer import consumer, running, wait_until


def set_state_by_hand(app: Conveyor, job_id: str, state: str) -> None:
    """What an operator does in SQL: change the state column, and nothing else."""
    store: Any = app.store
    jobs = store.tables.jobs
    with store.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == int(job_id)).values(state=state))


def requeue_by_repair(app: Conveyor, job_id: str) -> None:
    report = app.repair()
    assert report.requeued == 1, report.summary()


def requeue_by_command(app: Conveyor, job_id: str) -> None:
    assert app.requeue(job_id).state == "ready"  # what `conveyor jobs requeue ID` does


REQUEUES = {"repair": requeue_by_repair, "jobs requeue": requeue_by_command}


@pytest.mark.parametrize("requeue", REQUEUES.values(), ids=REQUEUES.keys())
def test_a_failed_job_set_to_back_to_broker_by_hand_runs_again(
    app: Conveyor, requeue: Callable[[Conveyor, str], None]
) -> None:
    runs: list[int] = []

    def flaky(n: int) -> None:
        runs.append(n)
        if len(runs) == 1:
            raise PermanentError("the first run fails for good")

    app.register("flaky", flaky)
    job = app.publish("flaky", 7)
    assert consumer(app, stop_when_empty=True).run().jobs == 1
    assert app.get(job.id).state == "permanently_failed"
    set_state_by_hand(app, job.id, "back_to_broker")
    requeue(app, job.id)
    assert app.get(job.id).state == "ready"
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: app.get(job.id).state == "finished", what="the re-sent job to run")
    assert runs == [7, 7]


def test_a_finished_job_set_to_back_to_broker_by_hand_does_not_crash_the_consumer(
    app: Conveyor,
) -> None:
    """Every request already succeeded: nothing can run. The job fails for good, saying why,
    and the consumer goes on with the next job."""
    runs: list[int] = []
    app.register("task", runs.append)
    job = app.publish("task", 1)
    assert consumer(app, stop_when_empty=True).run().jobs == 1
    set_state_by_hand(app, job.id, "back_to_broker")
    requeue_by_repair(app, job.id)
    worker = consumer(app)
    with running(worker):
        wait_until(lambda: app.get(job.id).state == "permanently_failed", what="the verdict")
        after = app.publish("task", 2)
        wait_until(lambda: app.get(after.id).state == "finished", what="the next job")
    error = app.get(job.id).last_error
    assert error is not None
    assert "no request left to run" in error.message
    assert runs == [1, 2]
