"""The JSON API on every backend: publish, get, list with filters and pages, operations,
queue figures, pause and resume.

Spec: OPS-002..008, CANCEL-001, PAUSE-001..005 through the HTTP binding (HTTP-001..012). The
conformance suite runs its vectors through the same routes (`just conformance`, HTTP mode).
"""

from __future__ import annotations

from datetime import timedelta

from starlette.testclient import TestClient

from conveyor import Conveyor, ManualClock

from .conftest import JSON, ClientFactory


def publish(client: TestClient, type: str, payload: object = None, **options: object) -> dict:
    response = client.post(
        "/api/jobs", json={"requests": [{"type": type, "payload": payload}], **options}
    )
    assert response.status_code == 201, response.text
    job: dict = response.json()["job"]
    assert response.headers["location"] == f"http://testserver/api/jobs/{job['id']}"
    return job


def test_publish_then_get(client: TestClient, conveyor_app: Conveyor) -> None:
    job = publish(client, "mail.send", {"to": "a@example.com"}, tags=["customer:42"])
    assert job["state"] == "ready"
    assert job["queue"] == "mail"  # the handler's queue
    stored = conveyor_app.get(job["id"])
    assert stored.requests[0].payload == {"to": "a@example.com"}
    assert stored.tags == ("customer:42",)
    response = client.get(f"/api/jobs/{job['id']}")
    got = response.json()["job"]
    assert got["id"] == job["id"]
    assert got["requests"][0]["payload"] is None  # withheld by default (HTTP-012)
    assert got["metadata"] == {}
    assert response.headers["conveyor-withheld"] == "payload, metadata"
    assert response.headers["content-type"] == "application/json"


