"""Unique keys (spec.md#unique-keys): a duplicate published within the period of the holder,
while the holder is in a covered state, is not stored; on every backend, on the ManualClock,
with concurrent publishers racing for one key.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from conveyor import Conveyor, InvalidRequest, ManualClock, Unique
from conveyor.uniqueness import canonical_json

from .conftest import AppFactory

BOUND = 60.0
HOUR = timedelta(hours=1)
BY_CUSTOMER: dict[str, Any] = {"fields": ["type", "payload.customer"], "period": HOUR}


def _finish(app: Conveyor, job_id: str) -> None:
    """Run the job through a worker's claim and success report."""
    [claimed] = app.claim("w1", job_id=job_id)
    assert claimed.lease is not None
    app.report(claimed.id, "succeed", {"lease_token": claimed.lease.token})


def test_a_duplicate_within_the_period_returns_the_holder(
    app: Conveyor, clock: ManualClock
) -> None:
    """UKEY-001/003/004: the key of the type and a payload field; a new job after the period."""
    app.register("send", lambda customer, n: None, unique=BY_CUSTOMER)
    first = app.publish("send", {"customer": 7, "n": 1})
    assert first.conflict is None
    assert first.uniqueness is not None
    assert first.uniqueness["period_ms"] == 3_600_000
    assert first.to_dict()["unique_key"] == first.unique_key
    clock.advance(timedelta(minutes=59))
    again = app.publish("send", {"customer": 7, "n": 2})
    assert (again.id, again.conflict) == (first.id, "discarded")
    assert again.requests[0].payload == {"customer": 7, "n": 1}
    other = app.publish("send", {"customer": 8, "n": 1})
    assert other.conflict is None
    clock.advance(timedelta(minutes=1))
    later = app.publish("send", {"customer": 7, "n": 3})
    assert later.conflict is None
    assert later.id not in (first.id, other.id)
    assert {job.id for job in app.jobs()} == {first.id, other.id, later.id}


def test_pruning_the_holder_does_not_end_the_period(app: Conveyor, clock: ManualClock) -> None:
    """UKEY-003: the claim outlives the finished holder that clear_finished deleted."""
    app.register("report", lambda: None)
    holder = app.publish("report", unique=Unique(key="nightly", period=HOUR))
    app.process() if app.broker is not None else _finish(app, holder.id)
    assert app.get(holder.id).state == "finished"
    clock.advance(timedelta(minutes=1))
    assert app.clear_finished(timedelta(0)) == 1
    duplicate = app.publish("report", unique={"key": "nightly", "period": 3600})
    assert (duplicate.id, duplicate.conflict) == (holder.id, "discarded")
    assert app.jobs() == []
    clock.advance(HOUR)
    assert app.publish("report", unique={"key": "nightly", "period": 3600}).conflict is None


def test_clear_finished_forgets_expired_claims(app: Conveyor, clock: ManualClock) -> None:
    """UKEY-003: an expired claim holds nothing, and pruning deletes its record."""
    app.register("ping", lambda: None)
    lasting = app.publish("ping", unique={"key": "forever"})
    brief = app.publish("ping", unique={"key": "hourly", "period": HOUR})
    clock.advance(HOUR)
    app.clear_finished()
    with app.store.transaction() as tx:
        assert tx.lock_unique_claim(brief.unique_key or "").job_id is None
        assert tx.lock_unique_claim(lasting.unique_key or "").job_id == lasting.id


def test_uncovered_states_let_a_new_job_in(app: Conveyor) -> None:
    """UKEY-001/003: a cancelled holder holds nothing by default; states=["ready"] ends the
    claim when the holder leaves ready."""
    app.register("sync", lambda: None)
    cancelled = app.publish("sync", unique={"key": "a"})
    app.cancel(cancelled.id)
    assert app.publish("sync", unique={"key": "a"}).conflict is None
    queued = app.publish("sync", unique={"key": "b", "states": ["ready"]})
    assert app.publish("sync", unique={"key": "b", "states": ["ready"]}).conflict == "discarded"
    app.cancel(queued.id)
    assert app.publish("sync", unique={"key": "b", "states": ["ready"]}).conflict is None


def test_replace_updates_a_holder_that_has_not_started(app: Conveyor, clock: ManualClock) -> None:
    """UKEY-005: payload, priority and run time of the new request; nothing once started."""
    app.register("index", lambda doc, rev: None)
    unique = {"fields": ["payload.doc"], "conflict": "replace"}
    holder = app.publish("index", {"doc": 1, "rev": 1}, unique=unique)
    replaced = app.publish("index", {"doc": 1, "rev": 2}, unique=unique, priority=5, delay=10)
    assert (replaced.id, replaced.conflict) == (holder.id, "replaced")
    stored = app.get(holder.id)
    assert stored.requests[0].payload == {"doc": 1, "rev": 2}
    assert stored.priority == 5
    assert stored.available_at == clock.now() + timedelta(seconds=10)
    assert stored.sequence == holder.sequence
    clock.advance(timedelta(seconds=10))
    [claimed] = app.claim("w1")
    assert claimed.id == holder.id
    late = app.publish("index", {"doc": 1, "rev": 3}, unique=unique, priority=1)
    assert (late.conflict, late.priority) == ("discarded", 5)
    assert app.get(holder.id).requests[0].payload == {"doc": 1, "rev": 2}


