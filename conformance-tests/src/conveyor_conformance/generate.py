"""Vectors generated from the machine file: every (state, event) pair of the job machine.

For each state, a short setup reaches it through the protocol; then each event is fired through
the command that fires it, and the expected result, a transition or a refusal that changes
nothing, comes from the model, which reads ``machines/job.json``. The output is deterministic
and committed (``vectors/transitions.json``); the suite's tests check that it is up to date:
regenerate it with ``conveyor-conformance generate`` after changing the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import paths, timefmt
from .model import Model
from .spec import Spec
from .vectors import DEFAULT_HANDLERS

FILE = "transitions.json"
JOB = {"$job": "a"}
RETRYING = {
    "backoff": "constant",
    "initial_delay_ms": 1000,
    "max_delay_ms": 1000,
    "max_attempts": 3,
}
LAST_TRY = {
    "backoff": "constant",
    "initial_delay_ms": 1000,
    "max_delay_ms": 1000,
    "max_attempts": 1,
}
LEASE_MS = 30000
ERRORS = {
    "dependency_failed": {"kind": "dependency_failed", "message": "a dependency failed"},
    "broker_publish_failed": {"kind": "broker", "message": "the broker did not confirm"},
}
EVENT_FEATURES = {"broker_publish_failed": "broker", "return_to_broker": "broker"}
OPERATOR_COMMANDS = {"cancel", "requeue", "retry"}
REPORTS = {
    "succeed": {"kind": "success"},
    "fail_temporarily": {"kind": "temporary", "error": {"kind": "temporary", "message": "boom"}},
    "fail_permanently": {"kind": "permanent", "error": {"kind": "permanent", "message": "boom"}},
    "wait": {"kind": "waiting"},
    "confirm_cancel": {"kind": "cancelled"},
}


def _publish(policy: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"requests": [{"type": "work"}], "retry_policy": policy or RETRYING}
    job.update(options)
    return {"cmd": "publish", "job": job, "bind": "a"}


def _claim(**extra: Any) -> dict[str, Any]:
    return {"cmd": "claim", "worker_id": "w1", "lease_ms": LEASE_MS, **extra}


def _report(kind: str, token: int = 1) -> dict[str, Any]:
    outcome: dict[str, Any] = {"kind": kind}
    if kind in ("temporary", "permanent"):
        outcome["error"] = {"kind": kind, "message": "setup"}
    return {"cmd": "report", "job": JOB, "lease_token": token, "outcome": outcome}


# state -> (setup steps, features, capabilities, variant name, policy note)
VARIANT_EVENTS = {
    "last-attempt": ["fail_temporarily"],
    "lease-expired": ["lease_expired", "heartbeat", "succeed"],
    "lease-expired-last-attempt": ["lease_expired"],
    "more-requests": ["succeed"],
    "cancel-requested": [
        "cancel",
        "heartbeat",
        "succeed",
        "fail_temporarily",
        "fail_permanently",
        "wait",
        "confirm_cancel",
    ],
    "cancel-requested-more-requests": ["succeed"],
    "cancel-requested-lease-expired": ["lease_expired"],
}
CANCEL = {"cmd": "cancel", "job": JOB}


def setups() -> list[tuple[str, str, list[dict[str, Any]], list[str], list[str]]]:
    """(state, variant, steps, features, capabilities) for every state reachable by protocol.

    A variant reaches the same state with other guard inputs; it is paired only with the
    events whose guards it changes (VARIANT_EVENTS).
    """
    advance = {"cmd": "clock_advance", "ms": 1000}
    return [
        ("ready", "", [_publish()], [], []),
        ("processing", "", [_publish(), _claim()], [], []),
        ("processing", "last-attempt", [_publish(LAST_TRY), _claim()], [], []),
        (
            "processing",
            "lease-expired",
            [_publish(), _claim(), {"cmd": "clock_advance", "ms": LEASE_MS}],
            [],
            [],
        ),
        (
            "processing",
            "lease-expired-last-attempt",
            [_publish(LAST_TRY), _claim(), {"cmd": "clock_advance", "ms": LEASE_MS}],
            [],
            [],
        ),
        (
            "processing",
            "more-requests",
            [_publish(requests=[{"type": "work"}, {"type": "work"}]), _claim()],
            ["multi_request"],
            [],
        ),
        ("processing", "cancel-requested", [_publish(), _claim(), CANCEL], ["cancel_running"], []),
        (
            "processing",
            "cancel-requested-more-requests",
            [_publish(requests=[{"type": "work"}, {"type": "work"}]), _claim(), CANCEL],
            ["cancel_running", "multi_request"],
            [],
        ),
        (
            "processing",
            "cancel-requested-lease-expired",
            [_publish(), _claim(), CANCEL, {"cmd": "clock_advance", "ms": LEASE_MS}],
            ["cancel_running"],
            [],
        ),
        ("temporarily_failed", "", [_publish(), _claim(), _report("temporary"), advance], [], []),
        ("waiting", "", [_publish(), _claim(), _report("waiting"), advance], [], []),
        ("finished", "", [_publish(), _claim(), _report("success")], [], []),
        ("permanently_failed", "", [_publish(), _claim(), _report("permanent")], [], []),
        ("cancelled", "", [_publish(), {"cmd": "cancel", "job": JOB}], [], []),
        (
            "redundant",
            "",
            [
                {
                    "cmd": "publish",
                    "job": {"requests": [{"type": "work"}], "unique": True, "identifier": "k"},
                    "bind": "first",
                },
                _claim(),
                {
                    "cmd": "report",
                    "job": {"$job": "first"},
                    "lease_token": 1,
                    "outcome": {"kind": "success"},
                },
                _publish(unique=True, identifier="k"),
                _claim(),
            ],
            ["unique"],
            [],
        ),
        (
            "broker_failed",
            "",
            [
                _publish(),
                {
                    "cmd": "fire",
                    "job": JOB,
                    "event": "broker_publish_failed",
                    "params": {"error": ERRORS["broker_publish_failed"]},
                },
            ],
            ["broker"],
            ["fire"],
        ),
        (
            "back_to_broker",
            "",
            [
                _publish(),
                _claim(),
                _report("permanent"),
                {"cmd": "fire", "job": JOB, "event": "return_to_broker", "params": {}},
            ],
            ["broker"],
            ["fire"],
        ),
    ]


def event_step(event: str, token: int) -> tuple[dict[str, Any], list[str]] | None:
    """The step that fires ``event`` on job a, and the capabilities it needs."""
    if event == "discard_redundant":
        return None  # fired only inside a claim (covered by the unique vectors)
    if event == "claim":
        return {"cmd": "claim", "worker_id": "w2", "lease_ms": LEASE_MS, "job": JOB}, [
            "claim_by_id"
        ]
    if event in REPORTS:
        return {"cmd": "report", "job": JOB, "lease_token": token, "outcome": REPORTS[event]}, []
    if event == "heartbeat":
        return {"cmd": "heartbeat", "job": JOB, "lease_token": token, "lease_ms": 60000}, []
    if event in OPERATOR_COMMANDS:
        return {"cmd": event, "job": JOB}, []
    params = {"error": ERRORS[event]} if event in ERRORS else {}
    return {"cmd": "fire", "job": JOB, "event": event, "params": params}, ["fire"]


def _partial(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("state", "attempts", "lease_token", "available_at", "finished_at")
    partial = {"id": JOB, **{k: job[k] for k in keys}}
    partial["lease"] = None if job["lease"] is None else {"token": job["lease"]["token"]}
    if "cancel_requested_at" in job:
        partial["cancel_requested_at"] = job["cancel_requested_at"]
    return partial


def build(spec: Spec) -> dict[str, Any]:
    machine = spec.machines["job"]
    events = list(machine["events"])
    all_features = set(spec.features)
    vectors = []
    for state, variant, setup, features, capabilities in setups():
        for event in VARIANT_EVENTS.get(variant, events):
            model = Model(spec, all_features)
            model.reset(DEFAULT_HANDLERS, timefmt.DEFAULT_START)
            aliases: dict[str, str] = {}
            for counter, step in enumerate(setup, start=1):
                args = _substitute({k: v for k, v in step.items() if k != "bind"}, aliases)
                prediction = model.execute(args.pop("cmd"), args, new_ids=[f"id{counter}"])
                if prediction.error is not None:
                    raise RuntimeError(f"setup of {state} failed: {prediction.error.message}")
                if "bind" in step:
                    aliases[step["bind"]] = f"id{counter}"
            job = model.jobs[aliases["a"]]
            if job.state != state:
                raise RuntimeError(f"the setup for {state} reached {job.state}")
            fired = event_step(event, job.lease_token)
            if fired is None:
                continue
            step, needs = fired
            args = _substitute(dict(step), aliases)
            cmd = args.pop("cmd")
            prediction = model.execute(cmd, args, new_ids=["id-new"])
            expected = dict(step)
            if prediction.error is not None:
                expected["expect"] = {"error": prediction.error.code}
                expected["unchanged"] = ["a"]
                requirements = [prediction.error.req]
                outcome = f"is refused with {prediction.error.code}"
            elif cmd == "claim":
                claimed = prediction.result["jobs"] if prediction.result else []
                if claimed:
                    expected["expect"] = {"result": {"jobs": [_partial(claimed[0])]}}
                    outcome = "fires J01: processing"
                    requirements = ["CLAIM-001"]
                else:
                    expected["expect"] = {"result": {"jobs": []}}
                    expected["unchanged"] = ["a"]
                    outcome = "takes nothing and changes nothing"
                    requirements = [
                        "CLAIM-001",
                        "BROKER-011" if "broker" in features else "MACH-006",
                    ]
                    if requirements[1] == "BROKER-011":
                        requirements = ["CLAIM-001"]
            else:
                assert prediction.result is not None
                after = prediction.result["job"]
                expected["expect"] = {"result": {"job": _partial(after)}}
                transition = next(
                    t
                    for t in machine["transitions"]
                    if t["event"] == event and state in t["from"] and t["to"] == after["state"]
                )
                requirements = [transition["req"]]
                outcome = f"fires {transition['id']}: {after['state']}"
            needed = sorted(
                set(features)
                | ({EVENT_FEATURES[event]} if event in EVENT_FEATURES else set())
                | ({"cancel_running"} if (state, event) == ("processing", "cancel") else set())
            )
            name = f"transition-{state}-{event}".replace("_", "-")
            if variant:
                name += f"-{variant}"
            where = state + (f" ({variant.replace('-', ' ')})" if variant else "")
            vector: dict[str, Any] = {
                "id": name,
                "description": f"{event} on a job in {where} {outcome}.",
                "requirements": sorted(set(requirements)),
            }
            if needed:
                vector["features"] = needed
            requires = sorted(set(capabilities) | set(needs))
            if requires:
                vector["requires"] = requires
            vector["steps"] = [*setup, expected]
            vectors.append(vector)
    return {
        "$schema": "./vector.schema.json",
        "specversion": spec.wire_version,
        "title": "Transitions of the job machine",
        "description": (
            "Generated from machines/job.json by `conveyor-conformance generate`; do not edit. "
            "For every state reachable through the protocol and every event, the event is fired "
            "through the command that fires it and the vector expects the transition the machine "
            "selects, or a refusal that changes nothing. discard_redundant is fired only by "
            "claims (see unique.json); broker states and events need the broker feature."
        ),
        "origin": "generated",
        "vectors": vectors,
    }


def _substitute(value: Any, aliases: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$job"}:
            return aliases[value["$job"]]
        return {k: _substitute(v, aliases) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, aliases) for v in value]
    return value


def render(spec: Spec) -> str:
    return json.dumps(build(spec), indent=2, ensure_ascii=False) + "\n"


def write_all(spec: Spec, out: Path | None = None) -> list[Path]:
    directory = out or paths.vectors_dir()
    path = directory / FILE
    path.write_text(render(spec), encoding="utf-8")
    return [path]
