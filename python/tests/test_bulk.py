"""Bulk publishing stores exactly what single publishes store (PostgreSQL sends it by COPY).

Spec: JOB-001, JOB-002, TAG-001, DEP-001.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor import Conveyor, InvalidPayload, InvalidRequest, PayloadTooLarge, UnknownType
from conveyor.codec import MAX_PAYLOAD_BYTES

FIELDS = (
    "queue",
    "priority",
    "state",
    "available_at",
    "retry_policy",
    "serial_group",
    "identifier",
    "unique",
    "tags",
    "metadata",
    "depends_on",
    "attempts",
    "requests",
)


def options(n: int, first: str) -> dict[str, object]:
    """Varied options: every column the insert writes takes more than one value."""
    return {
        "queue": ("mail", "reports")[n % 2],
        "priority": 10 + n % 3,
        "delay": timedelta(seconds=n % 4),
        "serial_group": f"group-{n % 3}" if n % 5 == 0 else None,
        "identifier": f"thing-{n}" if n % 7 == 0 else None,
        "unique": n % 7 == 0,
        "tags": [f"customer:{n % 4}", "bulk"] if n % 2 else [],
        "metadata": {"n": n, "note": "ü"} if n % 3 else {},
        "depends_on": [first] if n % 6 == 0 else [],
        "retry": ("exponential", "progressive")[n % 2],
    }


def test_a_bulk_stores_what_single_publishes_store(app: Conveyor) -> None:
    app.register("task", lambda n: None)
    first = app.publish("task", {"n": -1}).id
    singles = [app.publish("task", {"n": n}, **options(n, first)) for n in range(20)]
    with app.bulk(size=15) as bulk:  # chunks of 15 (COPY on PostgreSQL) and 5 (INSERT)
        for n in range(20):
            app.publish("task", {"n": n}, **options(n, first))
    bulked = bulk.jobs
    assert [int(job.id) for job in bulked] == sorted(int(job.id) for job in bulked)
    assert int(bulked[0].id) > int(singles[-1].id), "ids keep growing in publish order"
    for single, stored in zip(singles, bulked, strict=True):
        got = app.get(stored.id)
        assert got == stored
        want = app.get(single.id)
        assert {name: getattr(got, name) for name in FIELDS} == {
            name: getattr(want, name) for name in FIELDS
        }
    tagged = {job.id for job in app.jobs(tag="bulk", limit=100)}
    assert tagged == {job.id for job in singles + bulked if "bulk" in job.tags}
    # A dependency written by the bulk holds its dependant back until the dependency is done.
    waiting = [job for job in bulked if job.depends_on]
    assert waiting
    claimed = {job.id for job in app.claim("w", limit=100, lease_ms=60_000)}
    assert claimed.isdisjoint(job.id for job in waiting)


def test_rows_of_many_jobs_equal_each_job_s_own_row() -> None:
    """rows_of re-encodes only the columns whose fields changed from the previous job; the
    result must be exactly job_values of each job, whatever the jobs share."""
    from conveyor.model import replace
    from conveyor.store.sql.rows import job_values, rows_of

    app = Conveyor("memory://")
    app.register("noop", lambda: None)
    first = app.publish("noop")
    jobs = [app.publish("noop", {"n": n}, **options(n, first.id)) for n in range(1, 30)]
    jobs += [replace(jobs[-1], state="processing"), replace(jobs[-1], tags=("other",))]
    jobs += [jobs[0], jobs[0]]

    def flags(job: object) -> tuple[bool, bool, bool, bool]:
        state, due = job.state, job.available_at <= job.updated_at
        return (
            state == "processing",
            state == "ready" and due,
            state == "ready" and not due,
            (state == "processing"),
        )

    assert rows_of(jobs, flags) == [job_values(job, flags(job)) for job in jobs]


# -- publish_many ------------------------------------------------------------------------------


def test_publish_many_stores_what_one_publish_per_payload_stores(app: Conveyor) -> None:
    app.register("task", lambda n: None)
    first = app.publish("task", {"n": -1}).id
    shared = options(6, first) | {"metadata": {"source": "import"}}
    singles = [app.publish("task", {"n": n}, **shared) for n in range(12)]
    many = app.publish_many("task", ({"n": n} for n in range(12)), **shared)
    assert len(many) == 12
    assert int(many[0].id) > int(singles[-1].id)
    assert [int(job.id) for job in many] == sorted(int(job.id) for job in many)
    for n, (single, stored) in enumerate(zip(singles, many, strict=True)):
        got = app.get(stored.id)
        assert got == stored
        assert got.requests[0].payload == {"n": n}
        want = app.get(single.id)
        assert {name: getattr(got, name) for name in FIELDS} == {
            name: getattr(want, name) for name in FIELDS
        }
    # Each job has its own metadata: changing one job's copy leaves the others alone.
    assert len({id(job.metadata) for job in many}) == len(many)


def test_publish_many_is_all_or_nothing(app: Conveyor) -> None:
    app.register("task", lambda n: None)
    with pytest.raises(InvalidPayload, match=r"payloads\[2\] is a object"):
        app.publish_many("task", [{"n": 0}, {"n": 1}, object()])
    with pytest.raises(PayloadTooLarge, match=r"payloads\[1\]"):
        app.publish_many("task", [1, "x" * (MAX_PAYLOAD_BYTES + 1)])
    with pytest.raises(InvalidRequest, match="iterable of payloads, not dict"):
        app.publish_many("task", {"n": 1})
    with pytest.raises(UnknownType):
        app.publish_many("nobody", [1, 2])
    with pytest.raises(InvalidRequest, match="priority"):
        app.publish_many("task", [1, 2], priority="high")
    assert app.jobs() == []
    assert app.publish_many("task", []) == []
    assert app.jobs() == []


def test_publish_many_joins_a_bulk_block(app: Conveyor) -> None:
    app.register("task", lambda n: None)
    with app.bulk(size=4) as bulk:
        app.publish("task", 0)
        app.publish_many("task", range(1, 6), queue="mail")
    assert [job.requests[0].payload for job in bulk.jobs] == list(range(6))
    assert [job.queue for job in app.jobs(limit=10)].count("mail") == 5
