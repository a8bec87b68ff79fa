"""The web app mounted under a path of another ASGI app: links, static files and the API
follow the mount point."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.web import create_app


@pytest.fixture
def backend() -> str:
    return "memory"


def test_mounted_under_a_path(conveyor_app: Conveyor) -> None:
    web = create_app(
        conveyor_app, token=None, username=None, password=None, allowed_hosts=("testserver",)
    )
    host = Starlette(routes=[Mount("/ops/conveyor", app=web)])
    job = conveyor_app.publish("mail.send")
    with TestClient(host) as client:
        page = client.get("/ops/conveyor/jobs")
        assert page.status_code == 200
        assert 'href="/ops/conveyor/static/conveyor.css"' in page.text
        assert f'href="/ops/conveyor/jobs/{job.id}"' in page.text
        assert client.get("/ops/conveyor/static/conveyor.js").status_code == 200
        detail = client.get(f"/ops/conveyor/jobs/{job.id}").text
        assert f'data-url="/ops/conveyor/api/jobs/{job.id}/cancel"' in detail
        cancelled = client.post(f"/ops/conveyor/api/jobs/{job.id}/cancel", json={})
        assert cancelled.json()["job"]["state"] == "cancelled"
