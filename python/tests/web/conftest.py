"""Fixtures of the web tests: the web app over an app on the parametrised backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from conveyor import Conveyor, PermanentError
from conveyor.web import create_app

from ..conftest import AppFactory

ClientFactory = Callable[..., TestClient]


def add_handlers(app: Conveyor) -> None:
    app.register("mail.send", lambda to="": None, queue="mail")
    app.register("invoice.build", lambda n=0: None, queue="billing")

    def broken(reason: str = "") -> None:
        raise PermanentError(reason or "the customer does not exist")

    app.register("report.broken", broken, queue="reports")


@pytest.fixture
def conveyor_app(make_app: AppFactory) -> Conveyor:
    app = make_app()
    add_handlers(app)
    return app


@pytest.fixture
def make_client(conveyor_app: Conveyor) -> Iterator[ClientFactory]:
    """Clients of the web app over ``conveyor_app``, with the given WebSettings options."""
    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        options.setdefault("token", None)
        options.setdefault("username", None)
        options.setdefault("password", None)
        options.setdefault("allowed_hosts", ("testserver",))  # the test client's host name
        client = TestClient(create_app(conveyor_app, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


JSON = {"Content-Type": "application/json"}
