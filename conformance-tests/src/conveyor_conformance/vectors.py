"""Vectors: JSON command traces with expected partial results, and the runner that replays them.

A vector file holds ``vectors``; each vector is a list of ``steps``. A step is a protocol request
written flat (``{"cmd": "claim", "worker_id": "w1", "lease_ms": 30000}``) plus these members:

- ``expect``: ``{"result": <pattern>}`` (matched as :mod:`conveyor_conformance.matching` says),
  ``{"error": "<code>"}``, or ``{"any_of": [<expectation>, ...]}`` where the spec allows several
  outcomes (a MAY, or a SHOULD); without ``expect`` the step must simply succeed;
- ``should``: the outcome the spec recommends (SHOULD) among those ``expect`` allows; when the
  implementation departs from it, the step still passes and the report lists the departure;
- ``bind``: names the ids a step returns: ``"a"`` (the job or batch it returns, or the first job
  of a list), ``["a", "b"]`` (the jobs of a list, in order) or ``{"a": "jobs.1.id"}`` (a path);
- ``unchanged``: aliases of jobs the step must leave exactly as they were (ERR-002, MACH-006);
- ``req``: the requirement IDs this step checks, when narrower than the vector's;
- ``note``: a sentence for the human reader.

Ids are never written literally: ``{"$job": "a"}`` stands for the id bound to ``a`` (and
``{"$batch": "b"}`` for a batch), in requests and in expectations alike. In requests,
``{"$repeat": ["ab", 3]}`` stands for the string ``"ababab"``, so that large payloads stay small
in the file, and ``{"$nest": [1, 3]}`` for ``[[[1]]]``, so that deep ones stay readable (in
expectations, ``$nest`` is a matcher). Each vector starts with ``reset`` (its ``handlers``, or the
default ones, and its ``priorities`` when it restricts them) and the clock at ``start``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from . import paths, timefmt
from .matching import match
from .transport import AdapterError, Client, Response

STEP_KEYS = {"cmd", "expect", "should", "bind", "unchanged", "req", "note"}

#: Commands before which the runner sends ``barrier``, so that an implementation with
#: asynchronous parts shows every effect of the earlier steps (a no-op for the others).
BARRIER_BEFORE = {
    "claim",
    "get",
    "list",
    "rescue",
    "unfinished_identifiers",
    "clear_finished",
    "paused_queues",
}

#: Handlers registered by every vector and stateful example that names none.
DEFAULT_HANDLERS: list[dict[str, Any]] = [
    {"type": "work", "queue": "default", "priority": 100, "retry_policy": "exponential"},
    {"type": "mail", "queue": "mail", "priority": 50, "retry_policy": "progressive"},
]


@dataclass
class Vector:
    id: str
    description: str
    requirements: list[str]
    steps: list[dict[str, Any]]
    features: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    unless_features: list[str] = field(default_factory=list)
    handlers: list[dict[str, Any]] | None = None
    priorities: list[int] | None = None
    start: str = timefmt.DEFAULT_START
    file: str = ""
    origin: str = "hand-written"


@dataclass
class CheckResult:
    """One check of the report: a vector, or a run of the stateful suite."""

    id: str
    kind: str  # vector or stateful
    status: str  # pass, fail, skip or error
    requirements: list[str]
    failed_requirements: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)  # capabilities the check used
    message: str = ""
    file: str = ""
    duration_ms: int = 0
    trace: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class StepFailure(Exception):
    def __init__(self, index: int, message: str, requirements: list[str]) -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.requirements = requirements


class AdapterSkipped(Exception):
    pass


def vector_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (paths.vectors_dir() / "vector.schema.json").read_text("utf-8")
    )
    return schema


def validate_file(path: Path) -> list[str]:
    """Problems of one vector file against vector.schema.json."""
    document = json.loads(path.read_text("utf-8"))
    validator = Draft202012Validator(vector_schema())
    return [
        f"{path.name}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def load(directory: Path | None = None) -> list[Vector]:
    directory = directory or paths.vectors_dir()
    vectors: list[Vector] = []
    for path in sorted(directory.glob("*.json")):
        if path.name == "vector.schema.json":
            continue
        document = json.loads(path.read_text("utf-8"))
        for item in document["vectors"]:
            vectors.append(
                Vector(
                    id=item["id"],
                    description=item.get("description", ""),
                    requirements=item["requirements"],
                    steps=item["steps"],
                    features=item.get("features", []),
                    requires=item.get("requires", []),
                    unless_features=item.get("unless_features", []),
                    handlers=item.get("handlers"),
                    priorities=item.get("priorities"),
                    start=item.get("start", timefmt.DEFAULT_START),
                    file=path.name,
                    origin=document.get("origin", "hand-written"),
                )
            )
    return vectors


class Aliases:
    def __init__(self) -> None:
        self.ids: dict[str, dict[str, str]] = {"job": {}, "batch": {}}

    def resolve(self, kind: str, name: str) -> str:
        try:
            return self.ids[kind][name]
        except KeyError:
            raise StepFailure(
                -1, f"the vector uses {kind} alias {name!r} before binding it", []
            ) from None

    def substitute(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1 and "$job" in value:
                return self.resolve("job", value["$job"])
            if len(value) == 1 and "$batch" in value:
                return self.resolve("batch", value["$batch"])
            if len(value) == 1 and "$repeat" in value:
                return repeat(value["$repeat"])
            if len(value) == 1 and "$nest" in value:
                return nest(self.substitute(value["$nest"][0]), value["$nest"][1])
            return {k: self.substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v) for v in value]
        return value


def repeat(argument: Any) -> str:
    """``{"$repeat": [text, count]}``: ``text`` repeated ``count`` times."""
    text, count = argument
    return str(text) * int(count)


def nest(value: Any, depth: Any) -> Any:
    """``{"$nest": [value, depth]}``: ``value`` inside ``depth`` arrays, one in another."""
    for _ in range(int(depth)):
        value = [value]
    return value


def _path(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _bind(step: dict[str, Any], result: dict[str, Any], aliases: Aliases) -> None:
    bind = step.get("bind")
    if bind is None:
        return
    kind = "batch" if step["cmd"].startswith("batch_") else "job"
    if isinstance(bind, str):
        if "job" in result:
            aliases.ids["job"][bind] = result["job"]["id"]
        elif "batch" in result:
            aliases.ids["batch"][bind] = result["batch"]["id"]
        elif result.get("jobs"):
            aliases.ids["job"][bind] = result["jobs"][0]["id"]
        else:
            raise StepFailure(-1, f"nothing to bind to {bind!r}: the result has no job", [])
    elif isinstance(bind, list):
        jobs = result.get("jobs", [])
        if len(jobs) < len(bind):
            raise StepFailure(-1, f"cannot bind {bind}: the result has {len(jobs)} jobs", [])
        for name, job in zip(bind, jobs, strict=False):
            aliases.ids["job"][name] = job["id"]
    else:
        for name, path in bind.items():
            try:
                aliases.ids[kind][name] = _path(result, path)
            except (KeyError, IndexError, TypeError):
                raise StepFailure(
                    -1, f"cannot bind {name!r}: the result has no {path}", []
                ) from None


def describe(response: Response) -> str:
    text = json.dumps({response.kind: response.value}, sort_keys=True)
    return text if len(text) < 600 else text[:597] + "..."


def expectation_problem(expect: dict[str, Any], response: Response, resolve: Any) -> str | None:
    """Why ``response`` does not meet ``expect`` (a result, an error or any_of), or None."""
    if "any_of" in expect:
        problems = [expectation_problem(e, response, resolve) for e in expect["any_of"]]
        if all(problems):
            return (
                "expected one of "
                + " | ".join(json.dumps(e, sort_keys=True)[:200] for e in expect["any_of"])
                + f", got {describe(response)}"
            )
        return None
    if "error" in expect:
        if response.kind != "error" or response.code != expect["error"]:
            return f"expected the error {expect['error']}, got {describe(response)}"
        return None
    if response.kind != "result":
        return f"expected a result, got {describe(response)}"
    if "result" in expect:
        mismatches = match(expect["result"], response.value, "", resolve)
        if mismatches:
            return "; ".join(str(m) for m in mismatches[:6])
    return None


def run_steps(
    client: Client,
    steps: list[dict[str, Any]],
    requirements: list[str],
    aliases: Aliases,
    record: list[dict[str, Any]] | None = None,
    departures: list[dict[str, Any]] | None = None,
) -> None:
    """Replay steps; raise StepFailure at the first that does not match.

    A step that meets its ``expect`` but not its ``should`` is appended to ``departures``.
    """
    for index, step in enumerate(steps):
        reqs = step.get("req") or requirements
        args = aliases.substitute({k: v for k, v in step.items() if k not in STEP_KEYS})
        if step["cmd"] in BARRIER_BEFORE or step.get("unchanged"):
            client.call("barrier")
        before = {}
        for name in step.get("unchanged", []):
            before[name] = client.call("get", job=aliases.resolve("job", name))
        response = client.call(step["cmd"], **args)
        if record is not None:
            record.append({"step": index, "cmd": step["cmd"], response.kind: _brief(response)})
        if response.kind == "skipped":
            raise AdapterSkipped(f"step {index} ({step['cmd']}): {response.value.get('message')}")
        if response.kind == "errored":
            raise StepFailure(
                index,
                f"step {index} ({step['cmd']}): the adapter errored: "
                f"{response.value.get('message')}",
                reqs,
            )
        if response.kind == "result":
            try:
                _bind(step, response.value, aliases)
            except StepFailure as failure:
                if "result" in step.get("expect", {"result": None}):
                    raise StepFailure(
                        index, f"step {index} ({step['cmd']}): {failure}", reqs
                    ) from None
        problem = expectation_problem(step.get("expect", {}), response, aliases.resolve)
        if problem is not None:
            raise StepFailure(index, f"step {index} ({step['cmd']}): {problem}", reqs)
        if "should" in step and departures is not None:
            departed = expectation_problem(step["should"], response, aliases.resolve)
            if departed is not None:
                got = f"the error {response.code}" if response.kind == "error" else "a result"
                departures.append(
                    {
                        "step": index,
                        "requirements": reqs,
                        "message": f"step {index} ({step['cmd']}"
                        + (f", {step['note']}" if step.get("note") else "")
                        + f"): the spec recommends {json.dumps(step['should'], sort_keys=True)}, "
                        f"got {got}",
                    }
                )
        for name, old in before.items():
            new = client.call("get", job=aliases.resolve("job", name))
            if new != old:
                changes = match(old.value, new.value)
                detail = "; ".join(str(m) for m in changes[:4]) or describe(new)
                raise StepFailure(
                    index,
                    f"step {index} ({step['cmd']}): job {name} changed although the step "
                    f"must change nothing: {detail}",
                    [*reqs, "ERR-002"],
                )


def _brief(response: Response) -> Any:
    """A response for the failure trace, without megabytes of payload."""
    text = json.dumps(response.value)
    if len(text) <= 20_000:
        return response.value
    return {"truncated": text[:2000] + f"... ({len(text)} characters)"}


def skip_reason(
    vector: Vector, claimed: set[str], selected: set[str] | None, capabilities: set[str]
) -> str | None:
    missing = [f for f in vector.features if f not in claimed]
    if missing:
        return f"feature not claimed: {', '.join(missing)}"
    if selected is not None:
        excluded = [f for f in vector.features if f not in selected]
        if excluded:
            return f"feature not selected with --features: {', '.join(excluded)}"
    present = [f for f in vector.unless_features if f in claimed]
    if present:
        return f"applies only to implementations that do not claim {', '.join(present)}"
    lacking = [c for c in vector.requires if c not in capabilities]
    if lacking:
        return f"the adapter lacks the optional command(s): {', '.join(lacking)}"
    return None


def _reset(client: Client, vector: Vector, handlers: list[dict[str, Any]]) -> None:
    extra: dict[str, Any] = {}
    if vector.priorities is not None:
        extra["priorities"] = vector.priorities
    reset = client.call("reset", now=vector.start, handlers=handlers, seed=0, **extra)
    if reset.kind == "skipped":
        raise AdapterSkipped(f"reset: {reset.value.get('message')}")
    if not reset.ok:
        raise StepFailure(-1, f"reset failed: {describe(reset)}", ["PROTO-005"])


def run_vector(
    client: Client,
    vector: Vector,
    claimed: set[str],
    capabilities: set[str],
    selected: set[str] | None = None,
) -> CheckResult:
    result = CheckResult(
        id=vector.id,
        kind="vector",
        status="pass",
        requirements=vector.requirements,
        features=vector.features,
        requires=vector.requires,
        file=vector.file,
    )
    reason = skip_reason(vector, claimed, selected, capabilities)
    if reason is not None:
        result.status = "skip"
        result.message = reason
        return result
    started = time.monotonic()
    aliases = Aliases()
    record: list[dict[str, Any]] = []
    departures: list[dict[str, Any]] = []
    handlers = vector.handlers if vector.handlers is not None else DEFAULT_HANDLERS
    try:
        _reset(client, vector, handlers)
        run_steps(client, vector.steps, vector.requirements, aliases, record, departures)
        if departures:
            result.detail["departures"] = departures
    except StepFailure as failure:
        result.status = "fail"
        result.message = failure.message
        result.failed_requirements = failure.requirements or vector.requirements
        result.trace = {"failed_step": failure.index, "responses": record[-3:]}
    except AdapterSkipped as skipped:
        result.status = "skip"
        result.message = f"the adapter skipped {skipped}"
        result.detail["adapter_skip"] = True
    except AdapterError as error:
        result.status = "error"
        result.message = str(error)
        result.failed_requirements = [error.rule]
        result.detail["stderr"] = error.stderr[-2000:]
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def select(vectors: Iterable[Vector], only: str | None) -> list[Vector]:
    if not only:
        return list(vectors)
    needles = [n.strip() for n in only.split(",") if n.strip()]
    return [v for v in vectors if any(n in v.id or n in v.file for n in needles)]
