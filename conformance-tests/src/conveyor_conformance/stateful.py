"""The stateful suite: hypothesis generates operation sequences, runs them against the
implementation through the protocol and checks every response against the model.

Every step compares the implementation's answer with the model's prediction, and after every
step the whole store (``list``) is compared job by job and checked against invariants stated
directly from the spec (one claim per job, serial-group exclusion and order, unique exclusion,
leases, finished_at). When time moves on at the end of an example, every job must reach a
terminal state. A failure is shrunk by hypothesis to a minimal sequence and printed, and saved,
as a vector that any language can replay.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisException
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    invariant,
    precondition,
    rule,
)

from . import timefmt
from .matching import Mismatch, match
from .model import ANY, FIXED_FIELDS, Model, Prediction
from .naming import IdNames
from .spec import Spec
from .transport import AdapterError, Client, Response
from .vectors import DEFAULT_HANDLERS, CheckResult

QUEUES = ["default", "mail", "q2"]
WORKERS = ["w1", "w2", "w3"]
GROUPS = ["g1", "g2"]
IDENTIFIERS = ["i1", "i2", "i3"]
TAGS = ["t1", "t2"]
SUMMARY_KEYS = ("state", "attempts", "lease_token", "available_at", "finished_at")
HOLD_LEASE_MS = 600_000  # a long-running job: ten minutes, renewed by heartbeats or not
DRAIN_ROUNDS = 40
DRAIN_ADVANCE_MS = 2 * 24 * 3600 * 1000  # beyond any delay the generated policies schedule

#: Requirements the invariants check on every snapshot, whatever the model says.
INVARIANT_REQUIREMENTS = [
    # every comparison with the model rests on the machine's semantics and context facts
    "MACH-002",
    "MACH-003",
    "MACH-004",
    "MACH-005",
    "MACH-008",
    "MACH-009",
    "MACH-011",
    "TIME-002",
    "ERR-002",
    "CODEC-001",
    "CLAIM-003",
    "GROUP-001",
    "UNIQ-003",
    "LEASE-002",
    "JOB-010",
    "JOB-007",
    "JOB-005",
    "OPS-006",
    "TIME-003",
    "MACH-001",
    "CLAIM-004",
]


class StatefulFailure(AssertionError):
    def __init__(self, message: str, requirements: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.requirements = requirements


@dataclass
class StatefulOptions:
    seed: int = 0
    max_examples: int = 40
    steps: int = 30
    features: set[str] = field(default_factory=set)
    capabilities: set[str] = field(default_factory=set)
    failures_dir: Path | None = None
    label: str = "adapter"
    drain: bool = True
    shrink: bool = True
    on_example: Callable[[int], None] | None = None  # progress: called as each example starts


@dataclass
class _Context:
    client: Client
    spec: Spec
    options: StatefulOptions
    reconnect: Callable[[], Client] | None
    seen: set[str] = field(default_factory=set)
    validated: set[str] = field(default_factory=set)
    failure: dict[str, Any] | None = None
    examples: int = 0


_CTX: _Context | None = None


def _ctx() -> _Context:
    assert _CTX is not None, "run_stateful sets the context"
    return _CTX


# -- strategies ---------------------------------------------------------------------------------

payloads = st.one_of(
    st.none(),
    st.integers(-1000, 1000),
    st.sampled_from(["", "hello", "ünïcödé"]),
    st.fixed_dictionaries({"n": st.integers(0, 9)}),
)
policies = st.one_of(
    st.sampled_from(["exponential", "progressive"]),
    st.builds(
        lambda backoff, initial, attempts, jitter, notify: {
            "backoff": backoff,
            "initial_delay_ms": initial,
            "max_delay_ms": 8000,
            "max_attempts": attempts,
            "jitter": jitter,
            "notify_after": notify,
        },
        st.sampled_from(["constant", "linear", "exponential"]),
        st.sampled_from([0, 1000, 3000]),
        st.sampled_from([None, 1, 2, 3]),
        st.sampled_from([0, 0, 0, 0.5]),
        st.sampled_from([None, 1, 2]),
    ),
)


# -- the machine --------------------------------------------------------------------------------


class ConformanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ctx = _ctx()
        ctx.examples += 1
        if ctx.options.on_example is not None:
            ctx.options.on_example(ctx.examples)
        self.ctx = ctx
        self.client = ctx.client
        self.features = ctx.options.features
        self.capabilities = ctx.options.capabilities
        self.model = Model(ctx.spec, self.features)
        self.aliases: dict[str, str] = {}  # implementation id -> alias in the trace
        self.names = IdNames()  # the same, for messages, with ~N for unbound ids
        self.pending_bind: dict[str, str] = {}  # alias -> path, of jobs a claim created
        self.batch_aliases: dict[str, str] = {}
        self.trace: list[dict[str, Any]] = []
        self.max_sequence = 0
        self.sequences: dict[str, int] = {}
        self.failed = False
        self.before: Model | None = None
        self._last_why: dict[tuple[str, str], str] = {}
        self._last_req = ""
        self.step(
            "reset",
            {"now": timefmt.DEFAULT_START, "handlers": DEFAULT_HANDLERS, "seed": 0},
        )

    # -- plumbing ---------------------------------------------------------------------------

    def fail(
        self, message: str, requirements: list[str], step: dict[str, Any] | None = None
    ) -> None:
        self.failed = True
        steps = list(self.trace)
        if step is not None:
            steps.append(step)
        self.ctx.failure = {
            "message": message,
            "requirements": requirements,
            "steps": steps,
        }
        raise StatefulFailure(message, requirements)

    def alias(self, job_id: str) -> Any:
        if job_id in self.aliases:
            return {"$job": self.aliases[job_id]}
        if self.model.is_placeholder(job_id):
            # A job the model expects the implementation to create and it has not shown yet:
            # a replay binds whatever new job stands there instead of comparing "~1" literally.
            return {"$new": job_id}
        return job_id

    def name_job(self, job_id: str, alias: str) -> None:
        self.aliases[job_id] = alias
        self.names.bind("job", alias, job_id)

    def n(self, job_id: Any) -> str:
        """A job as the trace names it, for messages."""
        return self.names.job(job_id)

    def _alias_value(self, key: str, value: Any) -> Any:
        if key in ("job", "after") and isinstance(value, str):
            return self.alias(value)
        if key == "batch" and isinstance(value, str) and value in self.batch_aliases:
            return {"$batch": self.batch_aliases[value]}
        return value

    def trace_args(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in args.items():
            shown = value
            if key in ("job", "completion") and isinstance(value, dict):
                shown = self.trace_publish(value)
            elif key == "jobs" and cmd == "publish_bulk":
                shown = [self.trace_publish(v) for v in value]
            out[key] = self._alias_value(key, shown)
        return out

    def trace_publish(self, document: dict[str, Any]) -> dict[str, Any]:
        document = dict(document)
        if "depends_on" in document:
            document["depends_on"] = [self.alias(d) for d in document["depends_on"]]
        if document.get("batch_id") in self.batch_aliases:
            document["batch_id"] = {"$batch": self.batch_aliases[document["batch_id"]]}
        return document

    def summarize(self, document: Any, extra: set[str] = frozenset()) -> Any:
        """A job expectation reduced to the fields a reader needs (plus the wrong ones)."""
        if not isinstance(document, dict) or "state" not in document:
            return document
        summary: dict[str, Any] = {"id": self.alias(document["id"])}
        for key in (*SUMMARY_KEYS, *sorted(extra)):
            if key in document:
                summary[key] = document[key]
        if "lease" in document:
            lease = document["lease"]
            summary["lease"] = None if lease is None else {"token": lease["token"]}
        return summary

    def expectation(self, prediction: Prediction, extra: set[str] = frozenset()) -> dict[str, Any]:
        if prediction.error is not None:
            return {"error": prediction.error.code}
        result = prediction.result or {}
        out: dict[str, Any] = {}
        for key, value in result.items():
            if key == "job":
                out[key] = self.summarize(value, extra)
            elif key == "jobs":
                if isinstance(value, dict) and "$unordered" in value:
                    out[key] = {
                        "$unordered": [self.summarize(v, extra) for v in value["$unordered"]]
                    }
                else:
                    out[key] = [self.summarize(v, extra) for v in value]
            elif key == "batch":
                out[key] = {k: v for k, v in value.items() if k in ("state", "total", "unsettled")}
            elif key == "notifications":
                items = value.get("$unordered", value) if isinstance(value, dict) else value
                out[key] = {
                    "$unordered": [{"kind": n["kind"], "job": self.alias(n["job"])} for n in items]
                }
            else:
                out[key] = value
        return {"result": out}

    def call(self, cmd: str, args: dict[str, Any]) -> Response:
        response = self.client.call(cmd, **args)
        if response.kind == "skipped":
            self.fail(
                f"the adapter skipped {cmd}, which the stateful suite needs: "
                f"{response.value.get('message')}",
                ["PROTO-003"],
            )
        return response

    def step(self, cmd: str, args: dict[str, Any], bind: str | list[str] | None = None) -> Response:
        """Run one command on both sides and compare; record it in the trace."""
        response = self.call(cmd, args)
        new_ids: list[str] = []
        if response.ok:
            if cmd == "publish" and isinstance(response.value.get("job"), dict):
                new_ids = [response.value["job"].get("id", "")]
            elif cmd == "publish_bulk":
                new_ids = [j.get("id", "") for j in response.value.get("jobs", [])]
            elif cmd == "batch_open" and isinstance(response.value.get("batch"), dict):
                new_ids = [response.value["batch"].get("id", "")]
        model_args = {k: v for k, v in args.items() if not (cmd == "reset" and k == "seed")}
        prediction = self.model.execute(cmd, model_args, new_ids=new_ids)
        self.ctx.seen.add(prediction.req)
        self.ctx.seen.update(prediction.why.values())
        self._last_why = prediction.why
        self._last_req = prediction.req
        entry: dict[str, Any] = {"cmd": cmd, **self.trace_args(cmd, args)}
        if cmd == "reset":
            return response
        self.compare(cmd, args, prediction, response, entry)
        if prediction.error is None and new_ids:
            if cmd == "batch_open":
                self.batch_aliases[new_ids[0]] = f"b{len(self.batch_aliases) + 1}"
                entry["bind"] = self.batch_aliases[new_ids[0]]
            else:
                names = []
                for new in new_ids:
                    self.name_job(new, f"j{len(self.aliases) + 1}")
                    names.append(self.aliases[new])
                entry["bind"] = names[0] if cmd == "publish" else names
        if self.pending_bind:
            entry["bind"], self.pending_bind = self.pending_bind, {}
        entry["expect"] = self.expectation(prediction)
        self.trace.append(entry)
        return response

    # -- comparison -------------------------------------------------------------------------

    def compare(
        self,
        cmd: str,
        args: dict[str, Any],
        prediction: Prediction,
        response: Response,
        entry: dict[str, Any],
    ) -> None:
        def failing_entry(extra: set[str] = frozenset()) -> dict[str, Any]:
            failing = dict(entry)
            failing["expect"] = self.expectation(prediction, extra)
            return failing

        if response.kind == "errored":
            self.fail(
                f"{cmd}: the adapter errored: {response.value.get('message')}",
                [prediction.req],
                failing_entry(),
            )
        if prediction.error is not None:
            if response.kind == "error" and response.code in prediction.error.alternatives:
                return
            got = (
                f"the error {response.code}"
                if response.kind == "error"
                else f"a result ({_brief(response.value)})"
            )
            reqs = [prediction.error.req]
            if response.kind == "error":
                reqs.append("ERR-001")
            self.fail(
                f"{cmd}: expected the error {prediction.error.code} ({prediction.error.message}), "
                f"got {got}",
                reqs,
                failing_entry(),
            )
        if response.kind == "error":
            self.fail(
                f"{cmd}: expected a result, got the error {response.code}: "
                f"{response.value.get('message', '')}",
                [prediction.req],
                failing_entry(),
            )
        assert prediction.result is not None
        if cmd == "claim":
            self.check_claim(args, prediction, response, failing_entry)
        for job in _returned_jobs(response.value):
            self.check_document(job, cmd)
        # Accept a jittered delay within its bounds before comparing the documents.
        for job in _returned_jobs(response.value):
            if isinstance(job.get("available_at"), str) and "id" in job:
                self.model.adopt_available_at(job["id"], job["available_at"])
                prediction = _refresh(self.model, prediction)
        mismatches = match(_in_actual_order(prediction.result, response.value), response.value)
        if mismatches:
            reqs, fields = self.attribute(mismatches, prediction, response.value)
            detail = "; ".join(m.describe(self.names) for m in mismatches[:5])
            self.fail(f"{cmd}: {detail}", reqs, failing_entry(fields))

    def attribute(
        self, mismatches: list[Mismatch], prediction: Prediction, actual: dict[str, Any]
    ) -> tuple[list[str], set[str]]:
        reqs: list[str] = []
        fields: set[str] = set()
        for mismatch in mismatches:
            job_id, name = _job_field(mismatch.path, actual)
            fields.add(name)
            req = None
            if job_id is not None:
                req = prediction.why.get((job_id, name))
            if req is None and name in ("requests",) and job_id is not None:
                req = prediction.why.get((job_id, "state"))
            if req is None:
                req = FIXED_FIELDS.get(name) or prediction.req
            if req not in reqs:
                reqs.append(req)
        return reqs, fields - {"", "id"}

    def check_document(self, job: dict[str, Any], cmd: str) -> None:
        key = json.dumps(job, sort_keys=True)
        problems = []
        if key not in self.ctx.validated:
            problems = [e.message for e in self.model.spec.validator("job").iter_errors(job)]
            if len(self.ctx.validated) > 50_000:
                self.ctx.validated.clear()
            self.ctx.validated.add(key)
        if problems:
            self.fail(
                f"{cmd}: a returned job does not validate against job.schema.json: "
                f"{problems[0][:300]}",
                ["JOB-007"],
            )
        job_id = job.get("id")
        sequence = job.get("sequence")
        if job_id in self.sequences:
            if self.sequences[job_id] != sequence:
                self.fail(
                    f"{cmd}: job {self.n(job_id)} changed its sequence from "
                    f"{self.sequences[job_id]} to {sequence}",
                    ["ORDER-002"],
                )
        elif isinstance(sequence, int):
            if sequence <= self.max_sequence:
                self.fail(
                    f"{cmd}: new job {self.n(job_id)} got sequence {sequence}, "
                    f"not above {self.max_sequence}",
                    ["JOB-005"],
                )
            self.sequences[str(job_id)] = sequence
            self.max_sequence = sequence

    def check_claim(
        self,
        args: dict[str, Any],
        prediction: Prediction,
        response: Response,
        failing_entry: Callable[[set[str]], dict[str, Any]],
    ) -> None:
        assert prediction.result is not None
        expected = [j["id"] for j in prediction.result["jobs"]]
        got = [j.get("id") for j in response.value.get("jobs", [])]
        # A job published by this very claim (a batch's completion after a discard) is
        # known to the model by a placeholder until now.
        renamed = False
        for position, (want, have) in enumerate(zip(expected, got, strict=False)):
            if self.model.is_placeholder(want) and have not in self.model.jobs:
                self.model.rename(want, have)
                self.name_job(have, f"j{len(self.aliases) + 1}")
                self.pending_bind[self.aliases[have]] = f"jobs.{position}.id"
                renamed = True
        if renamed:
            expected = [self.model.jobs[i].id if i in self.model.jobs else i for i in got]
            prediction.result["jobs"] = [
                self.model.doc(self.model.jobs[i]) for i in got if i in self.model.jobs
            ]
            expected = [j["id"] for j in prediction.result["jobs"]]
        if expected == got:
            return
        req, why = diagnose_claim(self.before, args, got, expected, self.n)
        self.fail(
            f"claim: expected jobs [{', '.join(map(self.n, expected))}], "
            f"got [{', '.join(map(self.n, got))}]: {why}",
            [req],
            failing_entry(set()),
        )

    # -- snapshot and invariants ------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        if self.failed:
            return
        self.snapshot()

    def snapshot(self) -> list[dict[str, Any]]:
        self.call("barrier", {})
        response = self.call("list", {"limit": 1000})
        if not response.ok:
            self.fail(f"list failed: {_brief(response.value)}", ["OPS-006"])
        jobs = response.value.get("jobs", [])
        sequences = [j.get("sequence") for j in jobs]
        if sequences != sorted(sequences) or len(set(map(str, sequences))) != len(sequences):
            self.fail(f"list is not in ascending sequence: {sequences}", ["OPS-006"])
        self.check_store_invariants(jobs)
        self.bind_new_jobs(jobs)
        expected = {j.id: j for j in self.model.sorted_jobs()}
        actual_ids = [j["id"] for j in jobs]
        missing = [i for i in expected if i not in actual_ids]
        extra = [i for i in actual_ids if i not in expected]
        step = {"cmd": "list", "limit": 1000}
        if missing or extra:
            reqs = [self.model_reason(i) for i in missing] or ["ERR-002"]
            self.fail(
                f"the store holds [{', '.join(map(self.n, actual_ids))}], the model "
                f"[{', '.join(map(self.n, expected))}] (missing "
                f"[{', '.join(map(self.n, missing))}], unexpected "
                f"[{', '.join(map(self.n, extra))}])",
                reqs,
                step | {"expect": {"result": {"jobs": [{"id": self.alias(i)} for i in expected]}}},
            )
        for job in jobs:
            self.check_document(job, "list")
            model_job = expected[job["id"]]
            if isinstance(job.get("available_at"), str):
                self.model.adopt_available_at(job["id"], job["available_at"])
            wanted = self.model.doc(model_job)
            mismatches = match(wanted, job)
            if mismatches:
                fields = {m.path.split(".")[0].split("[")[0] for m in mismatches}
                reqs = [
                    self.last_why.get((job["id"], f)) or FIXED_FIELDS.get(f) or self.last_req
                    for f in sorted(fields)
                ]
                self.fail(
                    f"job {self.n(job['id'])} differs from the model after the last step: "
                    + "; ".join(m.describe(self.names) for m in mismatches[:5]),
                    list(dict.fromkeys(reqs)),
                    step
                    | {
                        "expect": {
                            "result": {"jobs": {"$contains": [self.summarize(wanted, fields)]}}
                        }
                    },
                )
        return jobs

    def model_reason(self, job_id: str) -> str:
        return self.last_why.get((job_id, "id")) or self.last_req

    @property
    def last_req(self) -> str:
        return self._last_req or "MACH-008"

    @property
    def last_why(self) -> dict[tuple[str, str], str]:
        return self._last_why

    def bind_new_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Jobs the implementation published by itself (recurring copies, completions)."""
        placeholders = [j.id for j in self.model.sorted_jobs() if self.model.is_placeholder(j.id)]
        unknown = [j for j in jobs if j["id"] not in self.model.jobs]
        bind: dict[str, str] = {}
        for placeholder, job in zip(placeholders, unknown, strict=False):
            self.check_document(job, "list")
            self.model.rename(placeholder, job["id"])
            self.name_job(job["id"], f"j{len(self.aliases) + 1}")
            bind[self.aliases[job["id"]]] = f"jobs.{jobs.index(job)}.id"
        if bind:
            self.trace.append({"cmd": "list", "limit": 1000, "bind": bind})

    def check_store_invariants(self, jobs: list[dict[str, Any]]) -> None:
        tags = self.model.tags
        leased_groups: dict[str, str] = {}
        leased_unique: dict[str, str] = {}
        for job in jobs:
            state = job.get("state")
            job_id = job.get("id")
            if state not in self.model.jobs_machine.states:
                self.fail(
                    f"job {self.n(job_id)} is in {state!r}, not a state of the machine",
                    ["MACH-001"],
                )
            lease = job.get("lease")
            if state in tags["leased"]:
                if not lease or lease.get("token") != job.get("lease_token"):
                    self.fail(
                        f"processing job {self.n(job_id)} has lease {lease} and lease_token "
                        f"{job.get('lease_token')}",
                        ["LEASE-001"],
                    )
                group = job.get("serial_group")
                if group is not None:
                    if group in leased_groups:
                        self.fail(
                            f"jobs {self.n(leased_groups[group])} and {self.n(job_id)} of "
                            f"serial group {group} are processing at once",
                            ["GROUP-001"],
                        )
                    leased_groups[group] = job_id
                if job.get("unique") and job.get("identifier") is not None:
                    identifier = job["identifier"]
                    if identifier in leased_unique:
                        self.fail(
                            f"unique jobs {self.n(leased_unique[identifier])} and "
                            f"{self.n(job_id)} with identifier {identifier} are processing at once",
                            ["UNIQ-003"],
                        )
                    leased_unique[identifier] = job_id
            elif lease is not None:
                self.fail(f"job {self.n(job_id)} in {state} still holds a lease", ["LEASE-002"])
            terminal = state in tags["terminal"]
            if terminal != (job.get("finished_at") is not None):
                self.fail(
                    f"job {self.n(job_id)} is {state} with finished_at {job.get('finished_at')}",
                    ["JOB-010"],
                )

    # -- rules ------------------------------------------------------------------------------

    def run(self, cmd: str, args: dict[str, Any]) -> Response:
        self.before = self.model.snapshot() if cmd == "claim" else None
        return self.step(cmd, args)

    def job_ids(self) -> list[str]:
        return [j.id for j in self.model.sorted_jobs() if not self.model.is_placeholder(j.id)]

    def pick(self, data: st.DataObject, ids: list[str], missing: bool = True) -> str:
        if not ids or (missing and data.draw(st.integers(0, 19), label="missing") == 19):
            return "no-such-job-42"
        return data.draw(st.sampled_from(ids), label="job")

    def publish_document(self, data: st.DataObject) -> dict[str, Any]:
        draw = data.draw
        features = self.features
        count = draw(st.integers(1, 3), label="requests") if "multi_request" in features else 1
        document: dict[str, Any] = {
            "requests": [
                {
                    "type": draw(st.sampled_from(["work", "mail"]), label="type"),
                    "payload": draw(payloads),
                }
                for _ in range(count)
            ]
        }
        if draw(st.booleans(), label="queue?"):
            document["queue"] = draw(st.sampled_from(QUEUES), label="queue")
        if draw(st.booleans(), label="priority?"):
            document["priority"] = draw(st.sampled_from([0, 1, 2, 5]), label="priority")
        if draw(st.integers(0, 3), label="delay?") == 3:
            document["delay_ms"] = draw(st.sampled_from([0, 500, 1000, 5000]), label="delay")
        if draw(st.booleans(), label="policy?"):
            document["retry_policy"] = draw(policies, label="policy")
        if draw(st.booleans(), label="identifier?"):
            document["identifier"] = draw(st.sampled_from(IDENTIFIERS), label="identifier")
        grouped = "serial_groups" in features and draw(st.booleans(), label="group?")
        if grouped:
            document["serial_group"] = draw(st.sampled_from(GROUPS), label="group")
        recurring = "recurring" in features and draw(st.integers(0, 5), label="recurring?") == 5
        if recurring:
            document["recurring"] = {"interval_ms": draw(st.sampled_from([1000, 5000]))}
        # Unique jobs stay out of groups and dependencies: where a claim that discards a
        # redundant job looks next is not fixed by the spec (see the suite's docs).
        if (
            "unique" in features
            and "identifier" in document
            and not grouped
            and not recurring
            and draw(st.booleans(), label="unique?")
        ):
            document["unique"] = True
        if "dependencies" in features and not document.get("unique"):
            candidates = [
                i
                for i in self.job_ids()
                if not self.model.jobs[i].unique and not self.deadlocks(document, i)
            ]
            if candidates and draw(st.integers(0, 2), label="deps?") == 2:
                chosen = draw(
                    st.lists(st.sampled_from(candidates), min_size=1, max_size=2, unique=True),
                    label="depends_on",
                )
                document["depends_on"] = chosen
        if "tags" in features and draw(st.integers(0, 2), label="tags?") == 2:
            document["tags"] = draw(
                st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True), label="tags"
            )
        if "batches" in features:
            batches = [b for b in self.model.batches if b in self.batch_aliases]
            if batches and draw(st.booleans(), label="batch?"):
                document["batch_id"] = draw(st.sampled_from(batches), label="batch")
        return document

    def deadlocks(self, document: dict[str, Any], dependency: str) -> bool:
        """Whether depending on ``dependency`` would wait for a later job of its own group.

        A head that waits for a job its own group holds back never runs (GROUP-003 with
        DEP-002); the spec allows publishing it, so the generator avoids it.
        """
        group = document.get("serial_group")
        if group is None:
            return False
        first = document["requests"][0]["type"]
        default = next((h["priority"] for h in DEFAULT_HANDLERS if h["type"] == first), 100)
        priority = document.get("priority", default)
        pending, seen = [dependency], set()
        while pending:
            job = self.model.jobs.get(pending.pop())
            if job is None or job.id in seen:
                continue
            seen.add(job.id)
            if job.serial_group == group and job.priority > priority:
                return True
            pending.extend(job.depends_on)
        return False

    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        self.run("publish", {"job": self.publish_document(data)})

    @precondition(lambda self: "publish_bulk" in self.capabilities)
    @rule(data=st.data())
    def publish_bulk(self, data: st.DataObject) -> None:
        count = data.draw(st.integers(2, 3), label="bulk")
        documents = [self.publish_document(data) for _ in range(count)]
        if data.draw(st.integers(0, 3), label="bad?") == 3:
            documents[-1]["queue"] = "Not A Queue"
        self.run("publish_bulk", {"jobs": documents})

    @rule(data=st.data())
    def publish_invalid(self, data: st.DataObject) -> None:
        document: dict[str, Any] = {"requests": [{"type": "work"}]}
        defect = data.draw(
            st.sampled_from(
                [
                    "queue",
                    "priority",
                    "both-times",
                    "preset",
                    "label",
                    "no-requests",
                    "member",
                    "dependency",
                    "unique",
                ]
            ),
            label="defect",
        )
        if defect == "queue":
            document["queue"] = "Bad Queue"
        elif defect == "priority":
            document["priority"] = 40000
        elif defect == "both-times":
            document["available_at"] = timefmt.DEFAULT_START
            document["delay_ms"] = 10
        elif defect == "preset":
            document["retry_policy"] = "hourly"
        elif defect == "label":
            document["identifier"] = "x" * 256
        elif defect == "no-requests":
            document["requests"] = []
        elif defect == "member":
            document["colour"] = "blue"
        elif defect == "dependency":
            document["depends_on"] = ["no-such-job-42"]
        else:
            document["unique"] = True
        self.run("publish", {"job": document})

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        self.claim_jobs(data)

    def claim_jobs(self, data: st.DataObject) -> Response:
        draw = data.draw
        args: dict[str, Any] = {
            "worker_id": draw(st.sampled_from(WORKERS), label="worker"),
            "lease_ms": draw(st.sampled_from([1000, 5000, 30000]), label="lease_ms"),
            "limit": draw(st.integers(1, 3), label="limit"),
        }
        if draw(st.integers(0, 3), label="queues?") == 3:
            args["queues"] = draw(
                st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)
            )
        if draw(st.integers(0, 4), label="range?") == 4:
            args["priorities"] = draw(st.sampled_from(["0-1", "2-", "-2", "5", "1-1"]))
        if "claim_by_id" in self.capabilities and draw(st.integers(0, 7), label="by id?") == 7:
            args["job"] = self.pick(data, self.job_ids(), missing=False)
        return self.run("claim", args)

    @precondition(lambda self: "serial_groups" in self.features)
    @rule(data=st.data())
    def hold_group(self, data: st.DataObject) -> None:
        """A long-running job of low priority holds its serial group (GROUP-001).

        The job is published with a priority number above any other the generator draws and
        claimed by a worker of its own queue with a long lease; then a job of the same group
        with the highest priority is published and a worker claims from every queue. Exclusion
        is a separate rule from order: the newcomer is the group's head, yet it waits.
        """
        group = data.draw(st.sampled_from(GROUPS), label="group")
        low = {"requests": [{"type": "work", "payload": None}], "queue": "q2", "priority": 9}
        self.run("publish", {"job": {**low, "serial_group": group}})
        self.run("claim", {"worker_id": "w3", "lease_ms": HOLD_LEASE_MS, "queues": ["q2"]})
        high = {"requests": [{"type": "work", "payload": None}], "priority": 0}
        self.run("publish", {"job": {**high, "serial_group": group}})
        self.claim_jobs(data)

    def processing(self) -> list[str]:
        return [j.id for j in self.model.sorted_jobs() if j.state in self.model.tags["leased"]]

    def token(self, data: st.DataObject, job_id: str) -> int:
        job = self.model.jobs.get(job_id)
        current = job.lease_token if job is not None else 1
        choice = data.draw(st.integers(0, 9), label="token")
        if choice == 8:
            return max(current - 1, 0)
        if choice == 9:
            return current + 1
        return current

    @precondition(lambda self: any(j.state == "processing" for j in self.model.jobs.values()))
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.processing()), label="job")
        self.report_outcome(data, job_id)

    @rule(data=st.data())
    def work(self, data: st.DataObject) -> None:
        """What a worker does: claim, then report an outcome for each job it got."""
        response = self.claim_jobs(data)
        for job in response.value.get("jobs", []) if response.ok else []:
            job_id = job.get("id")
            model_job = self.model.jobs.get(job_id)
            if model_job is not None and model_job.state == "processing":
                self.report_outcome(data, job_id)

    def report_outcome(self, data: st.DataObject, job_id: str) -> None:
        draw = data.draw
        kinds = ["success", "success", "temporary", "permanent", "waiting", "die"]
        if "cancel_running" in self.features and draw(st.integers(0, 4), label="cancel?") == 4:
            # CANCEL-001..004: an operator cancels the running job; the handler stops, or ends
            # as it would have.
            self.run("cancel", {"job": job_id})
            kinds.append("cancelled")
        kind = draw(st.sampled_from(kinds), label="outcome")
        outcome: dict[str, Any] = {"kind": kind}
        if kind in ("temporary", "permanent", "die"):
            cause = kind if kind != "die" else draw(st.sampled_from(["temporary", "permanent"]))
            if kind == "die":
                outcome["cause"] = cause
            outcome["error"] = {"kind": cause, "message": f"{cause} failure", "type": "Boom"}
        if kind == "temporary" and draw(st.integers(0, 3), label="retry_after?") == 3:
            outcome["retry_after_ms"] = draw(st.sampled_from([0, 1500]))
        if kind == "waiting" and draw(st.booleans(), label="delay?"):
            outcome["delay_ms"] = draw(st.sampled_from([0, 2000]))
        self.run(
            "report",
            {"job": job_id, "lease_token": self.token(data, job_id), "outcome": outcome},
        )

    @rule(data=st.data())
    def report_elsewhere(self, data: st.DataObject) -> None:
        """A report on any job: mostly stale or invalid, which must change nothing."""
        job_id = self.pick(data, self.job_ids())
        kind = data.draw(st.sampled_from(["success", "waiting", "permanent"]), label="outcome")
        outcome: dict[str, Any] = {"kind": kind}
        if kind == "permanent":
            outcome["error"] = {"kind": "permanent", "message": "late"}
        self.run(
            "report", {"job": job_id, "lease_token": self.token(data, job_id), "outcome": outcome}
        )

    @precondition(lambda self: any(j.state == "processing" for j in self.model.jobs.values()))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.processing()), label="job")
        lease_ms = data.draw(st.sampled_from([1000, 10000]), label="lease_ms")
        self.run(
            "heartbeat",
            {"job": job_id, "lease_token": self.token(data, job_id), "lease_ms": lease_ms},
        )

    @rule(data=st.data(), command=st.sampled_from(["cancel", "requeue", "retry", "get"]))
    def operate(self, data: st.DataObject, command: str) -> None:
        self.run(command, {"job": self.pick(data, self.job_ids())})

    @rule(ms=st.sampled_from([1, 500, 1000, 2000, 5000, 30000, 3600000]))
    def advance(self, ms: int) -> None:
        self.run("clock_advance", {"ms": ms})

    @rule()
    def rescue(self) -> None:
        self.run("rescue", {})

    @rule(data=st.data())
    def list_some(self, data: st.DataObject) -> None:
        draw = data.draw
        args: dict[str, Any] = {}
        if draw(st.booleans(), label="states?"):
            states = sorted(self.model.jobs_machine.states)
            args["states"] = draw(
                st.lists(st.sampled_from(states), min_size=1, max_size=3, unique=True)
            )
        if draw(st.booleans(), label="queue?"):
            args["queue"] = draw(st.sampled_from(QUEUES))
        if draw(st.integers(0, 2), label="identifier?") == 2:
            args["identifier"] = draw(st.sampled_from(IDENTIFIERS))
        if "tags" in self.features and draw(st.integers(0, 2), label="tag?") == 2:
            args["tag"] = draw(st.sampled_from(TAGS))
        if draw(st.integers(0, 3), label="page?") == 3:
            args["limit"] = draw(st.integers(1, 3))
            ids = self.job_ids()
            if ids and draw(st.booleans(), label="after?"):
                args["after"] = draw(st.sampled_from(ids))
        self.run("list", args)

    @rule(data=st.data())
    def unfinished(self, data: st.DataObject) -> None:
        identifiers = data.draw(
            st.lists(st.sampled_from([*IDENTIFIERS, "unused"]), min_size=1, max_size=4, unique=True)
        )
        self.run("unfinished_identifiers", {"identifiers": identifiers})

    @rule(older_than_ms=st.sampled_from([0, 1000, 60000]))
    def clear_finished(self, older_than_ms: int) -> None:
        self.run("clear_finished", {"older_than_ms": older_than_ms})

    @rule(policy=policies, attempt=st.integers(1, 30))
    def retry_delay(self, policy: Any, attempt: int) -> None:
        self.run("retry_delay", {"policy": policy, "attempt": attempt})

    @precondition(lambda self: "fire" in self.capabilities)
    @rule(data=st.data())
    def fire(self, data: st.DataObject) -> None:
        events = [
            e
            for e in self.model.jobs_machine.events
            if e not in ("claim", "discard_redundant")
            and (
                "broker" in self.features or e not in ("broker_publish_failed", "return_to_broker")
            )
        ]
        event = data.draw(st.sampled_from(events), label="event")
        job_id = self.pick(data, self.job_ids())
        params: dict[str, Any] = {}
        if event in ("heartbeat", "succeed", "fail_temporarily", "fail_permanently", "wait"):
            params["lease_token"] = self.token(data, job_id)
        if event == "heartbeat":
            params["lease_ms"] = 5000
        if event in ("fail_temporarily", "fail_permanently"):
            kind = "temporary" if event == "fail_temporarily" else "permanent"
            params["error"] = {"kind": kind, "message": "fired"}
        if event == "dependency_failed":
            params["error"] = {"kind": "dependency_failed", "message": "fired"}
        self.run("fire", {"job": job_id, "event": event, "params": params})

    @precondition(lambda self: "notifications" in self.capabilities)
    @rule()
    def notifications(self) -> None:
        self.run("notifications", {})

    @precondition(lambda self: "batches" in self.features)
    @rule(data=st.data())
    def batch_open(self, data: st.DataObject) -> None:
        args: dict[str, Any] = {}
        if data.draw(st.booleans(), label="completion?"):
            args["completion"] = {"requests": [{"type": "mail", "payload": "done"}]}
        self.run("batch_open", args)

    @precondition(lambda self: "batches" in self.features and bool(self.model.batches))
    @rule(data=st.data())
    def batch_seal(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(sorted(self.model.batches)), label="batch")
        self.run("batch_seal", {"batch": batch})

    # -- the end of an example: everything finishes when time moves on --------------------------

    def teardown(self) -> None:
        if self.failed or not self.ctx.options.drain:
            return
        self.drain()

    def drain(self) -> None:
        terminal = self.model.tags["terminal"]
        for _ in range(DRAIN_ROUNDS):
            if all(j.state in terminal for j in self.model.jobs.values()):
                break
            self.run("clock_advance", {"ms": DRAIN_ADVANCE_MS})
            self.store_matches_model()
            self.run("rescue", {})
            self.store_matches_model()
            # Cancelling the pending occurrence is how a recurrence stops (REC-003).
            for job in self.model.sorted_jobs():
                if job.recurring is not None and job.state in self.model.tags["claimable"]:
                    self.run("cancel", {"job": job.id})
                    self.store_matches_model()
            response = self.run("claim", {"worker_id": "drain", "lease_ms": 60000, "limit": 50})
            self.store_matches_model()
            for job in response.value.get("jobs", []):
                job_id = job["id"]
                for _ in range(len(job.get("requests", [])) or 1):
                    model_job = self.model.jobs.get(job_id)
                    if model_job is None or model_job.state not in self.model.tags["leased"]:
                        break
                    self.run(
                        "report",
                        {
                            "job": job_id,
                            "lease_token": model_job.lease_token,
                            "outcome": {"kind": "success"},
                        },
                    )
                self.store_matches_model()
        stuck = [
            f"{self.n(j.id)} ({j.state})"
            for j in self.model.jobs.values()
            if j.state not in terminal and not deadlocked(self.model, j.id)
        ]
        if stuck:
            self.fail(
                f"after {DRAIN_ROUNDS} rounds of moving time on and running every claimable "
                f"job, these jobs are still not terminal: {', '.join(stuck)}",
                ["CLAIM-004"],
            )
        self.check_partition()

    def check_partition(self) -> None:
        """Every job is in exactly one state: listing by state partitions the store."""
        everything = self.call("list", {"limit": 1000}).value.get("jobs", [])
        seen: dict[str, str] = {}
        for state in sorted(self.model.jobs_machine.states):
            response = self.call("list", {"states": [state], "limit": 1000})
            for job in response.value.get("jobs", []):
                if job["id"] in seen:
                    self.fail(
                        f"job {self.n(job['id'])} is listed in {seen[job['id']]} and in {state}",
                        ["OPS-006", "MACH-001"],
                    )
                if job.get("state") != state:
                    self.fail(
                        f"list(states=[{state}]) returned job {self.n(job['id'])} in "
                        f"{job.get('state')}",
                        ["OPS-006"],
                    )
                seen[job["id"]] = state
        if len(seen) != len(everything):
            self.fail(
                f"{len(everything)} jobs are stored but {len(seen)} are listed by state",
                ["OPS-006", "MACH-001"],
            )


