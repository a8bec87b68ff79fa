"""The order in which jobs start: priority, sequence, serial-group heads, ranges, queues, time.

Spec: ORDER-001..005, CLAIM-002/004, GROUP-002.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import ConfigurationError, Conveyor, ManualClock, PriorityRange

from .core_support import memory_app, sqlite_app


@dataclass(frozen=True)
class Planned:
    number: int
    priority: int
    group: str | None
    queue: str = "default"


def model_order(jobs: list[Planned]) -> list[int]:
    """Repeatedly start the least (priority, sequence) job that heads its group (GROUP-002)."""
    remaining = list(jobs)
    order = []
    while remaining:

        def heads(job: Planned) -> bool:
            group = [j for j in remaining if j.group is not None and j.group == job.group]
            return job.group is None or min(group, key=key) == job

        def key(job: Planned) -> tuple[int, int]:
            return (job.priority, job.number)

        chosen = min((j for j in remaining if heads(j)), key=key)
        order.append(chosen.number)
        remaining.remove(chosen)
    return order


PLANS = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from([None, None, "g1", "g2", "G1"])),
    min_size=1,
    max_size=14,
).map(lambda rows: [Planned(n, p, g) for n, (p, g) in enumerate(rows)])


def run_plan(app: Conveyor, plan: list[Planned]) -> list[int]:
    ran: list[int] = []
    app.register("step", ran.append)
    for job in plan:
        app.publish("step", job.number, priority=job.priority, serial_group=job.group)
    # One job per claim: the model starts the least head after each job ends; a batch claims
    # several heads at once, in that order, before the next head of a group is claimable.
    stats = app.process(batch_size=1)
    assert stats.jobs == len(plan)
    return ran


@given(plan=PLANS)
@settings(max_examples=60, deadline=None)
def test_jobs_start_in_model_order_on_memory(plan: list[Planned]) -> None:
    """ORDER-002 / GROUP-002: one worker starts jobs exactly in the model's order."""
    assert run_plan(memory_app(), plan) == model_order(plan)


@given(plan=PLANS)
@settings(max_examples=12, deadline=None)
def test_jobs_start_in_model_order_on_sqlite(plan: list[Planned]) -> None:
    """The SQL claim query gives the same order as the model."""
    with sqlite_app() as app:
        assert run_plan(app, plan) == model_order(plan)


def test_the_canonical_group_runs_a_b_d_e_g_c_f(app: Conveyor) -> None:
    """GROUP canonical case: a1 b1 c2 d1 e1 f2 g1 in one group run as a b d e g c f."""
    ran: list[str] = []
    app.register("echo", ran.append)
    for letter, priority in zip("abcdefg", [1, 1, 2, 1, 1, 2, 1], strict=True):
        app.publish("echo", letter, priority=priority, serial_group="g")
    app.process()
    assert "".join(ran) == "abdegcf"


def test_priority_beats_sequence_without_groups(app: Conveyor) -> None:
    """ORDER-002: lower priority first, publish order among equals, across queues."""
    ran: list[str] = []
    app.register("echo", ran.append)
    for text, priority, queue in [("x", 5, "a"), ("y", 1, "b"), ("z", 5, "b"), ("w", 1, "a")]:
        app.publish("echo", text, priority=priority, queue=queue)
    app.process()
    assert ran == ["y", "w", "x", "z"]


def test_one_claim_takes_several_jobs_in_order(app: Conveyor) -> None:
    """CLAIM-002: a claim of n returns at most n jobs, in (priority, sequence) order."""
    app.register("task", lambda: None)
    jobs = [app.publish("task", priority=p) for p in (3, 1, 2, 1)]
    claimed = app.claim("w1", limit=3)
    assert [j.id for j in claimed] == [jobs[1].id, jobs[3].id, jobs[2].id]
    assert all(j.state == "processing" for j in claimed)
    assert app.claim("w2", limit=5)[0].id == jobs[0].id
    assert app.claim("w3") == []


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("10", 10, 10),
        ("20-40", 20, 40),
        ("25-", 25, None),
        ("-20", None, 20),
        ("0-32767", 0, 32767),
        ("05", 5, 5),  # ORDER-006: leading zeros allowed, read as decimal
        ("-0010", None, 10),
        ("0" * 30 + "7-00032767", 7, 32767),
        (None, None, None),
        ("", None, None),
    ],
)
def test_priority_ranges_parse_the_four_forms(text: str | None, low: int, high: int) -> None:
    """ORDER-004: N, A-B, A- and -B (nothing means every priority)."""
    assert PriorityRange.parse(text) == PriorityRange(low, high)


@pytest.mark.parametrize(
    "text",
    [
        *("-", "abc", "10-5", "1-2-3", "1,2", "--3", "1.5", "x-", "40000", "0-99999", "-32768"),
        *(" 7 ", "+5", "\u0663", "1" * 5000, "0-" + "9" * 5000),  # ORDER-006
    ],
)
def test_malformed_priority_ranges_are_configuration_errors(text: str) -> None:
    """ORDER-004: anything but N, A-B, A-, -B with 0 <= A <= B <= 32767 is refused."""
    with pytest.raises(ConfigurationError, match="priority range"):
        PriorityRange.parse(text)


