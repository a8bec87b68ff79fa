"""Serial groups: exclusion (never two at once) and ordering (the head goes first).

Spec: GROUP-001..003, CLAIM-003/004, UNIQ-003, LIMIT-002.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor import (
    Conveyor,
    InvalidTransition,
    Job,
    ManualClock,
    RetryPolicy,
    StaleLease,
)

from .core_support import PERMANENT, TEMPORARY, claim_one, report, tagged

LEASED = tagged("leased")
ACTIVE = tagged("active")
CLAIMABLE = tagged("claimable")


def ids(jobs: Iterable[Job]) -> list[str]:
    return [job.id for job in jobs]


def test_no_job_of_a_group_starts_while_another_is_processing(app: Conveyor) -> None:
    """GROUP-001: a processing job blocks its group; other groups and lone jobs still run."""
    app.register("task", lambda: None)
    first = app.publish("task", serial_group="g")
    second = app.publish("task", serial_group="g")
    other = app.publish("task", serial_group="h")
    alone = app.publish("task")
    assert ids(app.claim("w1", limit=10)) == [first.id, other.id, alone.id]
    assert app.claim("w2", limit=10) == []
    report(app, app.get(first.id), "succeed")
    assert ids(app.claim("w2", limit=10)) == [second.id]


def test_a_better_job_published_during_processing_waits(app: Conveyor) -> None:
    """GROUP-001: with a priority-5 job processing, a new priority-1 job of its group waits."""
    app.register("task", lambda: None)
    slow = claim_one(app, app.publish("task", priority=5, serial_group="g"))
    urgent = app.publish("task", priority=1, serial_group="g")
    assert app.claim("w2") == []
    report(app, slow, "succeed")
    assert ids(app.claim("w2")) == [urgent.id]


def test_a_temporarily_failed_head_blocks_its_group_until_it_succeeds(
    app: Conveyor, clock: ManualClock
) -> None:
    """GROUP-003: a head waiting for its retry blocks every later job of the group."""
    app.register("task", lambda: None)
    head = app.publish("task", serial_group="g", retry=RetryPolicy("constant", 60_000, 60_000))
    follower = app.publish("task", serial_group="g")
    report(app, claim_one(app, head), "fail_temporarily", error=TEMPORARY)
    assert app.claim("w1") == []
    clock.advance(60)
    again = app.claim("w1")
    assert ids(again) == [head.id]
    assert app.claim("w1") == []
    report(app, again[0], "succeed")
    assert ids(app.claim("w1")) == [follower.id]


@pytest.mark.parametrize("state", ["waiting", "broker_failed", "ready"])
def test_a_head_that_cannot_be_claimed_still_blocks(
    app: Conveyor, clock: ManualClock, state: str
) -> None:
    """GROUP-003: a waiting, broker_failed or not-yet-due head blocks its group."""
    app.register("task", lambda: None)
    head = app.publish("task", serial_group="g", delay=60 if state == "ready" else None)
    follower = app.publish("task", serial_group="g")
    if state == "waiting":
        report(app, claim_one(app, head), "wait", delay_ms=60_000)
    elif state == "broker_failed":
        app.fire(head.id, "broker_publish_failed", {"error": {"kind": "broker", "message": "x"}})
        follower_first = app.claim("w1", job_id=follower.id)
        assert follower_first == []
        return
    assert app.get(head.id).state == state
    assert app.claim("w1") == []
    clock.advance(60)
    assert ids(app.claim("w1", limit=5)) == [head.id]
    assert app.get(follower.id).state == "ready"


@pytest.mark.parametrize("ending", ["permanently_failed", "cancelled"])
def test_a_head_that_failed_for_good_no_longer_blocks(app: Conveyor, ending: str) -> None:
    """GROUP-003: permanently_failed and cancelled jobs are not active and do not block."""
    app.register("task", lambda: None)
    head = app.publish("task", serial_group="g")
    follower = app.publish("task", serial_group="g")
    if ending == "cancelled":
        app.cancel(head.id)
    else:
        report(app, claim_one(app, head), "fail_permanently", error=PERMANENT)
    assert ids(app.claim("w1")) == [follower.id]


def test_a_group_spans_queues(app: Conveyor) -> None:
    """GROUP-001: two jobs of one group in different queues still exclude each other."""
    app.register("task", lambda: None)
    first = app.publish("task", serial_group="g", queue="a")
    app.publish("task", serial_group="g", queue="b")
    assert ids(app.claim("w1", limit=5)) == [first.id]
    assert app.claim("w2", queues=["b"]) == []


def test_group_names_compare_exactly(app: Conveyor) -> None:
    """LIMIT-002: labels compare by exact, case-sensitive equality ("g", "G", "é", "e" differ)."""
    app.register("task", lambda: None)
    jobs = [app.publish("task", serial_group=g) for g in ("g", "G", "é", "e")]
    assert ids(app.claim("w1", limit=10)) == ids(jobs)


def test_one_claim_of_many_respects_exclusion_among_its_own_jobs(app: Conveyor) -> None:
    """CLAIM-003: jobs taken by one claim respect group exclusion as if claimed one by one."""
    app.register("task", lambda: None)
    jobs = [app.publish("task", serial_group=f"g{n % 3}") for n in range(9)]
    claimed = app.claim("w1", limit=9)
    assert ids(claimed) == ids(jobs[:3])


# -- a stateful model of groups, unique jobs, leases and reports ------------------------------


def model_claim(jobs: list[Job], now: Any, limit: int) -> tuple[list[str], list[str]]:
    """Which jobs one claim takes and which it discards, by the spec's guards in order."""
    state = {job.id: job.state for job in jobs}
    claimed: list[str] = []
    discarded: list[str] = []
    for job in sorted(jobs, key=lambda j: (j.priority, j.sequence)):
        if state[job.id] not in CLAIMABLE or job.available_at > now:
            continue
        siblings = [j for j in jobs if j.unique and j.identifier == job.identifier and j != job]
        if job.unique and any(state[s.id] == "finished" for s in siblings):
            state[job.id] = "redundant"
            discarded.append(job.id)
            continue
        group = [
            j for j in jobs if job.serial_group is not None and j.serial_group == job.serial_group
        ]
        idle = not any(state[j.id] in LEASED for j in group if j != job)
        active = [j for j in group if state[j.id] in ACTIVE]
        head = not active or min(active, key=lambda j: (j.priority, j.sequence)) == job
        unique_free = not job.unique or not any(state[s.id] in LEASED for s in siblings)
        if idle and head and unique_free:
            state[job.id] = "processing"
            claimed.append(job.id)
            if len(claimed) == limit:
                break
    return claimed, discarded