def deadlocked(model: Model, job_id: str) -> bool:
    """Whether a job waits, through dependencies and serial-group heads, on a cycle.

    The spec lets a head wait for a dependency that its own group holds back (GROUP-003 with
    DEP-002); such jobs never run under any implementation, so liveness does not cover them.
    """
    succeeded = model.tags["succeeded"]
    active = model.tags["active"]

    def waits(current: str) -> list[str]:
        job = model.jobs[current]
        edges = [
            d for d in job.depends_on if d in model.jobs and model.jobs[d].state not in succeeded
        ]
        if job.serial_group is not None:
            group = [
                j
                for j in model.jobs.values()
                if j.serial_group == job.serial_group and j.state in active
            ]
            head = min(group, key=lambda j: (j.priority, j.order), default=job)
            if head.id != current:
                edges.append(head.id)
        return edges

    path: list[str] = []
    done: set[str] = set()

    def visit(current: str) -> bool:
        if current in path:
            return True
        if current in done:
            return False
        path.append(current)
        found = any(visit(n) for n in waits(current))
        path.pop()
        done.add(current)
        return found

    return visit(job_id)


def _refresh(model: Model, prediction: Prediction) -> Prediction:
    """Re-render the predicted documents after the model adopted a jittered delay."""
    result = prediction.result
    if not result:
        return prediction

    def fresh(document: Any) -> Any:
        if isinstance(document, dict) and "id" in document and document["id"] in model.jobs:
            job = model.jobs[document["id"]]
            current = model.doc(job)
            if isinstance(document.get("available_at"), dict) and not isinstance(
                current.get("available_at"), dict
            ):
                return {**document, "available_at": current["available_at"]}
        return document

    new: dict[str, Any] = {}
    for key, value in result.items():
        if key == "job":
            new[key] = fresh(value)
        elif key == "jobs" and isinstance(value, list):
            new[key] = [fresh(v) for v in value]
        elif key == "jobs" and isinstance(value, dict) and "$unordered" in value:
            new[key] = {"$unordered": [fresh(v) for v in value["$unordered"]]}
        else:
            new[key] = value
    prediction.result = new
    return prediction


