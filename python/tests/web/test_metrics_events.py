"""The Prometheus endpoint's histograms (from the execution records of recently ended jobs)
and counters (totals every process adds to the store), on every backend
(docs/operations/metrics.md)."""

from __future__ import annotations

from datetime import timedelta

from starlette.testclient import TestClient

from conveyor import Conveyor, ManualClock
from conveyor.counting import PendingCounts
from conveyor.web.metrics import WINDOW, histogram

from .test_metrics import samples

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def bucket(found: Samples, name: str, queue: str, le: str) -> float:
    return found[(f"{name}_bucket", (("le", le), ("queue", queue)))]


def test_publish_to_start_and_run_time_of_the_jobs_that_ended_recently(
    client: TestClient, conveyor_app: Conveyor, clock: ManualClock
) -> None:
    app = conveyor_app
    app.publish("mail.send")
    app.publish("mail.send")
    app.publish("mail.send", delay=timedelta(seconds=30))
    clock.advance(timedelta(seconds=2))
    app.process(handle_signals=False)  # the two due jobs start 2 s after their publish
    clock.advance(timedelta(seconds=28.5))
    app.process(handle_signals=False)  # the delayed one 0.5 s after it was due

    found = samples(client)
    start = "conveyor_job_publish_to_start_seconds"
    assert bucket(found, start, "mail", "0.25") == 0
    assert bucket(found, start, "mail", "0.5") == 1
    assert bucket(found, start, "mail", "1.0") == 1
    assert bucket(found, start, "mail", "2.5") == 3
    assert bucket(found, start, "mail", "+Inf") == 3
    assert found[(f"{start}_gcount", (("queue", "mail"),))] == 3
    assert found[(f"{start}_gsum", (("queue", "mail"),))] == 4.5
    assert bucket(found, "conveyor_job_run_seconds", "mail", "+Inf") == 3

    clock.advance(WINDOW + timedelta(seconds=1))
    later = samples(client)
    assert (f"{start}_bucket", (("le", "+Inf"), ("queue", "mail"))) not in later


def test_failed_attempts_and_lease_rescues_are_counted_in_the_store(
    client: TestClient, conveyor_app: Conveyor, clock: ManualClock
) -> None:
    app = conveyor_app

    def flaky() -> None:
        raise RuntimeError("the mail server is away")

    app.register("mail.flaky", flaky, queue="mail")
    app.publish("report.broken")
    app.publish("mail.flaky")
    app.process(handle_signals=False)
    clock.advance(timedelta(hours=1))
    app.process(handle_signals=False)  # the retry fails again
    app.publish("invoice.build")
    (claimed,) = app.claim("gone-worker", queues=["billing"], lease_ms=1000)
    clock.advance(timedelta(seconds=2))
    assert [job.id for job in app.rescue_expired()] == [claimed.id]

    found = samples(client)
    failures = "conveyor_job_failures_total"
    assert found[(failures, (("kind", "permanent"), ("queue", "reports")))] == 1
    assert found[(failures, (("kind", "temporary"), ("queue", "mail")))] == 2
    assert found[("conveyor_lease_rescues_total", (("queue", "billing"),))] == 1
    assert app.counters() == [
        ("failures.permanent", "reports", 1),
        ("failures.temporary", "mail", 2),
        ("lease_rescues", "billing", 1),
    ]


def test_histogram_buckets_are_cumulative_and_a_bound_is_inclusive() -> None:
    buckets, total = histogram([0.1, 1.0, 1.5, 99.0], (1, 2))
    assert buckets == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert total == 101.6


def test_pending_counts_are_written_at_most_once_a_second_and_kept_when_a_write_fails() -> None:
    now = [0.0]
    written: list[dict[tuple[str, str], int]] = []
    failing = [True]

    def write(counts: object) -> None:
        if failing[0]:
            raise OSError("the database is away")
        written.append(dict(counts))  # type: ignore[call-overload]

    pending = PendingCounts(write, every=1.0, monotonic=lambda: now[0])
    pending.add("failures.temporary", "mail")
    now[0] = 1.0
    pending.add("failures.temporary", "mail")  # due: the write fails, the counts stay
    failing[0] = False
    pending.add("failures.permanent", "mail")  # not due again yet
    assert written == []
    pending.flush()
    assert written == [{("failures.temporary", "mail"): 2, ("failures.permanent", "mail"): 1}]
