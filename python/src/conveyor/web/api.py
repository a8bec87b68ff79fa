"""The JSON HTTP API: one table of endpoints, from which the routes and the OpenAPI document
are both built, so the document cannot drift from the code (tests/web compares it with the
committed ``openapi.json``).

The routes follow the spec's HTTP binding (spec.md#http, HTTP-001..012): publish, read, list,
cancel, retry, requeue, pause, resume and the queues under ``/api``, with the response documents
of spec/schemas/http.schema.json. Errors are the spec's refusal documents
(``{"error": {"code", "message"}}``) with an HTTP status per code (HTTP-008).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConveyorError, InvalidRequest, Refused, StoreUnavailable
from .masking import mask_urls
from .service import LIST_LIMIT_MAX, WebService

# HTTP-008: every other spec error code is answered with 400.
STATUS_OF_CODE = {
    "not_found": 404,
    "invalid_transition": 409,
    "stale_lease": 409,
    "batch_closed": 409,
    "payload_too_large": 413,
}

Handler = Callable[[WebService, Request], Awaitable[Any]]
WITHHELD = "payload, metadata"  # the Conveyor-Withheld header (HTTP-012)


@dataclass(frozen=True)
class Created:
    """A handler's result that answers 201 with a ``Location`` header."""

    document: dict[str, Any]
    location: str


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str
    repeat: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    operation: str
    summary: str
    handler: Handler
    response: dict[str, Any]
    action: bool = False  # changes state: refused in read-only mode, CSRF-checked
    status: int = 200
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    errors: tuple[int, ...] = field(default=(400,))