def _in_actual_order(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """An unordered list of jobs put in the implementation's order when the ids agree, so
    that a difference is reported field by field."""
    jobs = expected.get("jobs")
    if not (isinstance(jobs, dict) and "$unordered" in jobs):
        return expected
    wanted = {j["id"]: j for j in jobs["$unordered"]}
    got = [j.get("id") for j in actual.get("jobs", []) if isinstance(j, dict)]
    if set(wanted) != set(got) or len(got) != len(wanted):
        return {**expected, "jobs": [wanted[i] for i in sorted(wanted)]}
    return {**expected, "jobs": [wanted[i] for i in got]}


def _returned_jobs(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = [result["job"]] if isinstance(result.get("job"), dict) else []
    jobs = result.get("jobs")
    if isinstance(jobs, list):
        found += [j for j in jobs if isinstance(j, dict)]
    return found


def _job_field(path: str, actual: dict[str, Any]) -> tuple[str | None, str]:
    """(job id, top-level field) of a mismatch path like ``jobs[1].requests[0].state``."""
    head, _, rest = path.partition(".")
    if head == "job" and isinstance(actual.get("job"), dict):
        return actual["job"].get("id"), rest.split(".")[0].split("[")[0]
    if head.startswith("jobs[") and isinstance(actual.get("jobs"), list):
        index = int(head[5:-1])
        jobs = actual["jobs"]
        job_id = jobs[index].get("id") if index < len(jobs) else None
        return job_id, rest.split(".")[0].split("[")[0]
    return None, head.split("[")[0]


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 300 else text[:297] + "..."


def diagnose_claim(
    before: Model | None,
    args: dict[str, Any],
    got: list[Any],
    expected: list[str],
    name: Callable[[Any], str] = str,
) -> tuple[str, str]:
    """Name the rule a claim's answer breaks, by replaying its jobs against the model.

    ``name`` shows a job id in the explanation as the trace names the job.
    """
    if before is None:
        return "CLAIM-001", "no model state to diagnose"
    model = before
    from .model import parse_priority_range

    low, high = parse_priority_range(args.get("priorities"))
    queues = args.get("queues")
    limit = args.get("limit", 1)
    if len(got) > limit:
        return "CLAIM-002", f"{len(got)} jobs for a limit of {limit}"
    if len(set(map(str, got))) != len(got):
        return "CLAIM-003", "the same job twice in one claim"
    for position, job_id in enumerate(got):
        job = model.jobs.get(str(job_id))
        if job is None:
            return "CLAIM-002", f"job {name(job_id)} is not a stored job"
        if job.state in model.tags["leased"]:
            return "CLAIM-003", f"job {name(job_id)} is already processing under another lease"
        if job.state not in model.tags["claimable"]:
            return "CLAIM-001", f"job {name(job_id)} is {job.state}, which is not claimable"
        if queues and job.queue not in queues:
            return "CLAIM-002", f"job {name(job_id)} is in queue {job.queue}, not in {queues}"
        if not low <= job.priority <= high:
            return "ORDER-004", f"job {name(job_id)} has priority {job.priority}, outside the range"
        if args.get("job") is not None and job_id != args["job"]:
            return "CLAIM-002", f"the claim named job {name(args['job'])}, not {name(job_id)}"
        if job.available_at > model.now:
            return (
                "ORDER-005",
                f"job {name(job_id)} is not due until {timefmt.format_ms(job.available_at)}",
            )
        facts = model.facts(job)
        if not facts["dependencies_succeeded"]:
            return "DEP-002", f"job {name(job_id)} has a dependency that has not succeeded"
        if not facts["serial_group_idle"]:
            return "GROUP-001", f"another job of serial group {job.serial_group} is processing"
        if not facts["serial_group_head"]:
            return (
                "GROUP-002",
                f"job {name(job_id)} is not the head of serial group {job.serial_group}",
            )
        if facts["unique_sibling_processing"]:
            return "UNIQ-003", f"a unique sibling of job {name(job_id)} is processing"
        if facts["unique_sibling_succeeded"]:
            return "UNIQ-002", f"a unique sibling of job {name(job_id)} finished: it is redundant"
        if position < len(expected) and expected[position] != job_id:
            passed = model.jobs.get(expected[position])
            if (
                passed is not None
                and passed.serial_group is not None
                and (passed.serial_group == job.serial_group)
            ):
                return "GROUP-002", (
                    f"job {name(expected[position])} is the head of serial group "
                    f"{passed.serial_group} and comes first; got {name(job_id)}"
                )
            if passed is not None and passed.depends_on:
                return "DEP-002", (
                    f"job {name(expected[position])}'s dependencies succeeded and it comes first"
                )
            return "ORDER-002", f"job {name(expected[position])} comes before {name(job_id)}"
        # Apply the claim so the next job is judged as the spec says: counting this one.
        model._fire(job, "claim", {"worker_id": args["worker_id"], "lease_ms": args["lease_ms"]})
    if len(got) < len(expected):
        over = ", ".join(map(name, expected[len(got) :]))
        first = model.jobs.get(expected[len(got)])
        if first is not None and first.serial_group is not None:
            # a group's head left unclaimed: the implementation took another job for its head
            return "GROUP-002", (
                f"job {name(expected[len(got)])} is the head of serial group "
                f"{first.serial_group} and was passed over"
            )
        return "CLAIM-004", f"claimable jobs [{over}] were passed over"
    return "ORDER-002", "the claim differs from the order of ORDER-002"


# -- running ------------------------------------------------------------------------------------


def trace_vector(failure: dict[str, Any], options: StatefulOptions) -> dict[str, Any]:
    """A failure of the stateful suite as a vector file, ready to save as a regression."""
    steps = []
    for entry in failure["steps"]:
        step = {k: v for k, v in entry.items() if not k.startswith("_")}
        steps.append(step)
    digest = hashlib.sha1(json.dumps(steps, sort_keys=True).encode()).hexdigest()[:8]
    return {
        "$schema": "./vector.schema.json",
        "specversion": "0.2",
        "title": "Regression found by the stateful suite",
        "description": failure["message"][:2000],
        "origin": "hypothesis",
        "vectors": [
            {
                "id": f"stateful-{options.label}-{digest}".lower(),
                "description": (
                    f"Minimal failing sequence found with seed {options.seed}: "
                    + failure["message"][:500]
                ),
                "requirements": sorted(set(failure["requirements"])) or ["MACH-001"],
                **_needs(steps),
                "steps": steps,
            }
        ],
    }


def _needs(steps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The features and optional commands a trace uses, for the vector's header."""
    features: set[str] = set()
    requires: set[str] = set()
    for step in steps:
        cmd = step["cmd"]
        documents = []
        if cmd == "publish":
            documents = [step.get("job", {})]
        elif cmd == "publish_bulk":
            documents = step.get("jobs", [])
            requires.add("publish_bulk")
        elif cmd.startswith("batch_"):
            features.add("batches")
        elif cmd in ("fire", "notifications"):
            requires.add(cmd)
        elif cmd == "claim" and "job" in step:
            requires.add("claim_by_id")
        for document in documents:
            if not isinstance(document, dict):
                continue
            if document.get("serial_group") is not None:
                features.add("serial_groups")
            if document.get("unique"):
                features.add("unique")
            if document.get("recurring") is not None:
                features.add("recurring")
            if document.get("depends_on"):
                features.add("dependencies")
            if len(document.get("requests", [])) > 1:
                features.add("multi_request")
            if document.get("batch_id") is not None:
                features.add("batches")
            if document.get("tags"):
                features.add("tags")
    needs: dict[str, list[str]] = {}
    if features:
        needs["features"] = sorted(features)
    if requires:
        needs["requires"] = sorted(requires)
    return needs


def run_stateful(
    client: Client,
    spec: Spec,
    options: StatefulOptions,
    reconnect: Callable[[], Client] | None = None,
) -> CheckResult:
    global _CTX  # noqa: PLW0603 - hypothesis builds the machine without arguments
    context = _Context(client, spec, options, reconnect)
    _CTX = context
    result = CheckResult(
        id="stateful",
        kind="stateful",
        status="pass",
        requirements=[],
        features=sorted(options.features),
    )
    test = get_state_machine_test(
        ConformanceMachine,
        settings=settings(
            max_examples=options.max_examples,
            stateful_step_count=options.steps,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate]
            + ([Phase.shrink] if options.shrink else []),
            report_multiple_bugs=False,
            print_blob=False,
        ),
    )
    test = hypothesis_seed(options.seed)(test)
    started = time.monotonic()
    try:
        test()
    except StatefulFailure as failure:
        result.status = "fail"
        result.failed_requirements = failure.requirements
        result.message = failure.message
    except AdapterError as error:
        result.status = "error"
        result.failed_requirements = [error.rule]
        result.message = str(error)
        result.detail["stderr"] = error.stderr[-2000:]
    except (HypothesisException, AssertionError) as error:
        result.status = "fail"
        result.failed_requirements = ["MACH-001"]
        result.message = f"{type(error).__name__}: {error}"
    finally:
        _CTX = None
    result.duration_ms = int((time.monotonic() - started) * 1000)
    result.detail["examples"] = context.examples
    result.detail["seed"] = options.seed
    seen = sorted(r for r in context.seen | set(INVARIANT_REQUIREMENTS) if r and "-" in r)
    result.requirements = [r for r in seen if r in spec.requirements]
    if result.status == "fail" and context.failure is not None:
        result.message = context.failure["message"]
        result.failed_requirements = context.failure["requirements"]
        vector = trace_vector(context.failure, options)
        result.trace = vector
        if options.failures_dir is not None:
            options.failures_dir.mkdir(parents=True, exist_ok=True)
            path = options.failures_dir / f"{vector['vectors'][0]['id']}.json"
            path.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", "utf-8")
            result.detail["saved_trace"] = str(path)
    return result


__all__ = ["ANY", "StatefulOptions", "run_stateful"]
