"""Dependencies: B starts after A succeeded; if A fails for good, B and its dependents end.

Spec: DEP-001..006.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, Job, ManualClock, UnknownDependency

from .core_support import PERMANENT, claim_one, drive_to, memory_app, report


def ids(jobs: Sequence[Job]) -> list[str]:
    return [job.id for job in jobs]


def test_an_unknown_dependency_is_refused_and_nothing_is_stored(app: Conveyor) -> None:
    """DEP-001: depends_on must name stored jobs; otherwise UnknownDependency, no record."""
    app.register("task", lambda: None)
    known = app.publish("task")
    with pytest.raises(UnknownDependency, match="999999"):
        app.publish("task", depends_on=[known.id, "999999"])
    assert [j.id for j in app.jobs()] == [known.id]


def test_a_dependent_waits_until_its_dependency_finished(app: Conveyor) -> None:
    """DEP-002: B is passed over, even with a better priority, until A is finished."""
    app.register("task", lambda: None)
    first = app.publish("task", priority=5)
    second = app.publish("task", priority=1, depends_on=[first.id])
    assert ids(app.claim("w1", limit=5)) == [first.id]
    assert app.claim("w2") == []
    report(app, app.get(first.id), "succeed")
    assert ids(app.claim("w2")) == [second.id]


def test_a_redundant_dependency_counts_as_succeeded(app: Conveyor) -> None:
    """DEP-002: redundant is tagged succeeded, so its dependents run."""
    app.register("task", lambda: None)
    duplicate = drive_to(app, "redundant")
    dependent = app.publish("task", depends_on=[duplicate.id])
    assert ids(app.claim("w1")) == [dependent.id]


@pytest.mark.parametrize("ending", ["permanently_failed", "cancelled"])
def test_a_failed_dependency_cancels_its_dependents_recursively(app: Conveyor, ending: str) -> None:
    """DEP-003: dependents and their dependents end cancelled with kind dependency_failed."""
    app.register("task", lambda: None)
    root = app.publish("task")
    child = app.publish("task", depends_on=[root.id])
    grandchild = app.publish("task", depends_on=[child.id])
    unrelated = app.publish("task")
    if ending == "cancelled":
        app.cancel(root.id)
    else:
        report(app, claim_one(app, root), "fail_permanently", error=PERMANENT)
    for job in (child, grandchild):
        got = app.get(job.id)
        assert got.state == "cancelled"
        assert got.last_error is not None
        assert got.last_error.kind == "dependency_failed"
        assert got.finished_at == app.now()
    assert app.get(child.id).last_error.message.find(root.id) >= 0  # type: ignore[union-attr]
    assert app.get(unrelated.id).state == "ready"


def test_publishing_after_the_dependency_failed_cancels_at_once(app: Conveyor) -> None:
    """DEP-005: the publish succeeds and returns the job already cancelled."""
    app.register("task", lambda: None)
    failed = drive_to(app, "permanently_failed")
    late = app.publish("task", depends_on=[failed.id])
    assert late.state == "cancelled"
    assert app.get(late.id).state == "cancelled"
    assert late.last_error is not None
    assert late.last_error.kind == "dependency_failed"


def test_retrying_a_job_with_a_failed_dependency_cancels_it_again(app: Conveyor) -> None:
    """DEP-004: retry rechecks dependencies; retry the dependency first, then the job."""
    app.register("task", lambda: None)
    root = app.publish("task")
    child = app.publish("task", depends_on=[root.id])
    report(app, claim_one(app, root), "fail_permanently", error=PERMANENT)
    assert app.retry(child.id).state == "cancelled"
    assert app.get(child.id).state == "cancelled"
    assert app.retry(root.id).state == "ready"
    assert app.retry(child.id).state == "ready"
    report(app, claim_one(app, root), "succeed")
    assert ids(app.claim("w1")) == [child.id]


def test_pruning_keeps_jobs_an_active_job_depends_on(app: Conveyor, clock: ManualClock) -> None:
    """DEP-006: clear_finished never deletes a dependency of an active job."""
    app.register("task", lambda: None)
    done = app.publish("task")
    report(app, claim_one(app, done), "succeed")
    blocker = app.publish("task")
    waiting = app.publish("task", depends_on=[done.id, blocker.id])
    clock.advance(timedelta(days=1))
    assert app.clear_finished() == 0
    assert app.get(done.id).state == "finished"
    report(app, claim_one(app, blocker), "succeed")
    report(app, claim_one(app, waiting), "succeed")
    clock.advance(timedelta(days=1))
    assert app.clear_finished() == 3
    assert app.jobs() == []


def test_dependencies_span_queues(app: Conveyor) -> None:
    """DEP-001/002: a dependency may live in any queue."""
    app.register("task", lambda: None)
    first = app.publish("task", queue="one")
    second = app.publish("task", queue="two", depends_on=[first.id])
    assert app.claim("w1", queues=["two"]) == []
    report(app, claim_one(app, first), "succeed")
    assert ids(app.claim("w1", queues=["two"])) == [second.id]


@given(
    parents=st.lists(st.lists(st.integers(0, 20), max_size=3), min_size=1, max_size=10),
    data=st.data(),
    held_back=st.booleans(),
)
@settings(max_examples=50, deadline=None)
def test_a_failure_cancels_exactly_its_transitive_dependents(
    parents: list[list[int]], data: st.DataObject, held_back: bool
) -> None:
    """DEP-003: over random dependency graphs, exactly the transitive dependents are cancelled."""
    app = memory_app()
    jobs = []
    for number, wanted in enumerate(parents):
        depends = sorted({jobs[i % number].id for i in wanted} if number else set())
        jobs.append(app.publish("task", depends_on=depends))
    victim = data.draw(st.sampled_from(jobs), label="job that fails")
    doomed = {victim.id}
    for job in jobs:  # published in order, so one pass finds every transitive dependent
        if set(job.depends_on) & doomed:
            doomed.add(job.id)
    if held_back:  # cancel from broker_failed rather than ready: same consequences
        app.fire(victim.id, "broker_publish_failed", {"error": {"kind": "x", "message": "y"}})
    app.cancel(victim.id)
    for job in jobs:
        got = app.get(job.id)
        if job.id == victim.id:
            assert got.state == "cancelled"
        elif job.id in doomed:
            assert got.state == "cancelled"
            assert got.last_error is not None
            assert got.last_error.kind == "dependency_failed"
        else:
            assert (got.state, got.last_error) == ("ready", None)
