"""Paused queues: no claim takes their jobs; publishing goes on; resume lets claims in again.

Spec: PAUSE-001..005, on every backend.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Conveyor, InvalidRequest, ManualClock
from conveyor.cli import cli

from .conftest import AppFactory


def test_a_paused_queue_is_not_claimed_and_others_are(app: Conveyor) -> None:
    app.register("task", lambda: None)
    held = app.publish("task", queue="mail", priority=0)
    other = app.publish("task", queue="billing", priority=50)
    assert app.pause_queue("mail") is True
    claimed = app.claim("w1", limit=5)
    assert [job.id for job in claimed] == [other.id]  # PAUSE-001: mail's job is passed over
    assert app.claim("w1", queues=["mail"]) == []
    assert app.claim("w1", job_id=held.id) == []  # a claim by id too (broker consumers)
    assert app.get(held.id).state == "ready"


def test_publishing_to_a_paused_queue_goes_on(app: Conveyor) -> None:
    app.register("task", lambda: None)
    app.pause_queue("mail")
    job = app.publish("task", queue="mail")  # PAUSE-002
    assert app.get(job.id).state == "ready"


def test_resume_lets_claims_take_the_queue_again(app: Conveyor) -> None:
    app.register("task", lambda: None)
    job = app.publish("task", queue="mail")
    app.pause_queue("mail")
    assert app.claim("w1") == []
    assert app.resume_queue("mail") is True  # PAUSE-003
    assert [claimed.id for claimed in app.claim("w1")] == [job.id]


def test_pause_and_resume_are_idempotent_and_listed(app: Conveyor, clock: ManualClock) -> None:
    first = clock.now()
    assert app.pause_queue("mail") is True
    clock.advance(timedelta(seconds=5))
    assert app.pause_queue("mail") is False  # the first pause time is kept
    app.pause_queue("billing")
    paused = app.paused_queues()  # PAUSE-005
    assert list(paused) == ["billing", "mail"]
    assert paused["mail"] == first
    assert app.resume_queue("mail") is True
    assert app.resume_queue("mail") is False
    assert list(app.paused_queues()) == ["billing"]


def test_a_running_job_of_a_paused_queue_finishes(app: Conveyor) -> None:
    app.register("task", lambda: None)
    job = app.publish("task", queue="mail")
    claimed = app.claim("w1")[0]
    app.pause_queue("mail")
    done = app.report(claimed.id, "succeed", {"lease_token": claimed.lease_token})
    assert done.id == job.id
    assert done.state == "finished"  # PAUSE-001 stops claims only


def test_a_worker_leaves_a_paused_queue_alone(app: Conveyor) -> None:
    ran: list[str] = []
    app.register("task", ran.append)
    app.publish("task", "mail", queue="mail")
    app.publish("task", "billing", queue="billing")
    app.pause_queue("mail")
    assert app.process(handle_signals=False).jobs == 1
    assert ran == ["billing"]
    app.resume_queue("mail")
    assert app.process(handle_signals=False).jobs == 1
    assert ran == ["billing", "mail"]


@pytest.mark.parametrize("name", ["", "Mail", "a b", "x" * 65, "-mail"])
def test_a_bad_queue_name_is_refused(app: Conveyor, name: str) -> None:
    with pytest.raises(InvalidRequest, match="LIMIT-001"):
        app.pause_queue(name)
    with pytest.raises(InvalidRequest, match="LIMIT-001"):
        app.resume_queue(name)


def test_the_pause_is_shared_by_every_app_on_the_store(make_app: AppFactory, backend: str) -> None:
    if backend == "memory":
        pytest.skip("each memory app has a store of its own")
    one, two = make_app(), make_app()
    two.register("task", lambda: None)
    two.publish("task", queue="mail")
    one.pause_queue("mail")
    assert two.claim("w2") == []
    assert list(two.paused_queues()) == ["mail"]


def test_the_cli_pauses_lists_and_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--url", url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "mail: paused" in run("queues", "pause", "mail")
    assert "was paused already" in run("queues", "pause", "mail")
    with Conveyor(url) as app:
        assert list(app.paused_queues()) == ["mail"]
    assert json.loads(run("queues", "paused", "--json")).keys() == {"mail"}
    assert "mail: resumed" in run("queues", "resume", "mail")
    assert "no paused queues" in run("queues", "paused")


def test_the_cli_names_the_rule_a_bad_queue_name_breaks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = CliRunner().invoke(cli, ["--url", url, "queues", "pause", "Mail"])
    assert result.exit_code == 1
    assert "LIMIT-001" in result.output
