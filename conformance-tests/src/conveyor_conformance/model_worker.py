"""Worker mode for the model adapter: a worker loop over the protocol's own claim and report.

It shows how small worker mode is for an adapter whose implementation has no worker of its own
to run: claim one job, run its requests in order through the scripted handlers, report each
outcome under the lease, and stop after a die. An implementation with a worker runs that worker
instead, as the reference library's adapter does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Json = dict[str, Any]
#: ``call(cmd, args)``: the adapter's own answer to a request, ``{"result": ...}`` or
#: ``{"error": ...}``.
Call = Callable[[str, Json], Json]

SUCCEED: Json = {"do": "succeed"}
RESULT_REFUSALS = ("invalid_payload", "payload_too_large")


def _error(kind: str, behaviour: Json) -> Json:
    return {"kind": kind, "message": behaviour.get("message") or f"scripted {behaviour['do']}"}


def outcome_of(behaviour: Json, job: Json) -> Json:
    """The outcome a handler following ``behaviour`` produces for ``job``'s current request."""
    do = behaviour["do"]
    if do == "succeed":
        return {"kind": "success", "result": behaviour.get("result")}
    if do in ("fail_temporarily", "raise"):
        outcome: Json = {"kind": "temporary", "error": _error("temporary", behaviour)}
        if do == "fail_temporarily" and behaviour.get("retry_after_ms") is not None:
            outcome["retry_after_ms"] = behaviour["retry_after_ms"]
        return outcome
    if do == "fail_permanently":
        return {"kind": "permanent", "error": _error("permanent", behaviour)}
    if do == "wait":
        waiting: Json = {"kind": "waiting"}
        if behaviour.get("delay_ms") is not None:
            waiting["delay_ms"] = behaviour["delay_ms"]
        return waiting
    if do == "die":
        cause = behaviour.get("cause")
        died: Json = {"kind": "die", "error": _error(cause or "permanent", behaviour)}
        if cause is not None:
            died["cause"] = cause
        return died
    if do == "block":  # the model takes no time: the block outlasts a shorter timeout
        timeout = job.get("timeout_ms")
        if timeout is not None and timeout <= behaviour["ms"]:
            return {"kind": "timeout", "error": {"kind": "timeout", "message": "timed out"}}
        return {"kind": "success"}
    raise ValueError(f"unknown behaviour {do!r}")


class ScriptedWorker:
    """``script_handlers`` and ``run_worker`` over an adapter's ``claim`` and ``report``."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.registered: set[str] = set()
        self.scripts: dict[str, list[Json]] = {}
        self.calls: dict[str, int] = {}

    def reset(self, handlers: list[Json]) -> None:
        self.registered = {handler["type"] for handler in handlers}
        self.script({})

    def script(self, scripts: dict[str, list[Json]]) -> Json:
        self.scripts = {name: list(steps) for name, steps in scripts.items()}
        self.calls = {}
        return {}

    def run(self, request: Json) -> Json:
        handlers = set(self.registered)
        if request.get("handlers") is not None:
            handlers &= set(request["handlers"])
        claim: Json = {"worker_id": request["worker_id"], "lease_ms": request["lease_ms"]}
        if request.get("queues"):
            claim["queues"] = request["queues"]
        self.call("rescue", {})  # a worker looks for expired leases as it starts (LEASE-008)
        ran: list[Json] = []
        limit = request.get("max_jobs")
        taken = 0
        while limit is None or taken < limit:
            jobs = self.call("claim", claim)["result"]["jobs"]
            if not jobs:
                return {"stopped": "idle", "ran": ran}
            taken += 1
            if self._perform(jobs[0], handlers, ran):
                return {"stopped": "died", "ran": ran}
        return {"stopped": "max_jobs", "ran": ran}

    def _behaviour(self, name: str) -> Json:
        index = self.calls.get(name, 0)
        self.calls[name] = index + 1
        steps = self.scripts.get(name) or [SUCCEED]
        return steps[min(index, len(steps) - 1)]

    def _perform(self, job: Json, handlers: set[str], ran: list[Json]) -> bool:
        """Run the job's requests from the current one; True when a handler asked to die."""
        token = job["lease"]["token"]
        requests = job["requests"]
        index = next(i for i, r in enumerate(requests) if r["state"] != "succeeded")
        while True:
            name = requests[index]["type"]
            if name not in handlers:  # OUT-003: no handler is a permanent error
                outcome: Json = {
                    "kind": "permanent",
                    "error": {"kind": "permanent", "message": f"no handler for {name}"},
                }
            else:
                behaviour = self._behaviour(name)
                ran.append(
                    {
                        "job": job["id"],
                        "type": name,
                        "request": index,
                        "attempt": job["attempts"],
                        "do": behaviour["do"],
                    }
                )
                outcome = outcome_of(behaviour, job)
            last = index == len(requests) - 1
            if outcome.get("result") is None or not last:
                outcome.pop("result", None)  # only the last request's value is kept
            answer = self._report(job["id"], token, outcome)
            if outcome["kind"] != "success" or last:
                return bool(outcome["kind"] == "die")
            job = answer
            index += 1

    def _report(self, job_id: str, token: int, outcome: Json) -> Json:
        args = {"job": job_id, "lease_token": token, "outcome": outcome}
        answer = self.call("report", args)
        if "error" in answer and answer["error"]["code"] in RESULT_REFUSALS:
            # RESULT-002: a result that cannot be reported becomes a permanent error.
            problem = f"the result cannot be stored: {answer['error']['code']}"
            args["outcome"] = {
                "kind": "permanent",
                "error": {"kind": "permanent", "message": problem},
            }
            answer = self.call("report", args)
        job: Json = answer["result"]["job"]
        return job
