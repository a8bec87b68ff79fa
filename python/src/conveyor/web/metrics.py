"""Prometheus metrics of the store, read at scrape time (extra ``metrics``: prometheus-client).

The figures come from the store, not from counters in this process: the web process runs no
job, and every scrape of any replica sees the same numbers. Job counts by queue and state cover
the failures (``state="permanently_failed"``, ``"temporarily_failed"``, ``"broker_failed"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .service import WebService


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


def metrics_route(service: WebService) -> Route:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(service))

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"], name="metrics")
