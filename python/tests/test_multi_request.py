"""Jobs of several requests: run in order under one lease, resume at the failed request.

Spec: MULTI-001..004, machines/request.json, OPS-004.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import Call, Conveyor, ManualClock, PermanentError, RetryPolicy

from .core_support import PERMANENT, TEMPORARY, claim_one, memory_app, report


def request_states(app: Conveyor, job_id: str) -> list[str]:
    return [r.state for r in app.get(job_id).requests]


@given(
    size=st.integers(1, 4),
    data=st.data(),
    failures=st.integers(0, 3),
    permanent=st.booleans(),
)
@settings(max_examples=50, deadline=None)
def test_a_retry_resumes_at_the_failed_request_and_never_reruns_earlier_ones(
    size: int, data: st.DataObject, failures: int, permanent: bool
) -> None:
    """MULTI-003/004: earlier requests run once; the failed one reruns; later ones wait."""
    failing = data.draw(st.integers(0, size - 1), label="failing request")
    app = memory_app()
    clock: ManualClock = app.clock  # type: ignore[assignment]
    runs: Counter[int] = Counter()

    def step(index: int) -> None:
        runs[index] += 1
        if index == failing and runs[index] <= failures:
            raise PermanentError("bad") if permanent else ConnectionError("down")

    app.register("step", step, retry=RetryPolicy("constant", 1000, 1000))
    job = app.publish_job([Call("step", {"index": i}) for i in range(size)])
    for run in range(1, failures + 1):
        app.process(limit=1)
        got = app.get(job.id)
        assert got.state == ("permanently_failed" if permanent else "temporarily_failed")
        expected = ["succeeded"] * failing + ["failed"] + ["pending"] * (size - failing - 1)
        assert [r.state for r in got.requests] == expected
        assert [r.attempts for r in got.requests] == [1] * failing + [run] + [0] * (
            size - failing - 1
        )
        assert got.requests[failing].error is not None
        assert got.last_error is not None
        assert got.last_error.request == failing
        if permanent:
            reopened = app.retry(job.id)
            assert [r.state for r in reopened.requests][failing] == "pending"
            assert reopened.requests[:failing] == got.requests[:failing]
        clock.advance(1)
    app.process(limit=1)
    done = app.get(job.id)
    assert done.state == "finished"
    assert [r.state for r in done.requests] == ["succeeded"] * size
    assert runs == {i: (failures + 1 if i == failing else 1) for i in range(size)}


def test_request_states_follow_the_request_machine_step_by_step(
    app: Conveyor, clock: ManualClock
) -> None:
    """MULTI-001/002, R01..R05: each job event moves the current request as request.json says."""
    app.register("step", lambda index: None)
    job = app.publish_job([Call("step", {"index": i}) for i in range(3)])
    assert request_states(app, job.id) == ["pending"] * 3
    claimed = claim_one(app, job)
    assert request_states(app, job.id) == ["running", "pending", "pending"]
    report(app, claimed, "succeed")
    assert request_states(app, job.id) == ["succeeded", "running", "pending"]
    report(app, claimed, "fail_temporarily", error=TEMPORARY)
    assert request_states(app, job.id) == ["succeeded", "failed", "pending"]
    assert app.get(job.id).state == "temporarily_failed"
    app.requeue(job.id)
    claimed = claim_one(app, job, lease_ms=1000)
    assert request_states(app, job.id) == ["succeeded", "running", "pending"]
    assert [r.attempts for r in app.get(job.id).requests] == [1, 2, 0]
    report(app, claimed, "wait", delay_ms=0)
    assert request_states(app, job.id) == ["succeeded", "pending", "pending"]
    assert [r.attempts for r in app.get(job.id).requests] == [1, 1, 0]
    claimed = claim_one(app, job, lease_ms=1000)
    clock.advance(1)
    app.rescue_expired()
    assert request_states(app, job.id) == ["succeeded", "failed", "pending"]
    clock.advance(timedelta(minutes=5))
    claimed = claim_one(app, job)
    report(app, claimed, "succeed")
    assert request_states(app, job.id) == ["succeeded", "succeeded", "running"]
    done = report(app, claimed, "succeed")
    assert done.state == "finished"
    assert [r.state for r in done.requests] == ["succeeded"] * 3
    assert [r.attempts for r in done.requests] == [1, 3, 1]


def test_ending_a_job_cancels_only_its_unfinished_requests(app: Conveyor) -> None:
    """R06/R07: cancel leaves succeeded requests alone; retry reopens the cancelled ones."""
    app.register("step", lambda index: None)
    job = app.publish_job([Call("step", {"index": i}) for i in range(3)])
    claimed = claim_one(app, job)
    report(app, claimed, "succeed")
    report(app, claimed, "fail_temporarily", error=TEMPORARY)
    cancelled = app.cancel(job.id)
    assert [r.state for r in cancelled.requests] == ["succeeded", "cancelled", "cancelled"]
    retried = app.retry(job.id)
    assert [r.state for r in retried.requests] == ["succeeded", "pending", "pending"]
    assert all(r.error is None for r in retried.requests)


def test_an_outcome_other_than_success_ends_the_claim(app: Conveyor) -> None:
    """MULTI-004: after a failure, later requests do not run under that claim."""
    ran: list[int] = []

    def step(index: int) -> None:
        ran.append(index)
        if index == 1:
            raise PermanentError("stop here")

    app.register("step", step)
    job = app.publish_job([Call("step", {"index": i}) for i in range(3)])
    app.process()
    assert ran == [0, 1]
    got = app.get(job.id)
    assert got.state == "permanently_failed"
    assert [r.state for r in got.requests] == ["succeeded", "failed", "pending"]


def test_each_request_is_committed_before_the_next_handler_starts(app: Conveyor) -> None:
    """MULTI-002: when request 2 starts, the store already shows request 1 succeeded."""
    seen: list[list[str]] = []
    job_ids: list[str] = []

    def step(index: int) -> None:
        if job_ids:
            seen.append([r.state for r in app.get(job_ids[0]).requests])

    app.register("step", step)
    job_ids.append(app.publish_job([Call("step", {"index": i}) for i in range(3)]).id)
    app.process()
    assert seen == [
        ["running", "pending", "pending"],
        ["succeeded", "running", "pending"],
        ["succeeded", "succeeded", "running"],
    ]


def test_requests_of_different_types_run_their_own_handlers(app: Conveyor) -> None:
    """MULTI-001: requests run in order, each with the handler of its type."""
    ran: list[str] = []
    app.register("charge", lambda amount: ran.append(f"charge {amount}"))
    app.register("mail", lambda to: ran.append(f"mail {to}"))
    job = app.publish_job([Call("charge", {"amount": 5}), Call("mail", {"to": "a@b"})])
    app.process()
    assert ran == ["charge 5", "mail a@b"]
    assert app.get(job.id).state == "finished"
    perm = app.publish_job([Call("charge", {"amount": 1}), Call("mail", {"wrong": 1})])
    app.process()
    got = app.get(perm.id)
    assert got.state == "permanently_failed"
    assert got.last_error is not None
    assert got.last_error.request == 1
    assert PERMANENT["kind"] == got.last_error.kind
