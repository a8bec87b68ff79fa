"""The Flask example through Flask's test client, on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask

from conveyor import ConfigurationError, Conveyor
from conveyor.integrations.flask import FlaskConveyor

from .examples import load_example


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    module = load_example("flask_app")
    yield module
    module.app.close()
    module.engine.dispose()


def test_an_order_is_accepted_and_a_failed_one_leaves_nothing(example: ModuleType) -> None:
    client = example.create_app().test_client()
    refused = client.post("/orders", json={"email": "no-at-sign"})
    assert refused.status_code == 422
    assert example.app.jobs() == []

    accepted = client.post("/orders", json={"email": "a@example.org"})
    assert accepted.status_code == 202
    location = accepted.headers["Location"]
    assert location.endswith(f"/jobs/{accepted.get_json()['id']}")
    assert client.get(location).get_json()["state"] == "ready"
    example.app.process()
    assert client.get(location).get_json()["state"] == "finished"
    assert example.sent == [1]  # the refused order's row was rolled back too
    assert client.get("/jobs/4242").status_code == 404


def test_the_config_names_the_app(tmp_path: Path) -> None:
    flask_app = Flask(__name__)
    flask_app.config["CONVEYOR_URL"] = f"sqlite:///{tmp_path / 'jobs.db'}"
    extension = FlaskConveyor(flask_app)
    with flask_app.app_context():
        assert extension.app.url.endswith("jobs.db")
        extension.app.close()
    with pytest.raises(ConfigurationError, match="CONVEYOR_APP"):
        FlaskConveyor(Flask(__name__))


def test_an_app_without_the_extension_names_the_fix() -> None:
    extension = FlaskConveyor()
    with Flask(__name__).app_context(), pytest.raises(ConfigurationError, match="init_app"):
        _ = extension.app
    Conveyor("memory://").close()