class GroupsAndUniques(RuleBasedStateMachine):
    """Random publishes, claims, reports, cancels, expiries; the store must match the model."""

    @initialize()
    def start(self) -> None:
        self.clock = ManualClock()
        self.app = Conveyor(
            "memory://",
            clock=self.clock,
            default_retry=RetryPolicy("constant", 2_000, 2_000, max_attempts=3),
            lease=timedelta(seconds=30),
        )
        self.app.register("task", lambda: None)
        self.tokens: dict[str, int] = {}

    def all_jobs(self) -> list[Job]:
        return self.app.jobs(limit=100_000)

    @rule(group=st.sampled_from([None, "g", "G", "h"]), priority=st.integers(0, 3))
    def publish(self, group: str | None, priority: int) -> None:
        self.app.publish("task", priority=priority, serial_group=group)

    @rule(identifier=st.sampled_from(["u1", "u2"]), priority=st.integers(0, 3))
    def publish_unique(self, identifier: str, priority: int) -> None:
        self.app.publish("task", priority=priority, unique=True, identifier=identifier)

    @rule(worker=st.sampled_from(["w1", "w2"]), limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        expected, discarded = model_claim(self.all_jobs(), self.clock.now(), limit)
        claimed = self.app.claim(worker, limit=limit)
        assert ids(claimed) == expected
        for job_id in discarded:
            assert self.app.get(job_id).state == "redundant"
        for job in claimed:
            assert job.lease is not None
            self.tokens[job.id] = job.lease.token

    @rule(data=st.data(), outcome=st.sampled_from(["succeed", "temporary", "permanent", "wait"]))
    def report(self, data: st.DataObject, outcome: str) -> None:
        if not self.tokens:
            return
        job_id = data.draw(st.sampled_from(sorted(self.tokens)))
        token = self.tokens.pop(job_id)
        before = self.app.get(job_id)
        event, params = {
            "succeed": ("succeed", {}),
            "temporary": ("fail_temporarily", {"error": TEMPORARY}),
            "permanent": ("fail_permanently", {"error": PERMANENT}),
            "wait": ("wait", {}),
        }[outcome]
        if before.lease is None or before.lease.token != token:
            with pytest.raises(StaleLease):
                self.app.fire(job_id, event, {"lease_token": token, **params})
            assert self.app.get(job_id) == before
            return
        after = self.app.fire(job_id, event, {"lease_token": token, **params})
        exhausted = before.attempts >= 3
        assert (
            after.state
            == {
                "succeed": "finished",
                "temporary": "permanently_failed" if exhausted else "temporarily_failed",
                "permanent": "permanently_failed",
                "wait": "waiting",
            }[outcome]
        )

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        jobs = self.all_jobs()
        if not jobs:
            return
        job = data.draw(st.sampled_from(jobs))
        if job.state in ACTIVE and job.state not in LEASED:
            assert self.app.cancel(job.id).state == "cancelled"
        elif job.state in LEASED:
            # CANCEL-001: a running job keeps its lease and only records the request; what
            # its outcome then becomes is tests/test_cancel_running.py's subject, so this
            # model leaves leased jobs alone.
            return
        else:
            with pytest.raises(InvalidTransition):
                self.app.cancel(job.id)

    @rule(seconds=st.sampled_from([1, 2, 10, 31]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def rescue(self) -> None:
        now = self.clock.now()
        expired = {
            j.id
            for j in self.all_jobs()
            if j.state in LEASED and j.lease and j.lease.expires_at <= now
        }
        assert set(ids(self.app.rescue_expired())) == expired

    @invariant()
    def no_two_leased_jobs_share_a_group_or_a_unique_identifier(self) -> None:
        leased = [j for j in self.all_jobs() if j.state in LEASED]
        groups = [j.serial_group for j in leased if j.serial_group is not None]
        identifiers = [j.identifier for j in leased if j.unique]
        assert len(groups) == len(set(groups))
        assert len(identifiers) == len(set(identifiers))

    @invariant()
    def every_job_is_in_exactly_one_state(self) -> None:
        jobs = self.all_jobs()
        states = sorted(JOB_STATES)
        by_state = {s: ids(self.app.jobs(states=[s], limit=100_000)) for s in states}
        assert sorted(i for found in by_state.values() for i in found) == sorted(ids(jobs))
        assert sum(count for _, _, count in self.app.status()) == len(jobs)
        for job in jobs:
            assert job.id in by_state[job.state]
            assert (job.lease is not None) == (job.state in LEASED)


JOB_STATES = tagged("active") | tagged("terminal")

GroupsAndUniques.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestGroupsAndUniqueJobsFollowTheModel = GroupsAndUniques.TestCase
