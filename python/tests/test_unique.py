"""Unique mode and identifiers: the work for an identifier runs once, duplicates end redundant.

Spec: UNIQ-001..004, IDENT-001/002.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, InvalidRequest, ManualClock

from .conftest import AppFactory
from .core_support import PERMANENT, claim_one, drive_to, memory_app, report, tagged


def counting(app: Conveyor, type: str = "work") -> list[str]:
    """Register a handler that records each run of its ``key`` argument."""
    runs: list[str] = []
    lock = threading.Lock()

    def work(key: str) -> None:
        with lock:
            runs.append(key)

    app.register(type, work)
    return runs


def test_unique_without_identifier_is_refused(app: Conveyor) -> None:
    """UNIQ-001: unique needs an identifier; nothing is stored."""
    counting(app)
    with pytest.raises(InvalidRequest, match="identifier"):
        app.publish("work", {"key": "a"}, unique=True)
    assert app.status() == []


def test_unique_and_recurring_together_are_refused(app: Conveyor) -> None:
    """UNIQ-001: a unique job cannot be recurring; nothing is stored."""
    counting(app)
    with pytest.raises(InvalidRequest, match="recurring"):
        app.publish("work", {"key": "a"}, unique=True, identifier="x", recurring=60)
    assert app.status() == []


def test_a_duplicate_ends_redundant_and_never_runs(app: Conveyor) -> None:
    """UNIQ-002: two unique jobs for one identifier: the first runs, the second is redundant."""
    runs = counting(app)
    first = app.publish("work", {"key": "first"}, unique=True, identifier="invoice:1")
    second = app.publish("work", {"key": "second"}, unique=True, identifier="invoice:1")
    app.process()
    assert runs == ["first"]
    assert app.get(first.id).state == "finished"
    got = app.get(second.id)
    assert (got.state, got.attempts, got.requests[0].state) == ("redundant", 0, "cancelled")


def test_a_duplicate_published_after_the_work_is_redundant_too(app: Conveyor) -> None:
    """UNIQ-002: while the finished job is stored, later duplicates never run."""
    runs = counting(app)
    app.publish("work", {"key": "first"}, unique=True, identifier="i")
    app.process()
    late = app.publish("work", {"key": "late"}, unique=True, identifier="i")
    app.process()
    assert runs == ["first"]
    assert app.get(late.id).state == "redundant"


def test_a_processing_sibling_blocks_the_duplicate(app: Conveyor) -> None:
    """UNIQ-003: two unique jobs of one identifier are never leased at once."""
    counting(app)
    first = app.publish("work", {"key": "a"}, unique=True, identifier="i")
    second = app.publish("work", {"key": "b"}, unique=True, identifier="i")
    other = app.publish("work", {"key": "c"}, unique=True, identifier="j")
    assert [j.id for j in app.claim("w1", limit=5)] == [first.id, other.id]
    assert app.claim("w2", limit=5) == []
    assert app.get(second.id).state == "ready"


def test_blocked_siblings_do_not_hold_back_the_rest_of_a_claim(app: Conveyor) -> None:
    """CLAIM-004: one claim of 2 takes the first sibling and the next claimable job."""
    counting(app)
    siblings = [
        app.publish("work", {"key": str(n)}, unique=True, identifier="i", priority=1)
        for n in range(20)
    ]
    other = app.publish("work", {"key": "z"}, priority=2)
    assert [j.id for j in app.claim("w1", limit=2)] == [siblings[0].id, other.id]


@pytest.mark.parametrize("ending", ["permanently_failed", "cancelled"])
def test_when_the_first_fails_for_good_the_next_one_runs(app: Conveyor, ending: str) -> None:
    """UNIQ-004: work not performed (permanently_failed, cancelled) lets a sibling run."""
    runs = counting(app)
    first = app.publish("work", {"key": "first"}, unique=True, identifier="i")
    second = app.publish("work", {"key": "second"}, unique=True, identifier="i")
    if ending == "cancelled":
        app.cancel(first.id)
    else:
        report(app, claim_one(app, first), "fail_permanently", error=PERMANENT)
    app.process()
    assert runs == ["second"]
    assert app.get(second.id).state == "finished"


def test_jobs_that_are_not_unique_ignore_identifiers(app: Conveyor) -> None:
    """Non-unique jobs with the same identifier all run, beside a unique one."""
    runs = counting(app)
    app.publish("work", {"key": "u"}, unique=True, identifier="i")
    app.publish("work", {"key": "p1"}, identifier="i")
    app.publish("work", {"key": "p2"}, identifier="i")
    app.process()
    assert runs == ["u", "p1", "p2"]


def test_unique_siblings_span_queues(app: Conveyor) -> None:
    """Unique siblings are siblings whatever their queues."""
    runs = counting(app)
    app.publish("work", {"key": "a"}, unique=True, identifier="i", queue="one")
    app.publish("work", {"key": "b"}, unique=True, identifier="i", queue="two")
    app.process()
    assert runs == ["a"]


def test_identifiers_compare_exactly(app: Conveyor) -> None:
    """LIMIT-002: "Order-1" and "order-1" are different identifiers."""
    runs = counting(app)
    app.publish("work", {"key": "upper"}, unique=True, identifier="Order-1")
    app.publish("work", {"key": "lower"}, unique=True, identifier="order-1")
    app.process()
    assert runs == ["upper", "lower"]


def test_pruning_the_finished_job_lets_the_work_run_again(
    app: Conveyor, clock: ManualClock
) -> None:
    """UNIQ consequences: a redundant sibling left after pruning the finished one does not block."""
    runs = counting(app)
    app.publish("work", {"key": "first"}, unique=True, identifier="i")
    app.process()
    clock.advance(timedelta(hours=2))
    app.publish("work", {"key": "dup"}, unique=True, identifier="i")
    app.process()
    clock.advance(timedelta(hours=2))
    assert app.clear_finished(older_than=timedelta(hours=3)) == 1
    assert [j.state for j in app.jobs()] == ["redundant"]
    app.publish("work", {"key": "again"}, unique=True, identifier="i")
    app.process()
    assert runs == ["first", "again"]


def test_a_claim_read_before_its_sibling_succeeded_cannot_be_written_after(
    app: Conveyor, backend: str
) -> None:
    """UNIQ-003 under a race: a worker read the duplicate as claimable (its sibling not yet
    done), the sibling then ran and succeeded, and only then does the claim write arrive.
    A succeeded unique job keeps holding its identifier's lock, so that write is refused."""
    if backend == "memory":
        pytest.skip("the memory store decides each claim atomically, with no snapshot")
    app.register("work", lambda: None)
    first = app.publish("work", unique=True, identifier="once")
    duplicate = app.publish("work", unique=True, identifier="once")
    stale = app.get(duplicate.id)  # read while its sibling is still ready
    report(app, claim_one(app, first), "succeed")
    idle_sibling = {
        "dependencies_succeeded": True,
        "serial_group_idle": True,
        "serial_group_head": True,
        "unique_sibling_processing": False,
        "unique_sibling_succeeded": False,
    }
    fired = app.lifecycle.engine.fire(
        stale,
        app.lifecycle._firing(
            "claim", app.now(), {"worker_id": "w2", "lease_ms": 1000}, idle_sibling
        ),
    )
    assert fired.job.state == "processing"
    with app.store.transaction() as tx:
        assert not tx.save_job(stale, fired.job)
    assert app.get(duplicate.id).state == "ready"
    assert [job.state for job in app.claim("w2")] == []  # discarded, not claimed
    assert app.get(duplicate.id).state == "redundant"