def test_keep_stores_the_duplicate_and_unique_mode_decides(app: Conveyor) -> None:
    """UKEY-008: the kept job is stored beside the holder; once the holder finished, the
    claim discards it as redundant (UNIQ-002)."""
    app.register("refresh", lambda: None)
    options: dict[str, Any] = {"identifier": "feed:1", "unique": {"key": "r", "conflict": "keep"}}
    holder = app.publish("refresh", **options)
    kept = app.publish("refresh", **options)
    assert kept.conflict == "kept"
    assert kept.id != holder.id
    assert kept.unique
    if app.broker is not None:
        app.process()
    else:
        _finish(app, holder.id)
        assert app.claim("w1") == []
    assert (app.get(holder.id).state, app.get(kept.id).state) == ("finished", "redundant")
    with pytest.raises(InvalidRequest, match="identifier"):
        app.publish("refresh", unique={"key": "r", "conflict": "keep"})


def test_one_call_takes_its_jobs_in_order(app: Conveyor) -> None:
    """UKEY-006 and publish_many: the key reads each job's own payload."""
    app.register("mail", lambda to: None)
    jobs = app.publish_many(
        "mail", [{"to": "a"}, {"to": "b"}, {"to": "a"}], unique={"fields": ["payload.to"]}
    )
    assert [job.conflict for job in jobs] == [None, None, "discarded"]
    assert jobs[2].id == jobs[0].id
    assert len(app.jobs()) == 2


def test_a_batch_counts_only_the_jobs_stored(app: Conveyor) -> None:
    """UKEY-004 and BATCH: a duplicate that was not stored is not a job of the batch."""
    app.register("part", lambda n: None)
    batch = app.open_batch()
    unique = {"fields": ["payload.n"]}
    parts = [app.publish("part", {"n": n % 2}, batch=batch, unique=unique) for n in range(3)]
    assert [job.conflict for job in parts] == [None, None, "discarded"]
    assert app.get_batch(batch.id).total == 2


def test_options_are_checked(app: Conveyor) -> None:
    app.register("work", lambda: None)
    with pytest.raises(InvalidRequest):
        app.publish("work", unique={"fields": ["size"]})
    with pytest.raises(InvalidRequest):
        app.publish("work", unique={"conflict": "drop"})
    with pytest.raises(InvalidRequest, match="unknown unique option"):
        app.publish("work", unique={"ttl": 3})
    with pytest.raises(InvalidRequest, match="cannot be recurring"):
        app.publish("work", unique={"key": "k"}, recurring=60)
    with pytest.raises(InvalidRequest, match="positive"):
        app.publish("work", unique=Unique(key="k", period=0))
    assert app.jobs() == []


def test_keys_are_canonical_json() -> None:
    """UKEY-002: RFC 8785 text, so every implementation computes the same digest."""
    # Members sort by UTF-16 code units: U+1F600 (D83D DE00) before U+FB01.
    value = {"b": [1.0, 1e21, 1.5e-7, 0.1], "a": "é\n", "\ufb01": None, "\U0001f600": True}
    assert canonical_json(value) == (
        '{"a":"é\\n","b":[1,1e+21,1.5e-7,0.1],"\U0001f600":true,"\ufb01":null}'
    )


def test_concurrent_publishers_store_one_job_per_key(
    make_app: AppFactory, backend: str, clock: ManualClock
) -> None:
    """UKEY-004: publishers racing on one key store exactly one job per period, and every one
    of them is returned that job: in the first round the key's row is new, in the later ones
    it holds an expired claim that every publisher would take over without the row lock."""
    first = make_app()
    apps = [first] + [
        Conveyor(store=first.store, clock=clock) if backend == "memory" else make_app()
        for _ in range(5)
    ]
    for each in apps:
        each.register("charge", lambda order: None)
    rounds = 3
    rounds_started = [0]

    def next_round() -> None:  # run by one thread when all are at the barrier
        if rounds_started[0]:
            clock.advance(HOUR)
        rounds_started[0] += 1

    start = threading.Barrier(len(apps), action=next_round)
    results: list[list[Any]] = [[] for _ in apps]
    errors: list[BaseException] = []

    def publish(index: int) -> None:
        try:
            for _ in range(rounds):
                start.wait(BOUND)
                job = apps[index].publish(
                    "charge", {"order": 1}, unique={"fields": ["payload.order"], "period": HOUR}
                )
                results[index].append(job)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not errors, errors
    stored = first.jobs(limit=100)
    assert len(stored) == rounds
    for round_ in range(rounds):
        ids = {results[index][round_].id for index in range(len(apps))}
        assert len(ids) == 1
        conflicts = [results[index][round_].conflict for index in range(len(apps))]
        assert conflicts.count(None) == 1
