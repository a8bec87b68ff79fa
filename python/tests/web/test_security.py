"""Security of the web interface: binding, authentication, CSRF, read-only mode, hidden
payloads, masked URLs and security headers. One test (at least) for each."""

from __future__ import annotations

import base64
import time

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from conveyor import ConfigurationError, Conveyor
from conveyor.cli import cli
from conveyor.web import WebSettings, check_bind, is_loopback
from conveyor.web.masking import mask_urls

from .conftest import JSON, ClientFactory

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def backend() -> str:
    """The rules here do not depend on the store: SQLite only."""
    return "sqlite"


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


# -- binding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_needs_no_credentials(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, WebSettings())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_another_host_needs_credentials(host: str) -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_WEB_TOKEN"):
        check_bind(host, WebSettings())
    check_bind(host, WebSettings(token=TOKEN))
    check_bind(host, WebSettings(username="ops", password="pw"))


def test_the_cli_refuses_to_listen_beyond_loopback_without_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = CliRunner().invoke(
        cli, ["--url", url, "web", "--host", "0.0.0.0"], env={"CONVEYOR_WEB_TOKEN": ""}
    )
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.output


def test_bad_credentials_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="both"):
        WebSettings(username="ops")
    with pytest.raises(ConfigurationError, match="16 characters"):
        WebSettings(token="short")
    settings = WebSettings.from_env({"CONVEYOR_WEB_TOKEN": TOKEN})
    assert settings.token == TOKEN
    assert settings.authenticated


# -- host names (DNS rebinding) ---------------------------------------------------------------


def test_without_credentials_only_loopback_names_are_answered(make_client: ClientFactory) -> None:
    client = make_client(allowed_hosts=())
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
        assert client.get("/api/jobs", headers={"Host": host}).status_code == 200, host
    rebound = client.get("/api/jobs", headers={"Host": "evil.example:8765"})
    assert rebound.status_code == 403
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    assert client.get("/", headers={"Host": "testserver"}).status_code == 403


def test_allowed_hosts_and_credentials_open_other_names(make_client: ClientFactory) -> None:
    listed = make_client(allowed_hosts=("ops.example.com",))
    assert listed.get("/api/jobs", headers={"Host": "ops.example.com"}).status_code == 200
    assert listed.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 403
    anyone = make_client(allowed_hosts=("*",))
    assert anyone.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 200
    locked = make_client(allowed_hosts=(), token=TOKEN)
    bearer = {"Host": "jobs.internal", "Authorization": f"Bearer {TOKEN}"}
    assert locked.get("/api/jobs", headers=bearer).status_code == 200


# -- authentication ---------------------------------------------------------------------------


