"""The job, request and batch machines: every transition fires as the files say, nothing else does.

Spec: MACH-003..MACH-009 and the transition tables of machines/{job,request,batch}.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import (
    BatchClosed,
    Call,
    Conveyor,
    InvalidTransition,
    Job,
    Request,
    RetryPolicy,
    StaleLease,
)
from conveyor.engine import Firing, JobEngine, RequestEngine
from conveyor.lifecycle import BatchEngine
from conveyor.machine import Environment, evaluate
from conveyor.model import Batch, Lease

from .core_support import (
    BATCH_MACHINE,
    BROKER,
    JOB_MACHINE,
    PERMANENT,
    REQUEST_MACHINE,
    TEMPORARY,
    claim_one,
    drive_to,
    memory_app,
    report,
)

MACHINES = {"job": JOB_MACHINE, "request": REQUEST_MACHINE, "batch": BATCH_MACHINE}
ALL_IDS = {t["id"] for machine in MACHINES.values() for t in machine["transitions"]}
HIT: set[str] = set()

# -- recording which transitions fire ------------------------------------------------------


class Recorder:
    """Observes the transitions the app's three machines select (the store stays real)."""

    def __init__(self, app: Conveyor) -> None:
        self.fired: list[str] = []
        machines = (app.engine.machine, app.engine.requests.machine, app.lifecycle.batches.machine)
        for machine in machines:
            original = machine.select

            def select(state: str, event: str, env: Environment, _select: Any = original) -> Any:
                transition = _select(state, event, env)
                self.fired.append(transition.id)
                return transition

            machine.select = select  # type: ignore[method-assign]
        # Every claim fires the machine here: on PostgreSQL a worker's claim of plain jobs is
        # the machine's claim compiled into one statement, which selects nothing in Python
        # (test_planned_claims.py checks that it writes what the machine would).
        app.lifecycle.claim_plan = None


Case = Callable[[Conveyor], None]
CASES: dict[str, tuple[tuple[str, ...], Case]] = {}


def case(*ids: str) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        CASES[function.__name__] = (ids, function)
        return function

    return register


def run_case(name: str, app: Conveyor) -> None:
    ids, function = CASES[name]
    recorder = Recorder(app)
    function(app)
    missing = set(ids) - set(recorder.fired)
    assert not missing, f"{name} did not fire {sorted(missing)}; fired {recorder.fired}"
    HIT.update(recorder.fired)


# -- one case per transition (or a short story covering several) ---------------------------


@case("J01", "R01")
def claim_grants_a_lease_counts_an_attempt_and_starts_the_request(app: Conveyor) -> None:
    job = app.publish("task", {"n": 1})
    claimed = app.claim("w1", lease_ms=30_000)
    got = app.get(job.id)
    assert [c.id for c in claimed] == [job.id]
    assert got.state == "processing"
    assert got.attempts == 1
    assert got.lease is not None
    assert (got.lease.token, got.lease.worker_id) == (1, "w1")
    assert got.lease.expires_at == app.now() + timedelta(seconds=30)
    assert got.lease_token == 1
    assert (got.requests[0].state, got.requests[0].attempts) == ("running", 1)


@case("J02", "R06")
def a_unique_duplicate_is_discarded_as_redundant_without_running(app: Conveyor) -> None:
    job = drive_to(app, "redundant")
    assert job.state == "redundant"
    assert job.attempts == 0
    assert job.lease_token == 0
    assert job.requests[0].state == "cancelled"
    assert job.finished_at == app.now()