def refusal(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class UnsupportedMediaType(Exception):
    """A body that is not ``application/json`` (HTTP-002): answered with 415."""


async def _json_body(request: Request) -> Any:
    """The JSON body of a POST (HTTP-002); an empty body with the JSON media type reads as
    ``{}``."""
    raw = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        # A cross-site HTML form cannot send JSON: this is a second line against CSRF.
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise InvalidRequest(f"the body is not JSON: {error}") from None


async def _empty_body(request: Request) -> None:
    """The body of an operation: ``{}`` (HTTP-006)."""
    if await _json_body(request) != {}:
        raise InvalidRequest("send an empty JSON object ({}) as the body of this operation")


def _known_params(request: Request, endpoint: Endpoint) -> None:
    """Refuse a query parameter the route does not define (HTTP-005)."""
    known = [param.name for param in endpoint.params if param.where == "query"]
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        takes = f"this route takes {', '.join(known)}" if known else "this route takes none"
        raise InvalidRequest(f"unknown query parameter {', '.join(unknown)}; {takes}")


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {text!r}") from None


def _text(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


async def list_jobs(service: WebService, request: Request) -> Any:
    page = await run_in_threadpool(
        partial(
            service.list_jobs,
            states=tuple(s for s in request.query_params.getlist("state") if s),
            queue=_text(request, "queue"),
            type=_text(request, "type"),
            tag=_text(request, "tag"),
            identifier=_text(request, "identifier"),
            batch=_text(request, "batch"),
            serial_group=_text(request, "serial_group"),
            after=_text(request, "after"),
            limit=_int(request, "limit", 50),
        )
    )
    return {"jobs": page.jobs, "next_after": page.next_after}


async def get_job(service: WebService, request: Request) -> Any:
    return {"job": await run_in_threadpool(service.get, request.path_params["job_id"])}


async def publish(service: WebService, request: Request) -> Any:
    document = await _json_body(request)
    job = await run_in_threadpool(service.publish, document)
    # HTTP-003: where the stored job is read from, as an absolute URL.
    location = str(request.url.replace(query="", fragment="")).rstrip("/") + f"/{job['id']}"
    return Created({"job": job}, location)


def _operation(name: str) -> Handler:
    async def operate(service: WebService, request: Request) -> Any:
        await _empty_body(request)
        job = await run_in_threadpool(service.operate, request.path_params["job_id"], name)
        return {"job": job}

    return operate


async def queues(service: WebService, request: Request) -> Any:
    return {"queues": await run_in_threadpool(service.queues)}


async def pause(service: WebService, request: Request) -> Any:
    await _empty_body(request)
    return await run_in_threadpool(service.pause, request.path_params["queue"])


async def resume(service: WebService, request: Request) -> Any:
    await _empty_body(request)
    return await run_in_threadpool(service.resume, request.path_params["queue"])


async def throughput(service: WebService, request: Request) -> Any:
    minutes = _int(request, "minutes", 60)
    return {"minutes": await run_in_threadpool(service.throughput, minutes)}


async def workers(service: WebService, request: Request) -> Any:
    return {"workers": await run_in_threadpool(service.workers)}


async def get_batch(service: WebService, request: Request) -> Any:
    return {"batch": await run_in_threadpool(service.batch, request.path_params["batch_id"])}


async def list_batches(service: WebService, request: Request) -> Any:
    page = await run_in_threadpool(
        partial(service.batches, after=_text(request, "after"), limit=_int(request, "limit", 50))
    )
    return {"batches": page.batches, "next_after": page.next_after}


async def list_serial_groups(service: WebService, request: Request) -> Any:
    page = await run_in_threadpool(
        partial(
            service.serial_groups, after=_text(request, "after"), limit=_int(request, "limit", 50)
        )
    )
    return {"serial_groups": page.groups, "next_after": page.next_after}


async def get_serial_group(service: WebService, request: Request) -> Any:
    name = request.path_params["name"]
    return {"serial_group": await run_in_threadpool(service.serial_group, name)}


JOB = {"$ref": "#/components/schemas/Job"}
JOB_RESULT = {"type": "object", "required": ["job"], "properties": {"job": JOB}}
JOB_ID = Param("job_id", "path", {"type": "string"}, "The job's id.")
QUEUE = Param(
    "queue",
    "path",
    {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.:-]{0,63}$"},
    "The queue's name (LIMIT-001).",
)
PAUSE_RESULT = {
    "type": "object",
    "required": ["queue", "paused", "changed"],
    "properties": {
        "queue": {"type": "string"},
        "paused": {"type": "boolean"},
        "changed": {"type": "boolean", "description": "False when nothing changed (PAUSE-003)."},
    },
}
EMPTY_BODY = {"type": "object", "description": "Empty object; the body must be JSON (CSRF)."}


BATCH = {
    "type": "object",
    "required": ["id", "state", "total", "counts", "completion", "created_at", "finished_at"],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string"},
        "total": {"type": "integer"},
        "counts": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "The batch's jobs by state.",
        },
        "completion": {
            "type": ["object", "null"],
            "description": "The completion job to publish once every job settles: its queue "
            "and request types.",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
SERIAL_GROUP = {
    "type": "object",
    "required": ["name", "active", "processing", "head", "waiting"],
    "properties": {
        "name": {"type": "string"},
        "active": {"type": "integer", "description": "Jobs of the group in active states."},
        "processing": {"type": "array", "items": JOB},
        "head": {
            "oneOf": [JOB, {"type": "null"}],
            "description": "The job to run next: least (priority, sequence) not processing.",
        },
        "waiting": {
            "type": "array",
            "items": JOB,
            "description": "The jobs after the head, in the order they run (the list shows "
            "the first few).",
        },
    },
}


def _page(name: str, items: dict[str, Any], cursor: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [name, "next_after"],
        "properties": {
            name: {"type": "array", "items": items},
            "next_after": {
                "type": ["string", "null"],
                "description": f"The page's last {cursor}: pass as `after` for the next page; "
                "null on the last page.",
            },
        },
    }


def _keyset(cursor: str) -> tuple[Param, Param]:
    return (
        Param("after", "query", {"type": "string"}, f"Only after this {cursor} (`next_after`)."),
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 50},
            "At most this many.",
        ),
    )


def _filter(name: str, description: str, repeat: bool = False) -> Param:
    return Param(name, "query", {"type": "string"}, description, repeat)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/jobs",
        "listJobs",
        "Jobs in publish order, filtered, a page at a time (OPS-006).",
        list_jobs,
        {
            "type": "object",
            "required": ["jobs", "next_after"],
            "properties": {
                "jobs": {"type": "array", "items": JOB},
                "next_after": {
                    "type": ["string", "null"],
                    "description": "The id of the page's last job: pass as `after` for the next "
                    "page; null on the last page.",
                },
            },
        },
        params=(
            _filter("state", "Only jobs in this state; repeat for several.", repeat=True),
            _filter("queue", "Only jobs of this queue."),
            _filter("type", "Only jobs with a request of this type."),
            _filter("tag", "Only jobs carrying this tag."),
            _filter("identifier", "Only jobs with this identifier."),
            _filter("batch", "Only jobs of this batch."),
            _filter("serial_group", "Only jobs of this serial group."),
            Param(
                "after",
                "query",
                {"type": "string"},
                "Jobs after this job (an id, `next_after` of the previous page); a job no "
                "longer stored is refused with not_found (OPS-007).",
            ),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 50},
                "At most this many jobs.",
            ),
        ),
        errors=(400, 404),
    ),
    Endpoint(
        "POST",
        "/api/jobs",
        "publishJob",
        "Publish a job from a publish request (spec/schemas/publish.schema.json).",
        publish,
        JOB_RESULT,
        action=True,
        status=201,
        body={"$ref": "#/components/schemas/PublishRequest"},
        errors=(400, 403, 413, 415),
    ),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}",
        "getJob",
        "One job: requests, attempts, errors, lease, dependencies, batch.",
        get_job,
        JOB_RESULT,
        params=(JOB_ID,),
        errors=(404,),
    ),
    *(
        Endpoint(
            "POST",
            f"/api/jobs/{{job_id}}/{name}",
            f"{name}Job",
            summary,
            _operation(name),
            JOB_RESULT,
            action=True,
            params=(JOB_ID,),
            body=EMPTY_BODY,
            errors=(400, 403, 404, 409, 415),
        )
        for name, summary in (
            ("cancel", "Cancel a job; a running one gets a cancel request (OPS-008, CANCEL-001)."),
            ("retry", "Run a failed or cancelled job again (OPS-004)."),
            ("requeue", "Make a waiting or temporarily failed job due now (OPS-003)."),
        )
    ),
    Endpoint(
        "GET",
        "/api/queues",
        "listQueues",
        "Every queue with jobs or a pause: job counts by state, and whether it is paused.",
        queues,
        {
            "type": "object",
            "required": ["queues"],
            "properties": {
                "queues": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}}
            },
        },
        errors=(),
    ),
    Endpoint(
        "POST",
        "/api/queues/{queue}/pause",
        "pauseQueue",
        "Stop claims from a queue (PAUSE-001).",
        pause,
        PAUSE_RESULT,
        action=True,
        params=(QUEUE,),
        body=EMPTY_BODY,
        errors=(400, 403, 415),
    ),
    Endpoint(
        "POST",
        "/api/queues/{queue}/resume",
        "resumeQueue",
        "Let claims take a queue's jobs again (PAUSE-003).",
        resume,
        PAUSE_RESULT,
        action=True,
        params=(QUEUE,),
        body=EMPTY_BODY,
        errors=(400, 403, 415),
    ),
    Endpoint(
        "GET",
        "/api/throughput",
        "getThroughput",
        "Jobs that ended per minute (finished, failed for good, other ends), oldest first.",
        throughput,
        {
            "type": "object",
            "required": ["minutes"],
            "properties": {
                "minutes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["at", "finished", "failed", "other"],
                        "properties": {
                            "at": {"type": "string", "format": "date-time"},
                            "finished": {"type": "integer"},
                            "failed": {"type": "integer"},
                            "other": {"type": "integer"},
                        },
                    },
                }
            },
        },
        params=(
            Param(
                "minutes",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 1440, "default": 60},
                "How many minutes back, the current one included.",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/api/workers",
        "listWorkers",
        "Running workers: host, pid, queues, current jobs, memory, last heartbeat.",
        workers,
        {
            "type": "object",
            "required": ["workers"],
            "properties": {
                "workers": {"type": "array", "items": {"$ref": "#/components/schemas/Worker"}}
            },
        },
        errors=(),
    ),
    Endpoint(
        "GET",
        "/api/batches/{batch_id}",
        "getBatch",
        "One batch: state, size, its jobs counted by state, completion job (BATCH-001).",
        get_batch,
        {"type": "object", "required": ["batch"], "properties": {"batch": BATCH}},
        params=(Param("batch_id", "path", {"type": "string"}, "The batch's id."),),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/batches",
        "listBatches",
        "Batches in creation order, a page at a time, with their jobs counted by state.",
        list_batches,
        _page("batches", BATCH, "batch's id"),
        params=_keyset("batch (an id)"),
    ),
    Endpoint(
        "GET",
        "/api/serial_groups",
        "listSerialGroups",
        "Serial groups with an active job, by name, a page at a time: each with its "
        "processing job, its head and its first waiting jobs in run order.",
        list_serial_groups,
        _page("serial_groups", SERIAL_GROUP, "group's name"),
        params=_keyset("group (a name)"),
    ),
    Endpoint(
        "GET",
        "/api/serial_groups/{name}",
        "getSerialGroup",
        "One serial group's active jobs in run order (not_found when none is active).",
        get_serial_group,
        {
            "type": "object",
            "required": ["serial_group"],
            "properties": {"serial_group": SERIAL_GROUP},
        },
        params=(Param("name", "path", {"type": "string"}, "The serial group's name."),),
        errors=(404,),
    ),
)


