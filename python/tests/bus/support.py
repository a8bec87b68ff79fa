"""Helpers of the bus tests: backends, clean-up, and the sales context wired on an app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.bus import (
    CommandBus,
    ConveyorQueue,
    HandlerContainer,
    OutcomePolicy,
    PipeContainer,
    QueueJobDispatcher,
    Result,
    current_job,
)

from .messages import RecalculateSales, RecalculateSalesJob, SalesError

END_TO_END = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
"""End-to-end tests run on SQLite and PostgreSQL (skipped locally when it is down)."""


@dataclass
class Sales:
    """The sales context of the seed scenario, wired on one app."""

    app: Conveyor
    bus: CommandBus
    jobs: QueueJobDispatcher
    queue: ConveyorQueue
    pipes: PipeContainer
    log: list[str] = field(default_factory=list)
    answers: dict[int, list[Result[Any]]] = field(default_factory=dict)
    job_ids: list[str | None] = field(default_factory=list)

    def recalculate(self, message: RecalculateSales | RecalculateSalesJob) -> Result[Any]:
        kind = "command" if isinstance(message, RecalculateSales) else "job"
        self.log.append(f"{kind} {message.event_id}")
        job = current_job()
        self.job_ids.append(job.job_id if job else None)
        scripted = self.answers.get(message.event_id)
        return scripted.pop(0) if scripted else Result.ok(message.event_id)


def wire_sales(
    app: Conveyor,
    *,
    outcomes: OutcomePolicy | None = None,
    register: Callable[[ConveyorQueue], Any] | None = None,
) -> Sales:
    pipes = PipeContainer()
    queue = ConveyorQueue(
        app,
        middleware=pipes,
        outcomes=outcomes
        or OutcomePolicy(temporary={SalesError.REPORT_LOCKED: timedelta(seconds=30)}),
    )
    handlers = HandlerContainer()
    job_handlers = HandlerContainer()
    bus = CommandBus(handlers, pipes, queue=lambda: queue)
    jobs = QueueJobDispatcher(job_handlers, pipes)
    sales = Sales(app, bus, jobs, queue, pipes)
    handlers.bind(RecalculateSales, lambda: sales.recalculate)
    job_handlers.bind(RecalculateSalesJob, lambda: sales.recalculate)
    queue.dispatch_to(commands=bus, jobs=jobs)
    if register is not None:
        register(queue)
    else:
        queue.register(RecalculateSales, "sales.recalculate")
        queue.register(RecalculateSalesJob, "sales.recalculate_job")
    return sales
