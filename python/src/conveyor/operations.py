"""The application API's units of work, each a function of one transaction.

The synchronous app (:class:`conveyor.Conveyor`) runs them in the store's transaction or in
the caller's; the asynchronous app (:class:`conveyor.aio.AsyncConveyor`) runs the very same
functions over an async driver. The rules (the job factory, the lifecycle, the machine
engine) are therefore written once: neither layer builds a statement or decides a state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .errors import JobNotFound
from .lifecycle import Lifecycle, Outcome
from .model import Batch, Job
from .publishing import Call, JobFactory, PublishOptions
from .store.base import JobFilter, Transaction

T = TypeVar("T")
Operation = Callable[[Transaction], T]


def split_options(options: Mapping[str, Any]) -> tuple[PublishOptions, Any]:
    """Publish keyword arguments as (options, the caller's connection or None).

    ``batch=`` takes a :class:`Batch` or its id; ``connection=`` is whatever the layer
    that runs the publish accepts (a Connection or Session, sync or async)."""
    given = dict(options)
    connection = given.pop("connection", None)
    batch = given.pop("batch", None)
    if batch is not None:
        given["batch_id"] = batch.id if isinstance(batch, Batch) else str(batch)
    return PublishOptions.of(given), connection


def job_filter(
    *,
    states: Sequence[str] = (),
    queue: str | None = None,
    tag: str | None = None,
    identifier: str | None = None,
    batch: str | None = None,
    limit: int = 100,
    after_sequence: int = 0,
    serial_group: str | None = None,
) -> JobFilter:
    """The filter of ``jobs(...)``, shared by both apps' signatures."""
    return JobFilter(
        tuple(states), queue, tag, identifier, batch, limit, after_sequence, serial_group
    )


@dataclass(frozen=True)
class Operations:
    """Builds the operations; holds only the rule objects they apply."""

    factory: JobFactory
    lifecycle: Lifecycle

    def build(self, calls: Sequence[Call], options: PublishOptions, now: datetime) -> Job:
        """A new job from its calls (validation, handler defaults): pure, no transaction."""
        return self.factory.build(calls, options, now)

    def build_many(
        self, request_type: str, payloads: Iterable[Any], options: PublishOptions, now: datetime
    ) -> list[Job]:
        """One job of ``request_type`` per payload, with shared options: pure, no transaction."""
        return self.factory.build_many(request_type, payloads, options, now)

    def publish(self, jobs: Sequence[Job], now: datetime) -> Operation[Outcome]:
        return lambda tx: self.lifecycle.publish(tx, jobs, now)

    def fire(
        self, job_id: str, event: str, now: datetime, params: Mapping[str, Any] | None = None
    ) -> Operation[Outcome]:
        return lambda tx: self.lifecycle.fire(tx, str(job_id), event, now, dict(params or {}))

    @staticmethod
    def get(job_id: str) -> Operation[Job]:
        def run(tx: Transaction) -> Job:
            job = tx.get_job(str(job_id))
            if job is None:
                raise JobNotFound(f"job {job_id} does not exist (it may have been pruned)")
            return job

        return run

    @staticmethod
    def find(query: JobFilter) -> Operation[list[Job]]:
        return lambda tx: tx.find_jobs(query)

    @staticmethod
    def unfinished(identifiers: Collection[str]) -> Operation[set[str]]:
        listed = list(identifiers)
        return lambda tx: tx.unfinished_identifiers(listed)

    @staticmethod
    def counts() -> Operation[list[tuple[str, str, int]]]:
        return lambda tx: tx.counts()


def stored(outcome: Outcome, count: int, changed: Mapping[str, Job]) -> list[Job]:
    """The first ``count`` jobs of a publish outcome as stored: a job the broker did not
    take after the commit is ``broker_failed``, not ``ready``."""
    return [changed.get(job.id, job) for job in outcome.jobs[:count]]