def test_concurrent_publishers_and_workers_run_the_work_once(
    make_app: AppFactory, backend: str
) -> None:
    """UNIQ-003: 2 publishers x 20 duplicates while 2 workers claim: the handler runs once."""
    shared = backend == "memory"  # memory stores are per app: the threads share one
    apps = [make_app() for _ in range(1 if shared else 4)]
    apps = apps * 4 if shared else apps
    runs: list[str] = []
    lock = threading.Lock()

    def work(key: str) -> None:
        with lock:
            runs.append(key)

    for app in apps[: 1 if shared else 4]:
        app.register("work", work)
    start = threading.Barrier(4)
    published = threading.Event()
    publishers_left = [2]
    errors: list[BaseException] = []

    def publisher(app: Conveyor, name: str) -> None:
        try:
            start.wait()
            for n in range(20):
                app.publish("work", {"key": f"{name}{n}"}, unique=True, identifier="once")
        except BaseException as error:
            errors.append(error)
        finally:
            with lock:
                publishers_left[0] -= 1
                if publishers_left[0] == 0:
                    published.set()

    def worker(app: Conveyor, name: str) -> None:
        try:
            start.wait()
            while True:
                done = published.is_set()
                stats = app.process(worker_id=name, handle_signals=False)
                if done and stats.jobs == 0:
                    return
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=publisher, args=(apps[0], "a")),
        threading.Thread(target=publisher, args=(apps[1], "b")),
        threading.Thread(target=worker, args=(apps[2], "w1")),
        threading.Thread(target=worker, args=(apps[3], "w2")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    apps[0].process()
    assert len(runs) == 1
    states = Counter(j.state for j in apps[0].jobs(limit=1000))
    assert states == {"finished": 1, "redundant": 39}


# -- unfinished_identifiers -----------------------------------------------------------------

UNFINISHED = tagged("unfinished")
REACHABLE = sorted(tagged("active") | tagged("terminal"))


@given(
    jobs=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(REACHABLE)),
        max_size=10,
    )
)
@settings(max_examples=40, deadline=None)
def test_unfinished_identifiers_are_those_with_an_unfinished_job(
    jobs: list[tuple[str, str]],
) -> None:
    """IDENT-002: active and permanently_failed count; finished, redundant, cancelled do not."""
    app = memory_app()
    for identifier, state in jobs:
        drive_to(app, state, identifier=identifier)
    stored = app.jobs(limit=1000)
    expected = {j.identifier for j in stored if j.state in UNFINISHED}
    assert app.unfinished_identifiers(["a", "b", "c", "d", "never"]) == expected


