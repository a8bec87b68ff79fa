"""The FastAPI example and the Starlette pieces, through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from conveyor import ConfigurationError, Conveyor
from conveyor.aio import AsyncConveyor
from conveyor.integrations.starlette import accepted, conveyor_of, lifespan

from .examples import load_example


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    module = load_example("fastapi_app")
    yield module
    module.app.close()


def test_an_order_is_accepted_with_the_location_of_its_job(example: ModuleType) -> None:
    with TestClient(example.api) as client:
        response = client.post("/orders", json={"id": 1, "email": "ada@example.org"})
        assert response.status_code == 202
        location = response.headers["location"]
        assert location.endswith(f"/jobs/{response.json()['id']}")
        assert client.get(location).json()["state"] == "ready"
        example.app.process()  # a worker, as `conveyor consume` runs it
        assert example.sent == [1]
        assert client.get(location).json()["state"] == "finished"
        assert client.get("/jobs/424242").status_code == 404


def test_a_failed_request_leaves_neither_its_row_nor_its_job(example: ModuleType) -> None:
    with TestClient(example.api) as client:
        refused = client.post("/orders", json={"id": 2, "email": "no-at-sign"})
        assert refused.status_code == 422
        assert example.app.jobs() == []
        kept = client.post("/orders", json={"id": 3, "email": "b@example.org"})
        assert kept.status_code == 202
    assert [job.requests[0].payload for job in example.app.jobs()] == [{"order_id": 3}]


def test_accepted_without_a_job_route_names_the_fix() -> None:
    conveyor = AsyncConveyor(Conveyor("memory://"))
    conveyor.app.register("noop", lambda: None)

    async def publish(request: Request) -> Response:
        job = await conveyor_of(request).publish("noop")
        return accepted(request, job)

    api = Starlette(routes=[Route("/", publish, methods=["POST"])], lifespan=lifespan(conveyor))
    with (
        TestClient(api) as client,
        pytest.raises(ConfigurationError, match="job_route"),
    ):
        client.post("/")


def test_a_missing_lifespan_names_the_fix() -> None:
    async def publish(request: Request) -> Response:
        conveyor_of(request)
        return Response()

    api = Starlette(routes=[Route("/", publish, methods=["POST"])])
    with TestClient(api) as client, pytest.raises(ConfigurationError, match="lifespan"):
        client.post("/")
