"""The Prometheus endpoint: jobs by queue and state, failures and paused queues, from the
store, on every backend."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from conveyor import Conveyor


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_jobs_by_queue_and_state_failures_and_pauses(
    client: TestClient, conveyor_app: Conveyor
) -> None:
    app = conveyor_app
    app.publish("mail.send")
    app.publish("mail.send")
    app.publish("report.broken")
    app.process(queues=["reports"], handle_signals=False)
    app.pause_queue("mail")
    found = samples(client)
    assert found[("conveyor_jobs", (("queue", "mail"), ("state", "ready")))] == 2
    assert found[("conveyor_jobs", (("queue", "reports"), ("state", "permanently_failed")))] == 1
    assert found[("conveyor_jobs_failed", (("queue", "reports"),))] == 1
    assert found[("conveyor_jobs_failed", (("queue", "mail"),))] == 0
    assert found[("conveyor_queue_paused", (("queue", "mail"),))] == 1
    assert found[("conveyor_queue_paused", (("queue", "reports"),))] == 0
    assert found[("conveyor_workers", ())] == 0
