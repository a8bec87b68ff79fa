"""The committed OpenAPI document is the one the code builds, and it covers every route."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Route

from conveyor import Conveyor
from conveyor.web import create_app
from conveyor.web.openapi import document, render

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "reference" / "openapi.json"


def test_the_committed_openapi_file_is_up_to_date() -> None:
    assert COMMITTED.read_text() == render(), (
        "docs/reference/openapi.json is out of date: run "
        "`python -m conveyor.web.openapi > docs/reference/openapi.json`"
    )


def test_every_api_route_is_documented() -> None:
    with Conveyor("memory://") as app:
        web = create_app(app, token=None, username=None, password=None)
    paths = document()["paths"]
    routes = [r for r in web.routes if isinstance(r, Route) and r.path.startswith("/api/")]
    assert routes
    for route in routes:
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths[route.path], f"{method} {route.path}"
    assert json.loads(render()) == document()