def test_unfinished_identifiers_by_state_on_every_backend(app: Conveyor) -> None:
    """IDENT-002 on each store, one identifier per state."""
    for state in REACHABLE:
        drive_to(app, state, identifier=f"id-{state}")
    asked = [f"id-{state}" for state in REACHABLE] + ["unknown"]
    expected = {f"id-{state}" for state in REACHABLE if state in UNFINISHED}
    assert app.unfinished_identifiers(asked) == expected
    assert expected == {
        f"id-{s}"
        for s in (
            "ready",
            "processing",
            "temporarily_failed",
            "waiting",
            "broker_failed",
            "back_to_broker",
            "permanently_failed",
        )
    }


def test_unfinished_identifiers_accepts_a_thousand_identifiers(app: Conveyor) -> None:
    """IDENT-002: at least 1000 identifiers in one call."""
    counting(app)
    app.publish("work", {"key": "x"}, identifier="id-999")
    asked = [f"id-{n}" for n in range(1000)]
    assert app.unfinished_identifiers(asked) == {"id-999"}


def test_a_duplicate_that_is_not_due_is_discarded_only_once_due(
    app: Conveyor, clock: ManualClock
) -> None:
    """CLAIM-006: a delayed unique duplicate stays ready until due, then ends redundant."""
    runs = counting(app)
    first = app.publish("work", {"key": "first"}, unique=True, identifier="invoice:9")
    claimed = claim_one(app, first)
    report(app, claimed, "succeed")
    later = app.publish(
        "work", {"key": "later"}, unique=True, identifier="invoice:9", delay=timedelta(minutes=1)
    )
    assert app.claim("w1") == []
    assert app.get(later.id).state == "ready"
    clock.advance(timedelta(minutes=1))
    assert app.claim("w1") == []
    assert app.get(later.id).state == "redundant"
    assert runs == []
