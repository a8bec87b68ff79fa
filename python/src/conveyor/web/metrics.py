"""Prometheus metrics of the store, read at scrape time (extra ``metrics``: prometheus-client).

The figures come from the store, not from counters in this process: the web process runs no
job, and every scrape of any replica sees the same numbers, whichever processes did the work.
Job counts by queue and state cover the failures (``state="permanently_failed"``, ...); the
histograms are of the jobs that ended in the last WINDOW, from their execution records; the
counters are the totals every worker and repair loop adds to the store (counting.py).
The metrics are listed in docs/operations/metrics.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..counting import BROKER_REPAIRS, FAILURES, LEASE_RESCUES
from .service import WebService

# The histograms cover the jobs that ended within this window, the latest SAMPLE of them.
WINDOW = timedelta(minutes=5)
SAMPLE = 10_000
# Upper bounds in seconds, from a quick job's few milliseconds to an hour-long backlog.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip


class StoreCollector(Collector):
    """Gauges of one store, computed at each scrape."""

    def __init__(self, service: WebService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "conveyor_jobs", "Jobs in the store, by queue and state.", labels=["queue", "state"]
        )
        paused = GaugeMetricFamily(
            "conveyor_queue_paused", "1 while the queue is paused (PAUSE-001).", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "conveyor_jobs_failed",
            "Jobs that failed for good (permanently_failed), by queue.",
            labels=["queue"],
        )
        for queue in self.service.queues():
            for state, count in queue["counts"].items():
                jobs.add_metric([queue["queue"], state], count)
            paused.add_metric([queue["queue"]], 1 if queue["paused"] else 0)
            failed.add_metric([queue["queue"]], queue["counts"].get("permanently_failed", 0))
        yield jobs
        yield paused
        yield failed
        workers = GaugeMetricFamily(
            "conveyor_workers", "Workers whose record is in the store (presence beats)."
        )
        workers.add_metric([], len(self.service.app.workers()))
        yield workers
        yield from self.histograms()
        yield from self.counters()

    def histograms(self) -> Iterator[Any]:
        """Publish-to-start and run time of the jobs that ended within WINDOW, by queue."""
        window = f"{int(WINDOW.total_seconds() / 60)} minutes"
        families = {
            "start_delay_ms": GaugeHistogramMetricFamily(
                "conveyor_job_publish_to_start_seconds",
                f"From when a job was due to its first attempt's start, for the jobs that "
                f"ended in the last {window}.",
                labels=["queue"],
            ),
            "duration_ms": GaugeHistogramMetricFamily(
                "conveyor_job_run_seconds",
                f"How long the last attempt of the jobs that ended in the last {window} ran.",
                labels=["queue"],
            ),
        }
        observed: dict[tuple[str, str], list[float]] = {}
        for queue, execution in self.service.app.ended_executions(WINDOW, SAMPLE):
            for key in families:
                value = execution.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    observed.setdefault((key, queue), []).append(value / 1000)
        for (key, queue), values in sorted(observed.items()):
            buckets, total = histogram(values, BUCKETS)
            families[key].add_metric([queue], buckets, gsum_value=total)
        yield from families.values()

    def counters(self) -> Iterator[Any]:
        """The totals of events that every process adds to the store."""
        failures = CounterMetricFamily(
            "conveyor_job_failures",
            "Failed attempts, by queue and error kind (temporary, permanent, timeout, ...).",
            labels=["queue", "kind"],
        )
        rescues = CounterMetricFamily(
            "conveyor_lease_rescues",
            "Jobs rescued because their lease expired (their worker stopped beating).",
            labels=["queue"],
        )
        repairs = CounterMetricFamily(
            "conveyor_broker_repairs",
            "Jobs the repair loop handed to the broker again, by why: the state it requeued "
            "them from, or republished (a due job whose message may be lost).",
            labels=["queue", "reason"],
        )
        for name, queue, total in self.service.app.counters():
            family, _, detail = name.partition(".")
            if family == FAILURES:
                failures.add_metric([queue, detail], total)
            elif family == LEASE_RESCUES:
                rescues.add_metric([queue], total)
            elif family == BROKER_REPAIRS:
                repairs.add_metric([queue, detail], total)
        yield failures
        yield rescues
        yield repairs


def histogram(
    values: Iterable[float], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets of ``values`` (``+Inf`` last) and their sum."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value in values:
        counts[bisect_left(bounds, value)] += 1
        total += value
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*map(floatToGoString, bounds), "+Inf"], counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets, total


def metrics_route(service: WebService) -> Route:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(service))

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"], name="metrics")
