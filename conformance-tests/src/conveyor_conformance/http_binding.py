"""HTTP mode: the vectors' publish, read, list and operations go through the HTTP binding.

``conveyor-conformance run --adapter CMD --http URL`` starts the adapter as usual and sends it
every command the binding does not cover (reset, the clock, claims, reports, batches, ...). The
commands the binding covers (spec.md#http) become HTTP requests against the binding's base URL
instead, and their answers are turned back into protocol responses, so that every vector using
them checks the implementation through its HTTP interface. The implementation behind the URL has
to share the adapter's store and clock: the reference library's adapter serves the binding
itself when the harness hands it the URL (``CONVEYOR_CONFORMANCE_HTTP``, see :func:`adapter_env`).

While it translates, :class:`HttpClient` checks every exchange against the binding (statuses,
``Location``, media types, the response documents of ``schemas/http.schema.json``, the status of
each error code, keyset pages) and records, per requirement, what it saw and what broke; the
run reports that as the check ``http-traffic``. :mod:`.http_checks` adds the binding's own checks
(bodies of other media types, unknown parameters, credentials, repeated operations).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from .spec import Spec
from .transport import AdapterError, Client, Response

#: The environment variables the harness sets for the adapter in HTTP mode.
URL_VARIABLE = "CONVEYOR_CONFORMANCE_HTTP"
TOKEN_VARIABLE = "CONVEYOR_CONFORMANCE_HTTP_TOKEN"

#: HTTP-008: the status of each spec error code.
STATUS_OF_CODE = {
    "invalid_request": 400,
    "invalid_payload": 400,
    "unknown_type": 400,
    "unknown_dependency": 400,
    "priority_not_allowed": 400,
    "not_found": 404,
    "invalid_transition": 409,
    "stale_lease": 409,
    "batch_closed": 409,
    "payload_too_large": 413,
}

#: Protocol commands the binding covers.
BINDING_COMMANDS = frozenset(
    {
        "publish",
        "get",
        "list",
        "cancel",
        "retry",
        "requeue",
        "pause_queue",
        "resume_queue",
        "paused_queues",
    }
)

#: Jobs per page when a protocol ``list`` is read through the binding: small, so that the
#: vectors' listings cross page boundaries and exercise ``after`` and ``next_after``.
DEFAULT_PAGE_SIZE = 3


def _has_unique_key(cmd: str, args: dict[str, Any]) -> bool:
    """A publish with a unique key (UKEY-004) goes through the protocol: the binding's answer
    carries a job, with no mark of a conflict and nothing when the holder was pruned."""
    job = args.get("job")
    return cmd == "publish" and isinstance(job, dict) and job.get("uniqueness") is not None


def free_url() -> str:
    """A base URL on a loopback port that is free now, for an adapter that serves the binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def adapter_env(url: str, token: str | None) -> dict[str, str]:
    """What the adapter process learns of the binding: where to serve it, and the token."""
    env = {URL_VARIABLE: url}
    if token:
        env[TOKEN_VARIABLE] = token
    return env


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (lower-case names) and the parsed JSON body."""

    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Traffic:
    """Per HTTP requirement: how many exchanges checked it, and what broke it."""

    checked: Counter[str] = field(default_factory=Counter)
    broken: dict[str, list[str]] = field(default_factory=dict)

    def expect(self, requirement: str, holds: bool, problem: str) -> bool:
        self.checked[requirement] += 1
        if not holds:
            self.broken.setdefault(requirement, []).append(problem)
        return holds


class Http:
    """A keep-alive HTTP/1.1 connection to the binding's base URL."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--http needs an http:// or https:// base URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.base_path = parts.path.rstrip("/")
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        self.token = token
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = kind(self.netloc, timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        query: list[tuple[str, str]] | None = None,
        token: str | bool | None = True,
    ) -> Answer:
        """Send one request (``token``: True for the configured one, a string for another,
        None or False for none); a transport failure raises AdapterError (HTTP-001)."""
        target = self.base_path + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if raw is None and body is not None:
            raw = _encode(body)
        if raw is not None and content_type is not None:
            headers["Content-Type"] = content_type
        bearer = self.token if token is True else token or None
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        for attempt in (1, 2):  # a kept-alive connection the server closed is opened again
            connection = self._connect()
            try:
                connection.request(method, target, body=raw, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if attempt == 2:
                    raise AdapterError(
                        "HTTP-001", f"{method} {self.url(path)} failed: {error}"
                    ) from None
                continue
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return Answer(response.status, answer_headers, parsed, data)
        raise AssertionError("unreachable")


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (LIMIT-007) travels as a JSON escape
        return json.dumps(value).encode("ascii")


def segment(value: Any) -> str:
    """A job id or queue name as one path segment."""
    return quote(str(value), safe="")


class HttpClient(Client):
    """An adapter client that sends the binding's commands over HTTP (see the module doc)."""

    def __init__(
        self,
        command: str,
        *,
        http_url: str,
        http_token: str | None = None,
        spec: Spec,
        page_size: int = DEFAULT_PAGE_SIZE,
        traffic: Traffic | None = None,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        """``settings`` are those of :class:`Client` (timeout, protocol, validate, ...)."""
        super().__init__(
            command, env={**(env or {}), **adapter_env(http_url, http_token)}, **settings
        )
        self.http = Http(http_url, http_token, self.timeout)
        self.spec = spec
        self.page_size = page_size
        self.traffic = traffic if traffic is not None else Traffic()
        self.error_codes = error_codes(spec)

    def close(self) -> None:
        self.http.close()
        super().close()

    def kill(self) -> None:
        self.http.close()
        super().kill()

    def call(self, cmd: str, **args: Any) -> Response:
        if cmd not in BINDING_COMMANDS or _has_unique_key(cmd, args):
            return super().call(cmd, **args)
        self.requests += 1
        translate: Callable[[dict[str, Any]], Response] = getattr(self, f"_{cmd}")
        response = translate(args)
        if self.validate and self.protocol is not None and response.kind == "result":
            problems = self.protocol.check_response(cmd, {"seq": 0, response.kind: response.value})
            if problems:
                raise AdapterError(
                    "PROTO-004",
                    f"the {cmd} result read through HTTP breaks the protocol schema: "
                    f"{'; '.join(problems[:5])}",
                )
        return response

    # -- checks of every exchange ------------------------------------------------------------

    def _document(self, answer: Answer, definition: str, what: str) -> bool:
        """HTTP-001, HTTP-002: a JSON document of the binding's schema, as application/json."""
        kind = (answer.header("content-type") or "").split(";")[0].strip().lower()
        self.traffic.expect(
            "HTTP-002",
            kind == "application/json",
            f"{what}: Content-Type is {answer.header('content-type')!r}, not application/json",
        )
        errors = sorted(
            self.spec.validator("http", f"/$defs/{definition}").iter_errors(answer.body),
            key=lambda e: list(e.absolute_path),
        )
        problem = "; ".join(
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in errors[:3]
        )
        return self.traffic.expect(
            "HTTP-001", not errors, f"{what}: the body is no {definition}: {problem}"
        )

    def _answer(self, answer: Answer, success: int, definition: str, what: str) -> Response | None:
        """The error response for a refusal, checked (HTTP-008, HTTP-009); None on success."""
        if answer.status == success:
            self.traffic.expect("HTTP-001", True, "")
            return None
        if 200 <= answer.status < 300:
            self.traffic.expect(
                "HTTP-001", False, f"{what}: status {answer.status}, the binding says {success}"
            )
            return None
        self._document(answer, "error_response", what)
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if code in self.error_codes:
            expected = STATUS_OF_CODE.get(code)
            self.traffic.expect(
                "HTTP-008",
                answer.status == expected,
                f"{what}: {code} came with status {answer.status}, the binding says {expected}",
            )
            assert isinstance(error, dict)
            return Response("error", {"code": code, "message": str(error.get("message", ""))})
        detail = answer.raw[:300].decode("utf-8", "replace")
        return Response(
            "errored",
            {
                "message": f"{what}: status {answer.status} without a spec error code "
                f"(HTTP-009: not a refusal by the spec's rules): {detail}"
            },
        )

    def _job(self, answer: Answer, success: int, what: str) -> Response:
        refused = self._answer(answer, success, "job_response", what)
        if refused is not None:
            return refused
        if not self._document(answer, "job_response", what):
            return Response("errored", {"message": f"{what}: the answer is no job_response"})
        return Response("result", {"job": answer.body["job"]})

    # -- the commands -------------------------------------------------------------------------

    def _publish(self, args: dict[str, Any]) -> Response:
        answer = self.http.request("POST", "/jobs", body=args["job"])
        response = self._job(answer, 201, "POST /jobs")
        if response.ok:
            job_id = response.value["job"]["id"]
            location = answer.header("location")
            expected = self.http.url(f"/jobs/{segment(job_id)}")
            resolved = urljoin(self.http.url("/jobs"), location) if location else None
            self.traffic.expect(
                "HTTP-003",
                resolved == expected,
                f"POST /jobs: Location is {location!r}, expected a reference to {expected}",
            )
        return response

    def _get(self, args: dict[str, Any]) -> Response:
        answer = self.http.request("GET", f"/jobs/{segment(args['job'])}")
        response = self._job(answer, 200, "GET /jobs/{id}")
        if response.ok or response.code == "not_found":
            self.traffic.expect("HTTP-004", True, "")
        return response

    def _list(self, args: dict[str, Any]) -> Response:
        wanted = int(args.get("limit", 1000))
        query: list[tuple[str, str]] = [("state", state) for state in args.get("states") or ()]
        for name in ("queue", "tag", "identifier", "batch"):
            if args.get(name) is not None:
                query.append((name, str(args[name])))
        after = args.get("after")
        jobs: list[Any] = []
        while len(jobs) < wanted:
            limit = min(self.page_size, wanted - len(jobs))
            page_query = [*query, ("limit", str(limit))]
            if after is not None:
                page_query.append(("after", str(after)))
            answer = self.http.request("GET", "/jobs", query=page_query)
            refused = self._answer(answer, 200, "job_page", "GET /jobs")
            if refused is not None:
                return refused
            if not self._document(answer, "job_page", "GET /jobs"):
                return Response("errored", {"message": "GET /jobs: the answer is no job_page"})
            page, next_after = answer.body["jobs"], answer.body["next_after"]
            self.traffic.expect(
                "HTTP-005",
                len(page) <= limit,
                f"GET /jobs: {len(page)} jobs in a page of limit {limit}",
            )
            jobs.extend(page)
            if next_after is None:
                break
            self.traffic.expect(
                "HTTP-005",
                bool(page) and next_after == page[-1]["id"],
                f"GET /jobs: next_after {next_after!r} is not the page's last job",
            )
            after = next_after
        sequences = [job.get("sequence", 0) for job in jobs]
        self.traffic.expect(
            "HTTP-005",
            sequences == sorted(sequences) and len(set(sequences)) == len(sequences),
            "GET /jobs: the pages together are not in ascending sequence",
        )
        return Response("result", {"jobs": jobs[:wanted]})

    def _operation(self, name: str, args: dict[str, Any]) -> Response:
        answer = self.http.request("POST", f"/jobs/{segment(args['job'])}/{name}", body={})
        response = self._job(answer, 200, f"POST /jobs/{{id}}/{name}")
        self.traffic.expect("HTTP-006", True, "")
        return response

    def _cancel(self, args: dict[str, Any]) -> Response:
        return self._operation("cancel", args)

    def _retry(self, args: dict[str, Any]) -> Response:
        return self._operation("retry", args)

    def _requeue(self, args: dict[str, Any]) -> Response:
        return self._operation("requeue", args)

    def _pause(self, name: str, args: dict[str, Any]) -> Response:
        what = f"POST /queues/{{queue}}/{name}"
        answer = self.http.request("POST", f"/queues/{segment(args['queue'])}/{name}", body={})
        refused = self._answer(answer, 200, "pause_response", what)
        if refused is not None:
            return refused
        if not self._document(answer, "pause_response", what):
            return Response("errored", {"message": f"{what}: the answer is no pause_response"})
        body = answer.body
        self.traffic.expect(
            "HTTP-007",
            body["queue"] == args["queue"] and body["paused"] is (name == "pause"),
            f"{what}: answered {body}, for queue {args['queue']!r}",
        )
        return Response("result", {"changed": body["changed"]})

    def _pause_queue(self, args: dict[str, Any]) -> Response:
        return self._pause("pause", args)

    def _resume_queue(self, args: dict[str, Any]) -> Response:
        return self._pause("resume", args)

    def _paused_queues(self, args: dict[str, Any]) -> Response:
        answer = self.http.request("GET", "/queues")
        refused = self._answer(answer, 200, "queue_list", "GET /queues")
        if refused is not None:
            return refused
        if not self._document(answer, "queue_list", "GET /queues"):
            return Response("errored", {"message": "GET /queues: the answer is no queue_list"})
        paused = [q for q in answer.body["queues"] if q["paused"]]
        names = [q["queue"] for q in paused]
        self.traffic.expect(
            "HTTP-007",
            names == sorted(names) and all(q["paused_at"] is not None for q in paused),
            f"GET /queues: paused queues {names} are not in order of name, each with paused_at",
        )
        return Response(
            "result",
            {"queues": [{"queue": q["queue"], "paused_at": q["paused_at"]} for q in paused]},
        )


def error_codes(spec: Spec) -> set[str]:
    """The spec's error codes (error.schema.json), which HTTP-008 maps to statuses."""
    document = json.loads((spec.root / "schemas" / "error.schema.json").read_text("utf-8"))
    return set(document["$defs"]["error_code"]["enum"])


@dataclass
class HttpMode:
    """The run's HTTP mode: its base URL and token, and the traffic of every client it made
    (a restarted adapter gets a new client; the traffic adds up over the run)."""

    url: str
    token: str | None
    spec: Spec
    traffic: Traffic = field(default_factory=Traffic)

    @classmethod
    def of(cls, url: str, token: str | None, spec: Spec) -> HttpMode:
        return cls(free_url() if url == "auto" else url, token or None, spec)

    def client(self, command: str, **settings: Any) -> HttpClient:
        return HttpClient(
            command,
            http_url=self.url,
            http_token=self.token,
            spec=self.spec,
            traffic=self.traffic,
            **settings,
        )

    def claim(self, handshake: dict[str, Any]) -> dict[str, Any]:
        """The handshake as the report reads it: a run in HTTP mode tests the feature
        ``http`` (the protocol's handshake has no member for it)."""
        features = list(handshake.get("features", []))
        return {
            **handshake,
            "features": [*features, "http"] if "http" not in features else features,
        }

    def checks(self, client: Client) -> list[Any]:
        """The binding's own checks, then the check of the run's translated traffic."""
        from .http_checks import run_checks, traffic_check

        assert isinstance(client, HttpClient)
        return [*run_checks(client), traffic_check(client)]