@given(
    low=st.none() | st.integers(0, 20), high=st.none() | st.integers(0, 20), p=st.integers(0, 20)
)
@settings(max_examples=60, deadline=None)
def test_a_range_contains_exactly_the_priorities_between_its_bounds(
    low: int | None, high: int | None, p: int
) -> None:
    """ORDER-004: membership is low <= p <= high with open ends."""
    if low is not None and high is not None and low > high:
        low, high = high, low
    text = f"{'' if low is None else low}-{'' if high is None else high}"
    if low is None and high is None:
        text = ""
    span = PriorityRange.parse(text)
    assert (p in span) == ((low is None or p >= low) and (high is None or p <= high))


@given(
    priorities=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    span=st.sampled_from(["20-40", "25-", "-20", "10"]),
)
@settings(max_examples=40, deadline=None)
def test_a_restricted_worker_claims_only_inside_its_range(priorities: list[int], span: str) -> None:
    """ORDER-004: process(priorities=...) runs the jobs in range, in order, and leaves the rest."""
    app = memory_app()
    ran: list[int] = []
    app.register("step", ran.append)
    for number, priority in enumerate(priorities):
        app.publish("step", number, priority=priority)
    app.process(priorities=span)
    inside = PriorityRange.parse(span)
    expected = sorted((p, n) for n, p in enumerate(priorities) if p in inside)
    assert ran == [n for _, n in expected]
    left = {j.requests[0].payload for j in app.jobs(states=["ready"])}
    assert left == {n for n, p in enumerate(priorities) if p not in inside}


def test_a_restricted_worker_passes_over_a_better_job_outside_its_range(app: Conveyor) -> None:
    """ORDER-004 / CLAIM-004: the range filters, it does not block on jobs outside it."""
    app.register("task", lambda: None)
    outside = app.publish("task", priority=1)
    inside = app.publish("task", priority=30)
    claimed = app.claim("w1", priorities="20-40")
    assert [j.id for j in claimed] == [inside.id]
    assert app.get(outside.id).state == "ready"


@given(queues=st.lists(st.sampled_from(["mail", "pdf", "default"]), min_size=1, max_size=10))
@settings(max_examples=40, deadline=None)
def test_a_worker_takes_only_the_queues_it_names(queues: list[str]) -> None:
    """CLAIM-002: a claim on queues (mail, pdf) never takes a job of another queue."""
    app = memory_app()
    ran: list[int] = []
    app.register("step", ran.append)
    for number, queue in enumerate(queues):
        app.publish("step", number, queue=queue)
    app.process(queues=("mail", "pdf"))
    assert ran == [n for n, q in enumerate(queues) if q in ("mail", "pdf")]
    assert {j.queue for j in app.jobs(states=["ready"])} <= {"default"}


def test_queue_filter_on_every_backend(app: Conveyor) -> None:
    """CLAIM-002: claims filter by queue in the store."""
    app.register("task", lambda: None)
    mail = app.publish("task", queue="mail")
    app.publish("task", queue="pdf")
    assert [j.id for j in app.claim("w1", queues=["mail"], limit=5)] == [mail.id]


@given(delay_ms=st.integers(1, 10**8))
@settings(max_examples=40, deadline=None)
def test_a_job_is_never_claimed_before_available_at(delay_ms: int) -> None:
    """ORDER-005: not claimed 1 ms before available_at, claimed exactly at it."""
    app = memory_app()
    clock: ManualClock = app.clock  # type: ignore[assignment]
    job = app.publish("task", delay=timedelta(milliseconds=delay_ms))
    assert job.available_at == app.now() + timedelta(milliseconds=delay_ms)
    clock.advance(timedelta(milliseconds=delay_ms - 1))
    assert app.claim("w1") == []
    clock.advance(timedelta(milliseconds=1))
    assert [j.id for j in app.claim("w1")] == [job.id]


def test_available_at_holds_on_every_backend(app: Conveyor, clock: ManualClock) -> None:
    """ORDER-005: a delayed job waits; a later, due job of worse priority runs meanwhile."""
    app.register("task", lambda: None)
    later = app.publish("task", priority=1, available_at=clock.now() + timedelta(minutes=5))
    due = app.publish("task", priority=9)
    assert [j.id for j in app.claim("w1", limit=5)] == [due.id]
    clock.advance(timedelta(minutes=4, seconds=59, milliseconds=999))
    assert app.claim("w1") == []
    clock.advance(timedelta(milliseconds=1))
    assert [j.id for j in app.claim("w1")] == [later.id]


def test_a_retried_job_keeps_its_sequence(app: Conveyor, clock: ManualClock) -> None:
    """ORDER-002: a retried job keeps its place among jobs of equal priority."""
    app.register("task", lambda: None)
    first = app.publish("task")
    [claimed] = app.claim("w1")
    app.fire(first.id, "wait", {"lease_token": claimed.lease.token, "delay_ms": 0})  # type: ignore[union-attr]
    second = app.publish("task")
    assert app.get(first.id).sequence < second.sequence
    assert [j.id for j in app.claim("w1")] == [first.id]
