"""The OpenAPI 3.1 document of the JSON API, built from the endpoint table (api.ENDPOINTS).

``python -m conveyor.web.openapi`` prints it; the committed copy (``docs/reference/openapi.json``)
is checked against it by the tests, so the published document is the code's.
"""

from __future__ import annotations

import json
from typing import Any

from .. import __version__
from .api import ENDPOINTS, Endpoint

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "A spec error code (error.schema.json, HTTP-008), or one "
                    "of unauthorized, cross_site, read_only, host_not_allowed, "
                    "unsupported_media_type, store_unavailable, error (HTTP-009).",
                },
                "message": {"type": "string", "description": "What was wrong and what to do."},
            },
        }
    },
}
COMPONENTS: dict[str, Any] = {
    "Job": {
        "type": "object",
        "description": "A job as spec/schemas/job.schema.json describes it. Unless the server "
        "shows payloads, every request's payload is null, the metadata is empty and the "
        "response carries the header `Conveyor-Withheld: payload, metadata` (HTTP-012); "
        "passwords inside URLs are masked in every string.",
        "required": ["id", "sequence", "queue", "priority", "state", "requests", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "sequence": {"type": "integer"},
            "queue": {"type": "string"},
            "priority": {"type": "integer"},
            "state": {"type": "string"},
            "attempts": {"type": "integer"},
            "requests": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "Queue": {
        "type": "object",
        "required": ["queue", "counts", "total", "paused", "paused_at"],
        "properties": {
            "queue": {"type": "string"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Jobs by state (states without jobs are left out).",
            },
            "total": {"type": "integer"},
            "paused": {"type": "boolean"},
            "paused_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "PublishRequest": {
        "type": "object",
        "description": "A publish request as spec/schemas/publish.schema.json describes it.",
        "required": ["requests"],
        "properties": {"requests": {"type": "array", "minItems": 1, "items": {"type": "object"}}},
        "additionalProperties": True,
    },
    "Worker": {
        "type": "object",
        "description": "A running worker's record, renewed at every presence beat.",
        "required": ["id", "host", "pid", "started_at", "heartbeat_at", "running"],
        "properties": {
            "id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "heartbeat_at": {"type": "string", "format": "date-time"},
            "seconds_since_heartbeat": {"type": "number"},
            "queues": {"type": "array", "items": {"type": "string"}},
            "concurrency": {"type": "integer"},
            "running": {"type": "array", "items": {"type": "string"}},
            "memory_bytes": {"type": ["integer", "null"]},
        },
    },
    "Error": ERROR,
}
LOCATION = {
    "Location": {
        "description": "The URL of the stored job (HTTP-003).",
        "schema": {"type": "string", "format": "uri"},
    }
}
DESCRIPTIONS = {
    400: "The request breaks a rule; the message names it.",
    401: "Credentials are missing or wrong.",
    403: "Read-only mode, or a cross-site request.",
    404: "No such job or batch (OPS-002, OPS-007).",
    409: "The job's state does not allow the operation (invalid_transition).",
    413: "A payload is too large (LIMIT-006).",
    415: "The body is not sent as application/json (HTTP-002).",
}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation,
        "summary": endpoint.summary,
        "responses": {
            str(endpoint.status): {
                "description": "Done." if endpoint.action else "Found.",
                "content": {"application/json": {"schema": endpoint.response}},
                **({"headers": LOCATION} if endpoint.status == 201 else {}),
            },
            **{
                str(status): {
                    "description": DESCRIPTIONS[status],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status in sorted({*endpoint.errors, 401})
            },
        },
    }
    if endpoint.params:
        operation["parameters"] = [
            {
                "name": param.name,
                "in": param.where,
                "required": param.where == "path",
                "description": param.description,
                "schema": (
                    {"type": "array", "items": param.schema} if param.repeat else param.schema
                ),
                **({"explode": True} if param.repeat else {}),
            }
            for param in endpoint.params
        ]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": endpoint.body}},
        }
    return operation


def document() -> dict[str, Any]:
    """The OpenAPI document of this version's API."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor web API",
            "version": __version__,
            "description": "Publish, inspect and operate on jobs and queues. The routes under "
            "/api follow the spec's HTTP binding (spec.md#http, base URL `/api`). Actions need "
            "a JSON body and a same-origin request (CSRF); authentication is a bearer token or "
            "HTTP basic, as configured.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{}, {"token": []}, {"basic": []}],
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