def _has_jobs(result: dict[str, Any]) -> bool:
    return bool({"job", "jobs", "serial_group", "serial_groups"} & set(result))


def _endpoint(service: WebService, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def respond(request: Request) -> Response:
        if endpoint.action and service.settings.read_only:
            return refusal("read_only", "this interface is read-only (--read-only)", 403)
        try:
            _known_params(request, endpoint)
            result = await endpoint.handler(service, request)
        except UnsupportedMediaType as error:
            return refusal("unsupported_media_type", str(error), 415)
        except Refused as error:
            status = STATUS_OF_CODE.get(error.code, 400)
            return refusal(error.code, mask_urls(error.message), status)
        except StoreUnavailable as error:
            return refusal("store_unavailable", mask_urls(str(error)), 503)
        except ConveyorError as error:
            return refusal("error", mask_urls(str(error)), 500)
        headers = {}
        if isinstance(result, Created):
            headers["location"] = result.location
            result = result.document
        if not service.settings.show_payloads and _has_jobs(result):
            headers["conveyor-withheld"] = WITHHELD
        return JSONResponse(result, status_code=endpoint.status, headers=headers)

    return respond


def api_routes(service: WebService) -> list[Route]:
    return [
        Route(e.path, _endpoint(service, e), methods=[e.method], name=e.operation)
        for e in ENDPOINTS
    ]
