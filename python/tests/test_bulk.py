"""Bulk publishing stores exactly what single publishes store (PostgreSQL sends it by COPY).

Spec: JOB-001, JOB-002, TAG-001, DEP-001.
"""

from __future__ import annotations

from datetime import timedelta

from conveyor import Conveyor

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