def test_payloads_are_stored_and_shown_as_sent(make_client: ClientFactory) -> None:
    """HTTP-003, HTTP-012: the wire form of the codec is stored as given, typed values too."""
    client = make_client(show_payloads=True)
    payload = {"blob": {"$bytes": "AAE="}, "at": {"$date": "2026-01-02"}, "n": 1.5}
    job = publish(client, "mail.send", payload, metadata={"trace": "t-1"})
    response = client.get(f"/api/jobs/{job['id']}")
    assert "conveyor-withheld" not in response.headers
    got = response.json()["job"]
    assert got["requests"][0]["payload"] == payload
    assert got["metadata"] == {"trace": "t-1"}
    bad = client.post("/api/jobs", json={"requests": [{"type": "mail.send"}], "colour": "red"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")


def test_publish_with_a_unique_key(client: TestClient, conveyor_app: Conveyor) -> None:
    """UKEY-004 over the API: the duplicate answers with the holder; nothing else is stored."""
    uniqueness = {"fields": ["payload.to"], "period_ms": 60_000}
    first = publish(client, "mail.send", {"to": "a@example.com"}, uniqueness=uniqueness)
    again = publish(client, "mail.send", {"to": "a@example.com"}, uniqueness=uniqueness)
    assert again["id"] == first["id"]
    assert len(conveyor_app.jobs()) == 1
    keep = {**uniqueness, "conflict": "keep"}
    refused = client.post(
        "/api/jobs", json={"requests": [{"type": "mail.send"}], "uniqueness": keep}
    )
    assert refused.status_code == 400  # keep needs unique mode (UKEY-001)
    kept = publish(
        client, "mail.send", {"to": "a@example.com"}, uniqueness=keep, unique=True, identifier="a"
    )
    assert kept["id"] != first["id"]
    assert len(conveyor_app.jobs()) == 2


def test_list_filters(client: TestClient, conveyor_app: Conveyor) -> None:
    mail = publish(client, "mail.send", tags=["customer:1"])
    invoice = publish(client, "invoice.build", tags=["customer:1"])
    other = publish(client, "mail.send", tags=["customer:2"])
    conveyor_app.cancel(other["id"])

    def ids(**query: object) -> list[str]:
        response = client.get("/api/jobs", params=query)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert ids() == [mail["id"], invoice["id"], other["id"]]
    assert ids(queue="billing") == [invoice["id"]]
    assert ids(type="mail.send") == [mail["id"], other["id"]]
    assert ids(tag="customer:1") == [mail["id"], invoice["id"]]
    assert ids(state="cancelled") == [other["id"]]
    assert ids(state=["cancelled", "ready"]) == [mail["id"], invoice["id"], other["id"]]
    assert ids(type="mail.send", state="ready") == [mail["id"]]
    grouped = publish(client, "invoice.build", serial_group="account 7 & co")
    assert ids(serial_group="account 7 & co") == [grouped["id"]]
    page = client.get("/jobs", params={"serial_group": "account 7 & co"}).text
    assert f'href="/jobs/{grouped["id"]}"' in page
    detail = client.get(f"/jobs/{grouped['id']}").text
    assert "/jobs?serial_group=account%207%20%26%20co" in detail


def test_keyset_pages(client: TestClient) -> None:
    published = [publish(client, "mail.send", {"n": n})["id"] for n in range(5)]
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = client.get("/api/jobs", params=params).json()
        seen.extend(job["id"] for job in page["jobs"])
        if page["next_after"] is None:
            break
        assert page["next_after"] == seen[-1]  # the cursor is the last job's id (HTTP-005)
        params["after"] = page["next_after"]
    assert seen == published
    first = client.get("/jobs", params={"tag": "x y"}).text  # no match, no link
    assert 'rel="next"' not in first
    by_type = client.get("/api/jobs", params={"limit": 2, "type": "mail.send"}).json()
    assert [job["id"] for job in by_type["jobs"]] == published[:2]
    rest = client.get(
        "/api/jobs", params={"type": "mail.send", "after": by_type["next_after"]}
    ).json()
    assert [job["id"] for job in rest["jobs"]] == published[2:]


def test_cancel_retry_requeue(client: TestClient, conveyor_app: Conveyor) -> None:
    job = publish(client, "mail.send")
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["job"]["state"] == "cancelled"
    again = client.post(f"/api/jobs/{job['id']}/cancel", json={})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    retried = client.post(f"/api/jobs/{job['id']}/retry", json={})
    assert retried.json()["job"]["state"] == "ready"
    assert conveyor_app.get(job["id"]).state == "ready"
    requeue = client.post(f"/api/jobs/{job['id']}/requeue", json={})
    assert requeue.status_code == 409  # a ready job is due already


def test_cancel_of_a_running_job_records_a_request(
    client: TestClient, conveyor_app: Conveyor
) -> None:
    """CANCEL-001 through HTTP: 200, the job still processing with cancel_requested_at."""
    job = publish(client, "mail.send")
    conveyor_app.claim("w1")
    asked = client.post(f"/api/jobs/{job['id']}/cancel", json={})
    assert asked.status_code == 200, asked.text
    got = asked.json()["job"]
    assert got["state"] == "processing"
    assert got["cancel_requested_at"] is not None
    assert conveyor_app.get(job["id"]).cancel_requested


def test_a_failed_job_shows_its_error(client: TestClient, conveyor_app: Conveyor) -> None:
    job = publish(client, "report.broken")
    conveyor_app.process(handle_signals=False)
    got = client.get(f"/api/jobs/{job['id']}").json()["job"]
    assert got["state"] == "permanently_failed"
    assert got["last_error"]["message"] == "the customer does not exist"
    assert "traceback" in got["errors"][0]
    assert client.post(f"/api/jobs/{job['id']}/retry", json={}).json()["job"]["state"] == "ready"


def test_unknown_job_and_bad_input(client: TestClient) -> None:
    missing = client.get("/api/jobs/999999")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.post("/api/jobs/999999/cancel", json={}).status_code == 404
    bad_state = client.get("/api/jobs", params={"state": "done"})
    assert bad_state.status_code == 400
    assert "states are" in bad_state.json()["error"]["message"]
    assert client.get("/api/jobs", params={"limit": "many"}).status_code == 400
    unknown_filter = client.get("/api/jobs", params={"colour": "red"})
    assert unknown_filter.status_code == 400
    assert "colour" in unknown_filter.json()["error"]["message"]
    gone = client.get("/api/jobs", params={"after": "999999"})  # OPS-007
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "not_found")
    no_requests = client.post("/api/jobs", json={"queue": "mail"})
    assert no_requests.status_code == 400
    assert no_requests.json()["error"]["code"] == "invalid_request"
    unknown = client.post("/api/jobs", json={"requests": [{"type": "nobody.handles"}]})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_type"


def test_queues_pause_and_resume(client: TestClient, conveyor_app: Conveyor) -> None:
    publish(client, "mail.send")
    invoice = publish(client, "invoice.build")
    paused = client.post("/api/queues/mail/pause", json={})
    assert paused.json() == {"queue": "mail", "paused": True, "changed": True}
    assert client.post("/api/queues/mail/pause", json={}).json()["changed"] is False
    assert list(conveyor_app.paused_queues()) == ["mail"]
    assert [job.id for job in conveyor_app.claim("w", limit=5)] == [invoice["id"]]
    queues = {q["queue"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["mail"]["paused"] is True
    assert queues["mail"]["counts"] == {"ready": 1}
    assert queues["billing"]["counts"] == {"processing": 1}
    assert queues["billing"]["paused"] is False
    resumed = client.post("/api/queues/mail/resume", json={})
    assert resumed.json() == {"queue": "mail", "paused": False, "changed": True}
    assert conveyor_app.paused_queues() == {}
    bad = client.post("/api/queues/Not%20A%20Queue/pause", json={})
    assert bad.status_code == 400
    assert "LIMIT-001" in bad.json()["error"]["message"]


def test_actions_take_json_only(client: TestClient, conveyor_app: Conveyor) -> None:
    job = publish(client, "mail.send")
    form = client.post(
        f"/api/jobs/{job['id']}/cancel",
        content="x=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415  # HTTP-002
    assert form.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in form.json()["error"]["message"]
    extra = client.post(f"/api/jobs/{job['id']}/cancel", json={"reason": "x"})  # HTTP-006
    assert (extra.status_code, extra.json()["error"]["code"]) == (400, "invalid_request")
    assert conveyor_app.get(job["id"]).state == "ready"
    assert client.post(f"/api/jobs/{job['id']}/cancel", headers=JSON).status_code == 200


def test_workers_are_listed(client: TestClient, conveyor_app: Conveyor) -> None:
    from conveyor.presence import Presence

    assert client.get("/api/workers").json() == {"workers": []}
    presence = Presence(conveyor_app.store, conveyor_app.now, "host:1:abc", ["mail"], 2)
    presence.start(lambda: ["42"])
    try:
        (worker,) = client.get("/api/workers").json()["workers"]
        assert worker["id"] == "host:1:abc"
        assert worker["running"] == ["42"]
        assert worker["queues"] == ["mail"]
        assert worker["seconds_since_heartbeat"] == 0
        page = client.get("/workers").text
        assert "host:1:abc" in page
        assert 'href="/jobs/42"' in page
    finally:
        presence.stop()


def test_throughput_per_minute(
    client: TestClient, conveyor_app: Conveyor, clock: ManualClock
) -> None:
    app = conveyor_app
    app.publish("mail.send")
    app.publish("mail.send")
    app.process(handle_signals=False)  # both finish at 00:00
    clock.advance(timedelta(minutes=2, seconds=30))
    app.publish("report.broken")
    app.process(handle_signals=False)  # fails for good at 00:02:30
    cancelled = app.publish("mail.send")
    app.cancel(cancelled.id)
    minutes = client.get("/api/throughput", params={"minutes": 4}).json()["minutes"]
    assert [m["at"] for m in minutes] == [
        "2025-12-31T23:59:00.000Z",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:01:00.000Z",
        "2026-01-01T00:02:00.000Z",
    ]
    assert [(m["finished"], m["failed"], m["other"]) for m in minutes] == [
        (0, 0, 0),
        (2, 0, 0),
        (0, 0, 0),
        (0, 1, 1),
    ]
    overview = client.get("/").text
    assert "2 finished, 1 failed for good" in overview
    assert client.get("/api/throughput", params={"minutes": 0}).status_code == 400


def test_serial_groups_in_run_order(client: TestClient, conveyor_app: Conveyor) -> None:
    """A group lists its processing job, its head and its waiting jobs by (priority,
    sequence), the order serial groups run them in (spec.md#serial-groups)."""
    first = publish(client, "mail.send", serial_group="account 7", priority=5)
    later = publish(client, "mail.send", serial_group="account 7", priority=5)
    urgent = publish(client, "mail.send", serial_group="account 7", priority=1)
    other = publish(client, "invoice.build", serial_group="billing", priority=0)
    publish(client, "mail.send")  # no group
    gone = publish(client, "mail.send", serial_group="zz-ended")
    client.post(f"/api/jobs/{gone['id']}/cancel", json={})  # only active jobs count
    [running] = conveyor_app.claim("w1", queues=["billing"])
    assert running.id == other["id"]

    response = client.get("/api/serial_groups")
    assert response.status_code == 200, response.text
    assert response.headers["conveyor-withheld"] == "payload, metadata"
    page = response.json()
    assert page["next_after"] is None
    assert [(g["name"], g["active"]) for g in page["serial_groups"]] == [
        ("account 7", 3),
        ("billing", 1),
    ]
    account, billing = page["serial_groups"]
    assert account["processing"] == []
    assert account["head"]["id"] == urgent["id"]
    assert [job["id"] for job in account["waiting"]] == [first["id"], later["id"]]
    assert [job["id"] for job in billing["processing"]] == [other["id"]]
    assert billing["head"] is None
    assert billing["waiting"] == []

    one = client.get("/api/serial_groups", params={"limit": 1}).json()
    assert [g["name"] for g in one["serial_groups"]] == ["account 7"]
    assert one["next_after"] == "account 7"
    rest = client.get("/api/serial_groups", params={"after": one["next_after"]}).json()
    assert [g["name"] for g in rest["serial_groups"]] == ["billing"]

    detail = client.get("/api/serial_groups/account 7").json()["serial_group"]
    assert detail["head"]["id"] == urgent["id"]
    assert [job["id"] for job in detail["waiting"]] == [first["id"], later["id"]]
    missing = client.get("/api/serial_groups/zz-ended")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    page_html = client.get("/serial_groups").text
    assert f'href="/jobs/{urgent["id"]}"' in page_html
    assert 'href="/serial_groups/account%207"' in page_html
    detail_html = client.get("/serial_groups/account 7").text
    links = [f'href="/jobs/{job["id"]}"' for job in (urgent, first, later)]
    assert sorted(links, key=detail_html.index) == links
    ended = client.get("/serial_groups/zz-ended")
    assert ended.status_code == 200
    assert "/jobs?serial_group=zz-ended" in ended.text
    job_html = client.get(f"/jobs/{first['id']}").text
    assert 'href="/serial_groups/account%207"' in job_html


def test_batches_with_counts_and_pages(client: TestClient, conveyor_app: Conveyor) -> None:
    """BATCH-001..003 as the API shows them: state, size, jobs by state, completion."""
    from conveyor import Call

    app = conveyor_app
    batch = app.open_batch(Call("invoice.build", {"n": 1}))
    parts = [app.publish("mail.send", {"n": n}, batch=batch) for n in range(3)]
    app.cancel(parts[0].id)
    app.seal_batch(batch)
    empty = app.open_batch()

    response = client.get("/api/batches")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_after"] is None
    assert [b["id"] for b in page["batches"]] == [batch.id, empty.id]
    shown = page["batches"][0]
    assert (shown["state"], shown["total"]) == ("sealed", 3)
    assert shown["counts"] == {"cancelled": 1, "ready": 2}
    assert shown["completion"] == {"queue": "billing", "types": ["invoice.build"]}
    assert page["batches"][1]["counts"] == {}
    assert page["batches"][1]["completion"] is None

    one = client.get("/api/batches", params={"limit": 1}).json()
    assert ([b["id"] for b in one["batches"]], one["next_after"]) == ([batch.id], batch.id)
    rest = client.get("/api/batches", params={"after": batch.id}).json()
    assert [b["id"] for b in rest["batches"]] == [empty.id]
    got = client.get(f"/api/batches/{batch.id}").json()["batch"]
    assert got == shown
    assert client.get("/api/batches/987654").status_code == 404
    bad = client.get("/api/batches", params={"limit": 0})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")

    listing = client.get("/batches").text
    assert f'href="/batches/{batch.id}"' in listing
    detail = client.get(f"/batches/{batch.id}").text
    assert all(f'href="/jobs/{part.id}"' in detail for part in parts)
    assert client.get("/batches/987654").status_code == 404
    job_html = client.get(f"/jobs/{parts[1].id}").text
    assert f'href="/batches/{batch.id}"' in job_html
