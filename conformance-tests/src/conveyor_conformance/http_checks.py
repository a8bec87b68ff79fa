"""The HTTP binding's own checks (spec.md#http), run after the vectors in HTTP mode.

The vectors check what the operations do through the binding; these check what only the binding
says: statuses and bodies of malformed requests, unknown parameters, credentials, repeated
requests, withheld payloads. Each check starts from ``reset`` (through the adapter) and reports
as one check of the feature ``http``; :func:`traffic_check` reports what every translated
exchange of the run showed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import timefmt
from .http_binding import Answer, HttpClient, segment
from .transport import AdapterError
from .vectors import DEFAULT_HANDLERS, CheckResult

FILE = "(HTTP binding)"


class CheckFailed(Exception):
    def __init__(self, message: str, requirements: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.requirements = requirements


class CheckSkipped(Exception):
    pass


def expect(holds: bool, message: str, *requirements: str) -> None:
    if not holds:
        raise CheckFailed(message, list(requirements))


def code(answer: Answer) -> Any:
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def refused(answer: Answer, status: int, error: str, what: str, *requirements: str) -> None:
    expect(
        answer.status == status and code(answer) == error,
        f"{what}: expected {status} {error}, got {answer.status} "
        f"{answer.raw[:200].decode('utf-8', 'replace')}",
        *requirements,
    )


@dataclass(frozen=True)
class BindingCheck:
    id: str
    requirements: list[str]
    description: str
    run: Callable[[HttpClient], None]


def _reset(client: HttpClient) -> None:
    reset = client.call("reset", now=timefmt.DEFAULT_START, handlers=DEFAULT_HANDLERS, seed=0)
    if not reset.ok:
        raise CheckFailed(f"reset failed: {reset.value}", ["PROTO-005"])


def _publish(client: HttpClient, document: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.call("publish", job=document or {"requests": [{"type": "work"}]})
    expect(response.ok, f"publish through HTTP failed: {response.value}", "HTTP-003")
    job: dict[str, Any] = response.value["job"]
    return job


def _stored(client: HttpClient) -> int:
    listed = client.call("list")
    expect(listed.ok, f"list through HTTP failed: {listed.value}", "HTTP-005")
    return len(listed.value["jobs"])


def media_type(client: HttpClient) -> None:
    http = client.http
    form = http.request(
        "POST", "/jobs", raw=b'{"requests": [{"type": "work"}]}', content_type="text/plain"
    )
    expect(form.status == 415, f"a publish sent as text/plain got {form.status}", "HTTP-002")
    bare = http.request("POST", "/jobs", raw=b'{"requests": [{"type": "work"}]}', content_type=None)
    expect(bare.status == 415, f"a publish without Content-Type got {bare.status}", "HTTP-002")
    job = _publish(client)
    cancel = http.request(
        "POST",
        f"/jobs/{segment(job['id'])}/cancel",
        raw=b"x=1",
        content_type="application/x-www-form-urlencoded",
    )
    expect(cancel.status == 415, f"a form-encoded cancel got {cancel.status}", "HTTP-002")
    expect(_stored(client) == 1, "a refused publish stored a job", "HTTP-002", "ERR-002")
    state = client.call("get", job=job["id"]).value["job"]["state"]
    expect(state == "ready", f"a refused cancel changed the job to {state}", "HTTP-002")


def publish_body(client: HttpClient) -> None:
    http = client.http
    not_json = http.request("POST", "/jobs", raw=b"{not json")
    refused(not_json, 400, "invalid_request", "a publish body that is not JSON", "HTTP-003")
    array = http.request("POST", "/jobs", body=[{"requests": [{"type": "work"}]}])
    refused(array, 400, "invalid_request", "a publish body that is an array", "HTTP-003")
    unknown = http.request("POST", "/jobs", body={"requests": [{"type": "work"}], "x_colour": 1})
    refused(unknown, 400, "invalid_request", "a publish with an unknown member", "VER-006")
    expect(_stored(client) == 0, "a refused publish stored a job", "HTTP-003", "ERR-002")


def created(client: HttpClient) -> None:
    http = client.http
    answer = http.request("POST", "/jobs", body={"requests": [{"type": "work"}]})
    expect(answer.status == 201, f"a publish got {answer.status}, not 201", "HTTP-003")
    location = answer.header("location")
    expect(location is not None, "a publish answered without Location", "HTTP-003")
    assert location is not None
    job_id = answer.body["job"]["id"]
    target = urlsplit(location).path or location
    base = urlsplit(http.base_url).path.rstrip("/")
    expect(
        target.endswith(f"/jobs/{segment(job_id)}"),
        f"Location {location!r} does not name job {job_id}",
        "HTTP-003",
    )
    if target.startswith(base + "/"):
        again = http.request("GET", target[len(base) :])
        expect(
            again.status == 200 and again.body["job"]["id"] == job_id,
            f"GET of the Location {location!r} answered {again.status}",
            "HTTP-003",
        )


def missing_job(client: HttpClient) -> None:
    answer = client.http.request("GET", "/jobs/not-stored-0")
    refused(answer, 404, "not_found", "GET of a job that is not stored", "HTTP-004", "HTTP-008")


def list_parameters(client: HttpClient) -> None:
    http = client.http
    first = _publish(client)
    for query, what in (
        ([("x_colour", "red")], "an unknown parameter"),
        ([("state", "done")], "an unknown state"),
        ([("limit", "0")], "limit 0"),
        ([("limit", "many")], "a limit that is no number"),
    ):
        answer = http.request("GET", "/jobs", query=query)
        refused(answer, 400, "invalid_request", f"a listing with {what}", "HTTP-005")
    hundred = http.request("GET", "/jobs", query=[("limit", "100")])
    expect(hundred.status == 200, f"limit 100 got {hundred.status}", "HTTP-005")
    gone = http.request("GET", "/jobs", query=[("after", "not-stored-0")])
    refused(gone, 404, "not_found", "a listing after a job not stored", "HTTP-005", "OPS-007")
    last = http.request("GET", "/jobs", query=[("after", first["id"])])
    expect(
        last.status == 200 and last.body == {"jobs": [], "next_after": None},
        f"the page after the only job is not empty and last: {last.body}",
        "HTTP-005",
    )


def operation_body(client: HttpClient) -> None:
    job = _publish(client)
    for name in ("cancel", "retry", "requeue"):
        answer = client.http.request(
            "POST", f"/jobs/{segment(job['id'])}/{name}", body={"reason": "x"}
        )
        refused(answer, 400, "invalid_request", f"{name} with a body other than {{}}", "HTTP-006")
    pause = client.http.request("POST", "/queues/default/pause", body=[])
    refused(pause, 400, "invalid_request", "pause with a body other than {}", "HTTP-006")
    after = client.call("get", job=job["id"]).value["job"]
    expect(after == job, "a refused operation changed the job", "HTTP-006", "ERR-002")
    paused = client.call("paused_queues").value["queues"]
    expect(paused == [], "a refused pause paused the queue", "HTTP-006", "ERR-002")


def repeated(client: HttpClient) -> None:
    http = client.http
    job = _publish(client)
    path = f"/jobs/{segment(job['id'])}"
    reads = [http.request("GET", path).body for _ in range(2)]
    http.request("GET", "/jobs")
    http.request("GET", "/queues")
    expect(reads[0] == reads[1] == {"job": job}, "a GET changed the job", "HTTP-011")
    first = http.request("POST", f"{path}/cancel", body={})
    expect(first.status == 200, f"cancel got {first.status}", "HTTP-006")
    second = http.request("POST", f"{path}/cancel", body={})
    refused(second, 409, "invalid_transition", "a repeated cancel", "HTTP-011", "HTTP-008")
    for name, changes in (("pause", [True, False]), ("resume", [True, False])):
        for changed in changes:
            answer = http.request("POST", f"/queues/mail/{name}", body={})
            expect(
                answer.status == 200 and answer.body.get("changed") is changed,
                f"{name} answered {answer.status} {answer.body}, expected changed {changed}",
                "HTTP-011",
                "HTTP-007",
            )
    twice = [_publish(client)["id"] for _ in range(2)]
    expect(twice[0] != twice[1], "a repeated publish did not store a second job", "HTTP-011")


def credentials(client: HttpClient) -> None:
    http = client.http
    if not http.token:
        raise CheckSkipped("no token given: run with --http-token (or its variable) to check it")
    for token, what in ((False, "without a token"), ("x" * 32, "with a wrong token")):
        for method, body in (("GET", None), ("POST", {"requests": [{"type": "work"}]})):
            answer = http.request(method, "/jobs", body=body, token=token)
            expect(
                answer.status == 401,
                f"{method} /jobs {what} got {answer.status}, not 401",
                "HTTP-010",
            )
            challenge = (answer.header("www-authenticate") or "").lower()
            expect(
                "bearer" in challenge, f"401 without a Bearer challenge: {challenge!r}", "HTTP-010"
            )
            got = code(answer)
            expect(got == "unauthorized", f"401 with code {got!r}", "HTTP-010")
            expect(
                got not in client.error_codes,
                f"401 with the spec error code {got!r}",
                "HTTP-009",
            )
    expect(_stored(client) == 0, "a publish without credentials stored a job", "HTTP-010")


def withheld(client: HttpClient) -> None:
    payload = {"n": 1, "s": "https://user:secret@example.com/x"}
    job = _publish(
        client,
        {"requests": [{"type": "work", "payload": payload}], "metadata": {"k": "v"}},
    )
    answer = client.http.request("GET", f"/jobs/{segment(job['id'])}")
    shown = answer.body["job"]
    if answer.header("conveyor-withheld") is not None:
        expect(
            shown["requests"][0]["payload"] is None and shown["metadata"] == {},
            f"withheld, yet payload {shown['requests'][0]['payload']} and metadata "
            f"{shown['metadata']} are shown",
            "HTTP-012",
        )
        return
    got = shown["requests"][0]["payload"]
    masked = {**payload, "s": "https://user:***@example.com/x"}
    expect(got in (payload, masked), f"the payload came back as {got}", "HTTP-012")
    expect(
        shown["metadata"] == {"k": "v"}, f"metadata came back as {shown['metadata']}", "HTTP-012"
    )


CHECKS = [
    BindingCheck("http-media-type", ["HTTP-002"], "POSTs of other media types: 415", media_type),
    BindingCheck(
        "http-publish-body",
        ["HTTP-003", "HTTP-008"],
        "publish bodies that are not a JSON object or have unknown members",
        publish_body,
    ),
    BindingCheck("http-created", ["HTTP-003"], "201 with a Location that reads the job", created),
    BindingCheck(
        "http-missing-job", ["HTTP-004", "HTTP-008"], "GET of a job not stored: 404", missing_job
    ),
    BindingCheck(
        "http-list-parameters",
        ["HTTP-005"],
        "unknown parameters, bad values, a cursor no longer stored",
        list_parameters,
    ),
    BindingCheck(
        "http-operation-body", ["HTTP-006"], "operation bodies other than {}", operation_body
    ),
    BindingCheck(
        "http-repeated",
        ["HTTP-011", "HTTP-007"],
        "GETs change nothing; pause and resume repeat; cancel and publish do not",
        repeated,
    ),
    BindingCheck(
        "http-credentials", ["HTTP-010", "HTTP-009"], "the bearer token is required", credentials
    ),
    BindingCheck("http-withheld", ["HTTP-012"], "payloads as stored, or withheld", withheld),
]


def run_checks(client: HttpClient) -> list[CheckResult]:
    """Every binding check, each from a reset; an adapter that breaks ends the rest."""
    results = []
    for check in CHECKS:
        result = CheckResult(
            id=check.id,
            kind="vector",
            status="pass",
            requirements=check.requirements,
            features=["http"],
            file=FILE,
            message=check.description,
        )
        started = time.monotonic()
        try:
            _reset(client)
            check.run(client)
        except CheckFailed as failure:
            result.status = "fail"
            result.message = failure.message
            result.failed_requirements = failure.requirements
        except CheckSkipped as skipped:
            result.status = "skip"
            result.message = str(skipped)
        except AdapterError as error:
            result.status = "error"
            result.message = str(error)
            result.failed_requirements = [error.rule]
            results.append(result)
            break
        except (KeyError, TypeError, AttributeError) as error:
            result.status = "fail"
            result.message = f"an answer had an unexpected shape: {type(error).__name__}: {error}"
            result.failed_requirements = check.requirements
        result.duration_ms = int((time.monotonic() - started) * 1000)
        results.append(result)
    return results


def traffic_check(client: HttpClient) -> CheckResult:
    """What the translated exchanges of the whole run showed, requirement by requirement."""
    traffic = client.traffic
    broken = sorted(traffic.broken)
    problems = [problem for req in broken for problem in traffic.broken[req][:2]]
    return CheckResult(
        id="http-traffic",
        kind="vector",
        status="fail" if broken else "pass",
        requirements=sorted(traffic.checked),
        failed_requirements=broken,
        features=["http"],
        file=FILE,
        message="; ".join(problems[:6])
        if broken
        else f"{sum(traffic.checked.values())} checks of the binding on the vectors' exchanges",
        detail={"checked": dict(sorted(traffic.checked.items()))},
    )
