"""The dashboard's HTML pages, rendered on the server from the same service the API uses.

No page changes anything: actions are buttons whose script asks for confirmation and then
calls the JSON API (so the CSRF and read-only rules of the API cover the dashboard too).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..errors import Refused
from .service import WebService

OPERATIONS = ("retry", "requeue", "cancel")
FILTERS = ("queue", "type", "tag", "identifier", "batch", "serial_group")


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("conveyor.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


CHART_MINUTES = 60
CHART_HEIGHT = 80
BAR_WIDTH = 10


def bar_chart(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars (finished below, failed above) of jobs ended per minute, as SVG
    coordinates: drawn on the server, so the page needs no chart library and no script."""
    peak = max((p["finished"] + p["failed"] for p in points), default=0) or 1
    bars = []
    for index, point in enumerate(points):
        finished = round(point["finished"] / peak * CHART_HEIGHT, 1)
        failed = round(point["failed"] / peak * CHART_HEIGHT, 1)
        bars.append(
            {
                "x": index * BAR_WIDTH,
                "finished_y": CHART_HEIGHT - finished,
                "finished_h": finished,
                "failed_y": CHART_HEIGHT - finished - failed,
                "failed_h": failed,
                "title": f"{point['at'][11:16]} UTC: {point['finished']} finished, "
                f"{point['failed']} failed",
            }
        )
    return {
        "bars": bars,
        "width": len(points) * BAR_WIDTH,
        "height": CHART_HEIGHT,
        "peak": peak,
        "finished": sum(p["finished"] for p in points),
        "failed": sum(p["failed"] for p in points),
        "minutes": len(points),
    }


def next_query(request: Request, next_after: str | None) -> str | None:
    """The query string of the next page: this page's, with ``after`` moved on (keyset)."""
    if next_after is None:
        return None
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    pairs.append(("after", next_after))
    return urlencode(pairs)


def _after(request: Request) -> str | None:
    return request.query_params.get("after") or None


async def read_page(request: Request, read: Callable[[], Any], items: str) -> dict[str, Any]:
    """A list page's values for its template: the items (the page's attribute ``items``), the
    query of the next page, and the refusal to show instead (a bad filter or cursor)."""
    try:
        page = await run_in_threadpool(read)
    except (Refused, ValueError) as refused:
        return {items: [], "next_query": None, "error": str(refused)}
    found = getattr(page, items)
    return {items: found, "next_query": next_query(request, page.next_after), "error": None}


class Pages:
    def __init__(self, service: WebService) -> None:
        self.service = service
        self.env = environment()

    def render(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        settings = self.service.settings
        page = self.env.get_template(template).render(
            base=request.scope.get("root_path", ""),
            read_only=settings.read_only,
            refresh_ms=int(settings.refresh_seconds * 1000),
            store=self.service.store_location(),
            path=request.url.path,
            **values,
        )
        return HTMLResponse(page, status_code=status)

    async def overview(self, request: Request) -> Response:
        queues = await run_in_threadpool(self.service.queues)
        chart = bar_chart(await run_in_threadpool(self.service.throughput, CHART_MINUTES))
        totals: dict[str, int] = {}
        for queue in queues:
            for state, count in queue["counts"].items():
                totals[state] = totals.get(state, 0) + count
        states = [s for s in self.service.states if s in totals]
        return self.render(
            request,
            "overview.html",
            queues=queues,
            states=states,
            totals=totals,
            chart=chart,
            title="Overview",
        )

    async def queues(self, request: Request) -> Response:
        queues = await run_in_threadpool(self.service.queues)
        return self.render(request, "queues.html", queues=queues, title="Queues")

    async def workers(self, request: Request) -> Response:
        workers = await run_in_threadpool(self.service.workers)
        return self.render(request, "workers.html", workers=workers, title="Workers")

    async def jobs(self, request: Request) -> Response:
        query = request.query_params
        chosen = {name: query.get(name) or "" for name in FILTERS}
        states = [s for s in query.getlist("state") if s]
        listing = await read_page(
            request,
            partial(
                self.service.list_jobs,
                states=tuple(states),
                after=_after(request),
                limit=50,
                **{name: value or None for name, value in chosen.items()},
            ),
            "jobs",
        )
        return self.render(
            request,
            "jobs.html",
            chosen=chosen,
            chosen_states=states,
            all_states=self.service.states,
            title="Jobs",
            **listing,
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job = await run_in_threadpool(self.service.get, job_id)
        except Refused as refused:
            return self.render(
                request, "missing.html", status=404, message=str(refused), title="Not found"
            )
        machine = self.service.app.engine.machine
        allowed = [
            name
            for name in OPERATIONS
            if any(t.event == name and job["state"] in t.sources for t in machine.transitions)
        ]
        return self.render(
            request,
            "job.html",
            job=job,
            operations=allowed,
            payloads_withheld=not self.service.settings.show_payloads,
            title=f"Job {job['id']}",
        )

    async def serial_groups(self, request: Request) -> Response:
        read = partial(self.service.serial_groups, after=_after(request))
        listing = await read_page(request, read, "groups")
        return self.render(request, "serial_groups.html", title="Serial groups", **listing)

    async def serial_group(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            group = await run_in_threadpool(self.service.serial_group, name)
        except Refused:  # no job to run: the page still leads to the group's ended jobs
            group = {"name": name, "active": 0, "processing": [], "head": None, "waiting": []}
        return self.render(request, "serial_group.html", group=group, title=f"Serial group {name}")

    async def batches(self, request: Request) -> Response:
        read = partial(self.service.batches, after=_after(request))
        listing = await read_page(request, read, "batches")
        return self.render(request, "batches.html", title="Batches", **listing)

    async def batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        try:
            batch = await run_in_threadpool(self.service.batch, batch_id)
        except Refused as refused:
            return self.render(
                request, "missing.html", status=404, message=str(refused), title="Not found"
            )
        read = partial(self.service.list_jobs, batch=batch_id, after=_after(request))
        listing = await read_page(request, read, "jobs")
        return self.render(request, "batch.html", batch=batch, title=f"Batch {batch_id}", **listing)


def page_routes(service: WebService) -> list[Route]:
    pages = Pages(service)
    return [
        Route("/", pages.overview, name="overview"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs/{job_id}", pages.job, name="job"),
        Route("/serial_groups", pages.serial_groups, name="serial_groups"),
        # :path: a group's name may hold a slash (LIMIT-002)
        Route("/serial_groups/{name:path}", pages.serial_group, name="serial_group"),
        Route("/batches", pages.batches, name="batches"),
        Route("/batches/{batch_id}", pages.batch, name="batch"),
        Route("/queues", pages.queues, name="queues"),
        Route("/workers", pages.workers, name="workers"),
    ]