@case("J03")
def heartbeat_extends_the_lease_and_nothing_else(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    app.clock.advance(10)  # type: ignore[attr-defined]
    beaten = app.heartbeat(claimed.id, 1, 60_000)
    assert beaten.state == "processing"
    assert beaten.lease == Lease(1, "w1", app.now() + timedelta(seconds=60))
    assert beaten.attempts == 1
    assert beaten.requests == claimed.requests


@case("J04", "R02")
def succeeding_a_request_with_more_left_starts_the_next(app: Conveyor) -> None:
    job = app.publish_job([Call("task", {"n": 1}), Call("task", {"n": 2})])
    claimed = claim_one(app, job)
    after = report(app, claimed, "succeed")
    assert after.state == "processing"
    assert [r.state for r in after.requests] == ["succeeded", "running"]
    assert [r.attempts for r in after.requests] == [1, 1]
    assert after.lease == claimed.lease


@case("J05", "R02")
def succeeding_the_last_request_finishes_the_job(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    app.clock.advance(3)  # type: ignore[attr-defined]
    done = report(app, claimed, "succeed")
    assert done.state == "finished"
    assert done.lease is None
    assert done.lease_token == 1
    assert done.finished_at == app.now()
    assert done.requests[0].state == "succeeded"


@case("J06", "R03")
def a_temporary_error_with_attempts_left_schedules_a_retry(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    app.clock.advance(5)  # type: ignore[attr-defined]
    failed = report(app, claimed, "fail_temporarily", error=TEMPORARY)
    assert failed.state == "temporarily_failed"
    assert failed.lease is None
    assert failed.finished_at is None
    assert failed.available_at == app.now() + timedelta(seconds=60)  # exponential preset, n=1
    assert failed.last_error is not None
    assert (failed.last_error.kind, failed.last_error.message) == (
        "temporary",
        "service unavailable",
    )
    assert (failed.last_error.attempt, failed.last_error.request) == (1, 0)
    assert failed.last_error.at == app.now()
    assert failed.errors == (failed.last_error,)
    assert failed.requests[0].state == "failed"
    assert failed.requests[0].error is not None
    assert failed.requests[0].error.kind == "temporary"


@case("J07", "R03")
def a_temporary_error_without_attempts_left_fails_for_good(app: Conveyor) -> None:
    policy = RetryPolicy("constant", 1000, 1000, max_attempts=1)
    claimed = claim_one(app, app.publish("task", retry=policy))
    failed = report(app, claimed, "fail_temporarily", error=TEMPORARY)
    assert failed.state == "permanently_failed"
    assert failed.finished_at == app.now()
    assert failed.last_error is not None
    assert failed.last_error.kind == "temporary"


@case("J08", "R03")
def a_permanent_error_fails_the_job_for_good(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    failed = report(app, claimed, "fail_permanently", error=PERMANENT)
    assert failed.state == "permanently_failed"
    assert failed.lease is None
    assert failed.finished_at == app.now()
    assert failed.last_error is not None
    assert failed.last_error.kind == "permanent"
    assert failed.requests[0].state == "failed"


@case("J09", "R04")
def waiting_refunds_the_attempt_and_sets_the_request_back(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    waiting = report(app, claimed, "wait", delay_ms=5000)
    assert waiting.state == "waiting"
    assert waiting.attempts == 0
    assert (waiting.requests[0].state, waiting.requests[0].attempts) == ("pending", 0)
    assert waiting.available_at == app.now() + timedelta(seconds=5)
    assert waiting.lease is None


@case("J10", "R05")
def an_expired_lease_with_attempts_left_is_rescued_for_a_retry(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"), lease_ms=1000)
    app.clock.advance(1)  # type: ignore[attr-defined]
    rescued = app.rescue_expired()
    got = app.get(claimed.id)
    assert [r.id for r in rescued] == [claimed.id]
    assert got.state == "temporarily_failed"
    assert got.attempts == 1
    assert got.last_error is not None
    assert got.last_error.kind == "lease_expired"
    assert got.requests[0].state == "failed"
    assert got.available_at == app.now() + timedelta(seconds=60)


@case("J11", "R05")
def an_expired_lease_without_attempts_left_fails_for_good(app: Conveyor) -> None:
    policy = RetryPolicy("constant", 1000, 1000, max_attempts=1)
    claimed = claim_one(app, app.publish("task", retry=policy), lease_ms=1000)
    app.clock.advance(2)  # type: ignore[attr-defined]
    app.rescue_expired()
    got = app.get(claimed.id)
    assert got.state == "permanently_failed"
    assert got.last_error is not None
    assert got.last_error.kind == "lease_expired"
    assert got.finished_at == app.now()


@case("J12", "R06")
def cancel_ends_a_ready_job_and_its_requests(app: Conveyor) -> None:
    job = app.publish_job([Call("task", 1), Call("task", 2)])
    cancelled = app.cancel(job.id)
    assert cancelled.state == "cancelled"
    assert [r.state for r in cancelled.requests] == ["cancelled", "cancelled"]
    assert cancelled.finished_at == app.now()


@case("J13", "R06")
def a_failed_dependency_cancels_its_dependent(app: Conveyor) -> None:
    first = app.publish("task")
    second = app.publish("task", depends_on=[first.id])
    report(app, claim_one(app, first), "fail_permanently", error=PERMANENT)
    got = app.get(second.id)
    assert got.state == "cancelled"
    assert got.last_error is not None
    assert got.last_error.kind == "dependency_failed"
    assert got.requests[0].state == "cancelled"


@case("J14")
def requeue_makes_a_failed_job_ready_and_due(app: Conveyor) -> None:
    failed = drive_to(app, "temporarily_failed")
    assert failed.available_at > app.now()
    again = app.requeue(failed.id)
    assert again.state == "ready"
    assert again.available_at == app.now()
    assert again.attempts == 1


@case("J15", "R07")
def retry_gives_a_failed_job_fresh_attempts(app: Conveyor) -> None:
    failed = drive_to(app, "permanently_failed")
    app.clock.advance(30)  # type: ignore[attr-defined]
    again = app.retry(failed.id)
    assert again.state == "ready"
    assert again.attempts == 0
    assert again.finished_at is None
    assert again.available_at == app.now()
    assert (again.requests[0].state, again.requests[0].error) == ("pending", None)


@case("J16")
def a_failed_broker_publish_holds_the_job_back(app: Conveyor) -> None:
    job = app.publish("task")
    held = app.fire(job.id, "broker_publish_failed", {"error": BROKER})
    assert held.state == "broker_failed"
    assert held.last_error is not None
    assert held.last_error.kind == "broker"


@case("J17", "R07")
def return_to_broker_reopens_requests_and_keeps_attempts(app: Conveyor) -> None:
    failed = drive_to(app, "permanently_failed")
    back = app.fire(failed.id, "return_to_broker")
    assert back.state == "back_to_broker"
    assert back.finished_at is None
    assert back.attempts == 1
    assert back.requests[0].state == "pending"


@case("J18", "J23", "R08")
def a_running_job_s_cancel_is_a_request_its_worker_confirms(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    asked = app.cancel(claimed.id)
    assert (asked.state, asked.cancel_requested_at) == ("processing", app.now())
    assert asked.lease == claimed.lease
    app.clock.advance(5)  # type: ignore[attr-defined]
    assert app.cancel(claimed.id).cancel_requested_at == asked.cancel_requested_at
    ended = report(app, claimed, "confirm_cancel")
    assert (ended.state, ended.lease, ended.finished_at) == ("cancelled", None, app.now())
    assert ended.requests[0].state == "cancelled"


@case("J19", "R02", "R06")
def a_success_with_more_requests_after_a_cancel_request_cancels_the_rest(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish_job([Call("task", 1), Call("task", 2)]))
    app.cancel(claimed.id)
    ended = report(app, claimed, "succeed")
    assert ended.state == "cancelled"
    assert [r.state for r in ended.requests] == ["succeeded", "cancelled"]


@case("J20", "R03", "R06")
def a_temporary_error_after_a_cancel_request_cancels_without_retry(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    app.cancel(claimed.id)
    ended = report(app, claimed, "fail_temporarily", error=TEMPORARY)
    assert ended.state == "cancelled"
    assert ended.last_error is not None
    assert ended.last_error.kind == "temporary"


@case("J21", "R08")
def waiting_after_a_cancel_request_cancels(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"))
    app.cancel(claimed.id)
    assert report(app, claimed, "wait").state == "cancelled"


@case("J22", "R05", "R06")
def an_expired_lease_after_a_cancel_request_cancels(app: Conveyor) -> None:
    claimed = claim_one(app, app.publish("task"), lease_ms=1000)
    app.cancel(claimed.id)
    app.clock.advance(2)  # type: ignore[attr-defined]
    (rescued,) = app.rescue_expired()
    assert rescued.state == "cancelled"
    assert rescued.last_error is not None
    assert rescued.last_error.kind == "lease_expired"


@case("B02")
def sealing_an_empty_batch_finishes_it_and_publishes_the_completion(app: Conveyor) -> None:
    batch = app.open_batch(Call("task", {"done": True}))
    sealed = app.seal_batch(batch)
    assert sealed.state == "finished"
    assert sealed.finished_at == app.now()
    [completion] = app.jobs()
    assert completion.requests[0].payload == {"done": True}
    assert completion.batch_id is None


@case("B01", "B03", "B04", "B05", "B06")
def a_batch_counts_jobs_seals_and_finishes_when_the_last_settles(app: Conveyor) -> None:
    batch = app.open_batch(Call("task", {"done": True}))
    jobs = [app.publish("task", {"n": n}, batch=batch) for n in range(3)]
    assert app.get_batch(batch.id).total == 3
    report(app, claim_one(app, jobs[0]), "succeed")
    assert app.get_batch(batch.id).state == "open"
    assert app.seal_batch(batch).state == "sealed"
    report(app, claim_one(app, jobs[1]), "fail_permanently", error=PERMANENT)
    assert app.get_batch(batch.id).state == "sealed"
    assert len(app.jobs()) == 3
    app.cancel(jobs[2].id)
    finished = app.get_batch(batch.id)
    assert finished.state == "finished"
    assert finished.finished_at == app.now()
    completions = [j for j in app.jobs() if j.requests[0].payload == {"done": True}]
    assert len(completions) == 1
    assert completions[0].state == "ready"


@case("B07")
def a_retried_job_of_a_finished_batch_settles_without_changing_it(app: Conveyor) -> None:
    batch = app.open_batch(Call("task", {"done": True}))
    job = app.publish("task", batch=batch)
    report(app, claim_one(app, job), "fail_permanently", error=PERMANENT)
    finished = app.seal_batch(batch)
    assert finished.state == "finished"
    app.clock.advance(60)  # type: ignore[attr-defined]
    app.retry(job.id)
    report(app, claim_one(app, job), "succeed")
    assert app.get_batch(batch.id) == finished
    assert sum(j.requests[0].payload == {"done": True} for j in app.jobs()) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_transition_fires_with_its_target_and_effects(app: Conveyor, name: str) -> None:
    """Each transition case reaches the target state with the effects the file lists."""
    app.register("task", lambda *args, **kwargs: None)
    run_case(name, app)


def test_every_transition_id_of_every_machine_is_exercised() -> None:
    """The cases above cover every transition id of job.json, request.json and batch.json."""
    declared = {i for ids, _ in CASES.values() for i in ids}
    assert declared == ALL_IDS
    for name, (ids, _) in CASES.items():
        if not set(ids) <= HIT:  # this test ran alone: exercise the case here, in memory
            run_case(name, memory_app())
    assert ALL_IDS <= HIT


# -- the exhaustive matrix, on the engine ----------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy("constant", 1000, 1000, max_attempts=3)
REQUEST_STATE_FOR = {
    "ready": "pending",
    "processing": "running",
    "temporarily_failed": "failed",
    "waiting": "pending",
    "broker_failed": "pending",
    "back_to_broker": "pending",
    "finished": "succeeded",
    "redundant": "cancelled",
    "permanently_failed": "failed",
    "cancelled": "cancelled",
}


def synthetic_job(state: str, **changes: Any) -> Job:
    """A job as the store would hold it in ``state`` after one attempt."""
    leased = state in {s for s, v in JOB_MACHINE["states"].items() if "leased" in v["tags"]}
    job = Job(
        id="7",
        sequence=7,
        queue="default",
        priority=100,
        state=state,
        available_at=T0,
        created_at=T0,
        updated_at=T0,
        retry_policy=POLICY,
        requests=(Request(0, "task", None, REQUEST_STATE_FOR[state], attempts=1),),
        attempts=0 if state in ("ready", "broker_failed", "redundant") else 1,
        lease_token=1 if state != "ready" else 0,
        lease=Lease(1, "w1", T0 + timedelta(seconds=30)) if leased else None,
    )
    return replace(job, **changes)


def good_firing(job: Job, event: str, *, with_token: bool = True) -> tuple[Job, Firing]:
    """The event with parameters and facts that satisfy its guards where the file allows it."""
    values: dict[str, Any] = {
        "worker_id": "w2",
        "lease_ms": 1000,
        "lease_token": job.lease.token if job.lease else 1,
        "error": TEMPORARY,
        "retry_after_ms": None,
        "delay_ms": None,
    }
    names = JOB_MACHINE["events"][event]["params"]
    params = {n: values[n] for n in names if with_token or n != "lease_token"}
    facts = {
        "dependencies_succeeded": True,
        "serial_group_idle": True,
        "serial_group_head": True,
        "unique_sibling_processing": False,
        "unique_sibling_succeeded": event == "discard_redundant",
    }
    if event == "discard_redundant":
        job = replace(job, unique=True, identifier="once")
    if event == "confirm_cancel":  # CANCEL-003: only after a cancel request
        job = replace(job, cancel_requested_at=T0)
    now = T0 + timedelta(seconds=60 if event == "lease_expired" else 1)
    return job, Firing(event, now, params, facts)


JOB_STATES = sorted(JOB_MACHINE["states"])
JOB_EVENTS = sorted(JOB_MACHINE["events"])
JOB_ALLOWED = {(s, t["event"]) for t in JOB_MACHINE["transitions"] for s in t["from"]}
JOB_TARGETS = {
    pair: {
        t["to"]
        for t in JOB_MACHINE["transitions"]
        if pair[1] == t["event"] and pair[0] in t["from"]
    }
    for pair in JOB_ALLOWED
}
JOB_REFUSED = sorted((s, e) for s in JOB_STATES for e in JOB_EVENTS if (s, e) not in JOB_ALLOWED)
LEASE_EVENTS = {e for e, v in JOB_MACHINE["events"].items() if "lease_token" in v["params"]}
ENGINE = JobEngine()


@pytest.mark.parametrize(("state", "event"), sorted(JOB_ALLOWED))
def test_an_allowed_pair_fires_to_one_of_its_targets(state: str, event: str) -> None:
    """Every (state, event) the job machine allows fires when its guard holds."""
    job, firing = good_firing(synthetic_job(state), event)
    fired = ENGINE.fire(job, firing)
    assert fired.job.state in JOB_TARGETS[(state, event)]
    assert fired.transition.id in {t["id"] for t in JOB_MACHINE["transitions"]}
    assert fired.before == job


@pytest.mark.parametrize(("state", "event"), JOB_REFUSED)
def test_a_pair_the_job_machine_lacks_is_refused_and_changes_nothing(
    state: str, event: str
) -> None:
    """A (state, event) with no transition raises InvalidTransition (StaleLease with a token)."""
    job = synthetic_job(state)
    snapshot = replace(job)
    job, firing = good_firing(job, event, with_token=False)
    with pytest.raises(InvalidTransition):
        ENGINE.fire(job, firing)
    if event in LEASE_EVENTS:
        job, firing = good_firing(job, event)
        with pytest.raises(StaleLease):
            ENGINE.fire(job, firing)
    assert synthetic_job(state) == snapshot


@pytest.mark.parametrize("event", sorted(LEASE_EVENTS))
def test_a_lease_holder_event_with_another_token_is_stale(event: str) -> None:
    """LEASE-007: on a processing job, a report carrying an older or newer token is stale."""
    job = synthetic_job("processing", lease_token=4, lease=Lease(4, "w1", T0 + timedelta(days=1)))
    for token in (3, 5):
        _, firing = good_firing(job, event)
        firing.params = {**firing.params, "lease_token": token}
        with pytest.raises(StaleLease):
            ENGINE.fire(job, firing)


@pytest.mark.parametrize(
    "fact",
    [
        ("dependencies_succeeded", False),
        ("serial_group_idle", False),
        ("serial_group_head", False),
        ("unique_sibling_processing", True),
        ("unique_sibling_succeeded", True),
    ],
)
def test_claim_is_refused_when_any_claim_fact_fails(fact: tuple[str, bool]) -> None:
    """CLAIM-001: the claimable_now guard needs every one of its facts."""
    job, firing = good_firing(synthetic_job("ready"), "claim")
    firing.facts = {**firing.facts, fact[0]: fact[1]}
    with pytest.raises(InvalidTransition):
        ENGINE.fire(job, firing)


def test_claim_is_refused_before_available_at() -> None:
    """ORDER-005: a job is not claimed one millisecond before it is due."""
    job, firing = good_firing(
        synthetic_job("ready", available_at=T0 + timedelta(seconds=2)), "claim"
    )
    firing.now = T0 + timedelta(milliseconds=1999)
    with pytest.raises(InvalidTransition):
        ENGINE.fire(job, firing)
    firing.now = T0 + timedelta(seconds=2)
    assert ENGINE.fire(job, firing).job.state == "processing"


def test_lease_expired_is_refused_while_the_lease_runs() -> None:
    """LEASE-005: lease_expired fires only at or after expires_at."""
    job = synthetic_job("processing")
    assert job.lease is not None
    for now, expected in (
        (job.lease.expires_at - timedelta(milliseconds=1), None),
        (job.lease.expires_at, "temporarily_failed"),
    ):
        firing = Firing("lease_expired", now, {}, {})
        if expected is None:
            with pytest.raises(InvalidTransition):
                ENGINE.fire(job, firing)
        else:
            assert ENGINE.fire(job, firing).job.state == expected


@given(attempts=st.integers(1, 6), limit=st.none() | st.integers(1, 6))
@settings(max_examples=40, deadline=None)
def test_temporary_failure_and_expiry_pick_the_target_by_attempts_left(
    attempts: int, limit: int | None
) -> None:
    """RETRY-004: J06/J10 while attempts < max_attempts, otherwise J07/J11."""
    policy = RetryPolicy("constant", 1000, 1000, max_attempts=limit)
    job = synthetic_job("processing", attempts=attempts, retry_policy=policy)
    retried = limit is None or attempts < limit
    temporary = ENGINE.fire(job, good_firing(job, "fail_temporarily")[1])
    expired = ENGINE.fire(job, good_firing(job, "lease_expired")[1])
    assert temporary.transition.id == ("J06" if retried else "J07")
    assert expired.transition.id == ("J10" if retried else "J11")


@given(remaining=st.integers(1, 5))
@settings(max_examples=20, deadline=None)
def test_succeed_stays_processing_until_the_last_request(remaining: int) -> None:
    """MULTI-002: J04 while requests remain after the current one, J05 on the last."""
    done = tuple(Request(i, "task", None, "succeeded", 1) for i in range(2))
    rest = tuple(
        Request(2 + i, "task", None, "running" if i == 0 else "pending", int(i == 0))
        for i in range(remaining)
    )
    job = synthetic_job("processing", requests=done + rest)
    fired = ENGINE.fire(job, good_firing(job, "succeed")[1])
    assert fired.transition.id == ("J04" if remaining > 1 else "J05")
    if remaining > 1:
        assert [r.state for r in fired.job.requests[2:4]] == ["succeeded", "running"]


REQUEST_ALLOWED = {
    (s, t["event"]): t["to"] for t in REQUEST_MACHINE["transitions"] for s in t["from"]
}


@pytest.mark.parametrize("state", sorted(REQUEST_MACHINE["states"]))
@pytest.mark.parametrize("event", sorted(REQUEST_MACHINE["events"]))
def test_the_request_machine_fires_exactly_its_transitions(state: str, event: str) -> None:
    """request.json: allowed pairs reach their target, every other pair is InvalidTransition."""
    engine = RequestEngine()
    request = Request(0, "task", None, state, attempts=1)
    firing = Firing(event, T0, {"error": TEMPORARY})
    if (state, event) in REQUEST_ALLOWED:
        assert engine.fire(request, event, firing).state == REQUEST_ALLOWED[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            engine.fire(request, event, firing)


BATCH_ALLOWED = {(s, t["event"]) for t in BATCH_MACHINE["transitions"] for s in t["from"]}


BATCH_EXPECTED = {
    # (state, event): (target when unsettled == 0, target otherwise, publishes the completion)
    ("open", "add"): ("open", "open", False),
    ("open", "seal"): ("finished", "sealed", True),
    ("open", "job_settled"): ("open", "open", False),
    ("sealed", "job_settled"): ("finished", "sealed", True),
    ("finished", "job_settled"): ("finished", "finished", False),
}


@pytest.mark.parametrize("state", sorted(BATCH_MACHINE["states"]))
@pytest.mark.parametrize("event", sorted(BATCH_MACHINE["events"]))
@pytest.mark.parametrize("unsettled", [0, 2])
def test_the_batch_machine_fires_exactly_its_transitions(
    state: str, event: str, unsettled: int
) -> None:
    """batch.json: finishing needs unsettled 0; adding to a closed batch is BatchClosed."""
    batch = Batch("1", state, total=2, created_at=T0)
    engine = BatchEngine()
    assert set(BATCH_EXPECTED) == BATCH_ALLOWED
    if (state, event) not in BATCH_ALLOWED:
        expected = BatchClosed if event == "add" else InvalidTransition
        with pytest.raises(expected):
            engine.fire(batch, event, T0, unsettled=unsettled, count=1)
        return
    changed, complete = engine.fire(batch, event, T0, unsettled=unsettled, count=1)
    settled_target, busy_target, publishes = BATCH_EXPECTED[(state, event)]
    assert changed.state == (settled_target if unsettled == 0 else busy_target)
    assert complete == (publishes and unsettled == 0)
    assert changed.total == (3 if event == "add" else 2)


# -- refusals through the app leave the stored job unchanged ---------------------------------


@pytest.mark.parametrize("state", JOB_STATES)
def test_refused_events_leave_the_stored_job_and_store_unchanged(app: Conveyor, state: str) -> None:
    """MACH-006 / ERR-002: a refused event changes no field, no request and no other record."""
    job = drive_to(app, state)
    before, counts = app.get(job.id), app.status()
    for event in JOB_EVENTS:
        if (state, event) in JOB_ALLOWED:
            continue
        _, firing = good_firing(before, event)
        expected = (
            StaleLease if event in LEASE_EVENTS and before.lease is None else InvalidTransition
        )
        with pytest.raises(expected):
            app.fire(job.id, event, dict(firing.params))
        assert app.get(job.id) == before, event
    assert app.status() == counts


def test_the_outcome_cancelled_without_a_request_is_refused() -> None:
    """CANCEL-003: confirm_cancel needs a cancel request; the job stays processing."""
    app = memory_app()
    job = drive_to(app, "processing")
    with pytest.raises(InvalidTransition, match="processing"):
        report(app, job, "confirm_cancel")
    assert app.get(job.id) == job


# -- the guard expression language -----------------------------------------------------------


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime):
        return "timestamp"
    return type(value).__name__


def reference(expr: Any, values: dict[str, Any]) -> bool:
    """MACH-004, written out independently of the engine."""

    def operand(item: Any) -> Any:
        if isinstance(item, dict):
            return item["const"]
        if isinstance(item, str):
            return values.get(item)
        return item

    if isinstance(expr, dict) and "const" not in expr:
        ((op, argument),) = expr.items()
        if op == "and":
            return all(reference(e, values) for e in argument)
        if op == "or":
            return any(reference(e, values) for e in argument)
        if op == "not":
            return not reference(argument, values)
        left, right = operand(argument[0]), operand(argument[1])
        same = kind(left) == kind(right)
        if op == "eq":
            return same and left == right
        if op == "ne":
            return not (same and left == right)
        if not same or kind(left) not in ("number", "timestamp"):
            return False
        return {"lt": left < right, "le": left <= right, "gt": left > right, "ge": left >= right}[
            op
        ]
    value = operand(expr)
    return value is True or (kind(value) == "number" and value != 0)


NAMES = ["job.a", "job.b", "event.x", "ctx.f", "job.missing.deep"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.5, -2.0]),
    st.sampled_from([T0, T0 + timedelta(seconds=1)]),
)
OPERANDS = st.one_of(
    st.sampled_from(NAMES),
    st.none(),
    st.integers(-3, 3),
    st.booleans(),
    SCALARS.filter(lambda v: not isinstance(v, datetime)).map(lambda v: {"const": v}),
)
COMPARISON = st.builds(
    lambda op, left, right: {op: [left, right]},
    st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]),
    OPERANDS,
    OPERANDS,
)
BARE = st.sampled_from(NAMES[:4]) | st.none() | st.integers(-1, 1) | st.booleans()
EXPRESSIONS = st.recursive(
    COMPARISON | BARE,
    lambda inner: st.one_of(
        st.builds(lambda items: {"and": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"or": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ),
    max_leaves=8,
)


@given(expr=EXPRESSIONS, a=SCALARS, b=SCALARS, x=SCALARS, f=SCALARS)
@settings(max_examples=300, deadline=None)
def test_guard_expressions_evaluate_as_the_spec_defines(
    expr: Any, a: Any, b: Any, x: Any, f: Any
) -> None:
    """MACH-004: and/or/not, eq/ne by kind and value, ordering false with null or mixed kinds."""
    env = Environment({"now": T0, "job": {"a": a, "b": b}, "event": {"x": x}, "ctx": {"f": f}})
    values = {"job.a": a, "job.b": b, "event.x": x, "ctx.f": f, "job.missing.deep": None}
    assert evaluate(expr, env) is reference(expr, values)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"lt": [None, 1]}, False),
        ({"ge": [None, None]}, False),
        ({"le": [1, None]}, False),
        ({"gt": ["job.none", -1]}, False),
        ({"eq": [None, None]}, True),
        ({"eq": ["job.none", None]}, True),
        ({"ne": [None, 0]}, True),
        ({"eq": [0, False]}, False),
        ({"lt": [{"const": "a"}, {"const": "b"}]}, False),
        ({"not": {"lt": [None, 1]}}, True),
        ({"or": [{"eq": [1, 2]}, {"le": ["now", "now"]}]}, True),
        ({"and": [True, 1, "job.none"]}, False),
    ],
)
def test_guard_comparisons_with_null_follow_the_spec(expr: Any, expected: bool) -> None:
    """MACH-004: lt/le/gt/ge with null are false; eq/ne compare equality, null equals only null."""
    env = Environment({"now": T0, "job": {"none": None}, "event": {}, "ctx": {}})
    assert evaluate(expr, env) is expected


# -- selection, generated from the machine files ----------------------------------------------


def _paths(expr: Any) -> set[str]:
    """The dotted operand paths an expression reads (``now`` excluded)."""
    if isinstance(expr, dict) and "const" not in expr:
        ((op, argument),) = expr.items()
        if op in ("and", "or"):
            return set().union(*(_paths(item) for item in argument))
        if op == "not":
            return _paths(argument)
        return set().union(*(_paths(item) for item in argument))
    return {expr} if isinstance(expr, str) and expr != "now" else set()


def _reference_selection(
    document: dict[str, Any], state: str, event: str, values: dict[str, Any]
) -> tuple[str, str] | None:
    """MACH-003/MACH-005 written out: the first refusal that holds, else the first transition
    of the file, in file order, leaving ``state`` on ``event`` whose guard holds."""
    for refusal in document.get("refusals", []):
        if reference(refusal["when"], values):
            return ("refused", refusal["code"])
    for transition in document["transitions"]:
        if transition["event"] != event or state not in transition["from"]:
            continue
        guard = transition.get("guard")
        if guard is None or reference(document["guards"][guard]["expr"], values):
            return ("fires", transition["id"])
    return None


@pytest.mark.parametrize(
    "document", [JOB_MACHINE, REQUEST_MACHINE, BATCH_MACHINE], ids=["job", "request", "batch"]
)
@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_the_generated_selection_agrees_with_the_file_read_in_order(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """Machine.select runs one generated function per (state, event); for any values of the
    paths the file's guards and refusals read, it picks what reading the file in order picks."""
    from conveyor.errors import Refused
    from conveyor.machine import Machine

    machine = Machine(document)
    # mostly a (state, event) that some transition leaves, where the guards matter
    pairs = sorted({(s, t["event"]) for t in document["transitions"] for s in t["from"]})
    state, event = data.draw(
        st.sampled_from(pairs)
        | st.tuples(
            st.sampled_from(sorted(document["states"])), st.sampled_from(sorted(document["events"]))
        ),
        label="state, event",
    )
    expressions = [g["expr"] for g in document["guards"].values()]
    expressions += [r["when"] for r in document.get("refusals", [])]
    # deepest first: a path that is also a prefix (job.lease) is then null or a record
    paths = sorted(set().union(*(_paths(e) for e in expressions)), key=lambda p: -p.count("."))
    roots: dict[str, Any] = {"now": T0}
    values: dict[str, Any] = {"now": T0}
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = roots
        for part in parents:
            if node is None:
                break
            if part not in node:  # a path that is also a prefix: null or a record
                node[part] = data.draw(st.sampled_from([None, {}]), label=part)
            node = node[part]
        if node is not None and leaf not in node:
            node[leaf] = data.draw(SCALARS, label=path)
    for path in paths:
        node = roots
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[path] = node
    try:
        chosen: tuple[str, str] | None = (
            "fires",
            machine.select(state, event, Environment(roots)).id,
        )
    except Refused as error:
        chosen = ("refused", error.code) if " refused: " in str(error) else None
    assert chosen == _reference_selection(document, state, event, values)