def test_a_token_is_required_when_configured(make_client: ClientFactory) -> None:
    client = make_client(token=TOKEN)
    refused = client.get("/api/jobs")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (
        client.get("/", headers={"Authorization": "Bearer wrong-token-0123456"}).status_code == 401
    )
    assert client.get("/static/conveyor.js").status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_basic_authentication(make_client: ClientFactory) -> None:
    client = make_client(username="ops", password="correct horse")
    challenge = client.get("/")
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Basic")
    assert client.get("/", headers=basic("ops", "wrong")).status_code == 401
    assert client.get("/", headers=basic("other", "correct horse")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.get("/", headers=basic("ops", "correct horse")).status_code == 200


def test_both_credentials_challenge_both_schemes(make_client: ClientFactory) -> None:
    """HTTP-010: a token configured beside basic credentials is named in the challenge."""
    client = make_client(token=TOKEN, username="ops", password="correct horse")
    challenge = client.get("/api/jobs").headers["www-authenticate"]
    assert challenge.startswith("Basic")  # a browser asks for the password
    assert 'Bearer realm="Conveyor"' in challenge
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


# -- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ],
)
def test_cross_site_actions_are_refused(
    client: TestClient, conveyor_app: Conveyor, headers: dict[str, str]
) -> None:
    job = conveyor_app.publish("mail.send")
    refused = client.post(f"/api/jobs/{job.id}/cancel", json={}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cross_site"
    assert conveyor_app.get(job.id).state == "ready"
    paused = client.post("/api/queues/mail/pause", json={}, headers=headers)
    assert paused.status_code == 403
    assert conveyor_app.paused_queues() == {}


def test_same_origin_actions_pass(client: TestClient, conveyor_app: Conveyor) -> None:
    job = conveyor_app.publish("mail.send")
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver", **JSON}
    done = client.post(f"/api/jobs/{job.id}/cancel", content="{}", headers=headers)
    assert done.status_code == 200, done.text
    # reading is never refused for its origin (nothing changes)
    assert client.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


# -- read-only --------------------------------------------------------------------------------


def test_read_only_refuses_every_action(make_client: ClientFactory, conveyor_app: Conveyor) -> None:
    client = make_client(read_only=True)
    job = conveyor_app.publish("mail.send")
    for path in (
        f"/api/jobs/{job.id}/cancel",
        f"/api/jobs/{job.id}/retry",
        f"/api/jobs/{job.id}/requeue",
        "/api/queues/mail/pause",
        "/api/queues/mail/resume",
    ):
        refused = client.post(path, json={})
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "read_only"
    published = client.post("/api/jobs", json={"requests": [{"type": "mail.send"}]})
    assert published.status_code == 403
    assert [j.id for j in conveyor_app.jobs()] == [job.id]
    assert conveyor_app.paused_queues() == {}
    page = client.get(f"/jobs/{job.id}").text
    assert "read-only" in page
    assert 'class="action' not in page
    assert 'class="action' not in client.get("/queues").text


# -- payloads and URLs ------------------------------------------------------------------------


def test_payloads_are_hidden_unless_allowed(
    make_client: ClientFactory, conveyor_app: Conveyor
) -> None:
    job = conveyor_app.publish("mail.send", {"to": "alice@example.com"}, metadata={"k": "v"})
    hidden = make_client()
    assert "alice@example.com" not in hidden.get(f"/api/jobs/{job.id}").text
    assert "alice@example.com" not in hidden.get("/api/jobs").text
    assert "alice@example.com" not in hidden.get(f"/jobs/{job.id}").text
    shown = make_client(show_payloads=True)
    got = shown.get(f"/api/jobs/{job.id}").json()["job"]
    assert got["requests"][0]["payload"] == {"to": "alice@example.com"}
    assert got["metadata"] == {"k": "v"}
    assert "alice@example.com" in shown.get(f"/jobs/{job.id}").text


def test_masking_a_long_string_takes_linear_time() -> None:
    """A 1 MiB payload without a URL took minutes when every position was tried as a scheme."""
    started = time.monotonic()
    for text in ("a" * 2**20, "x://" + "a" * 2**20, "ab:" * 350_000):
        assert mask_urls(text) == text
    assert time.monotonic() - started < 5  # about 0.2 s; quadratic, it is minutes
    assert mask_urls("db=postgresql://app:pw@h/x") == "db=postgresql://app:***@h/x"


def test_passwords_in_urls_are_masked(client: TestClient, conveyor_app: Conveyor) -> None:
    assert mask_urls("postgresql://app:hunter2@db:5432/jobs") == "postgresql://app:***@db:5432/jobs"
    assert (
        mask_urls("see amqp://guest:pw@mq/ and http://x/")
        == "see amqp://guest:***@mq/ and http://x/"
    )
    assert mask_urls("no url here: a:b@c") == "no url here: a:b@c"
    job = conveyor_app.publish("report.broken", "cannot reach postgresql://app:hunter2@db/jobs")
    conveyor_app.process(handle_signals=False)
    assert "cannot reach" in conveyor_app.get(job.id).last_error.message  # type: ignore[union-attr]
    for path in (f"/api/jobs/{job.id}", f"/jobs/{job.id}", "/api/jobs", "/jobs"):
        text = client.get(path).text
        assert "hunter2" not in text, path
    assert "app:***@db" in client.get(f"/api/jobs/{job.id}").text


# -- headers ----------------------------------------------------------------------------------


def test_security_headers_on_every_response(make_client: ClientFactory) -> None:
    client = make_client()
    locked = make_client(token=TOKEN)
    for response in (
        client.get("/"),
        client.get("/api/jobs"),
        client.get("/static/conveyor.css"),
        client.get("/api/jobs/404404"),
        client.post("/api/jobs/1/cancel", json={}, headers={"Sec-Fetch-Site": "cross-site"}),
        locked.get("/"),
    ):
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "http" not in csp  # no external source
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
