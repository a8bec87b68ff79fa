"""Structured logs (``--log-format json``): every stderr line of a worker is one JSON object;
each finished job is one line with its id, type, attempt, duration and outcome; a handler's
error is logged once, with its traceback, and stored with the job (OUT-009)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from conveyor import Conveyor
from conveyor.logs import JsonFormatter, job_record

APP = """
from conveyor import Conveyor

app = Conveyor({url!r})


@app.handler("ok")
def ok() -> None:
    pass


def helper() -> None:
    raise ValueError("the mail server said no")


@app.handler("fails")
def fails() -> None:
    helper()
"""


def _broken() -> None:
    raise RuntimeError("broken")


def test_a_record_becomes_one_json_line_with_its_extra_fields_and_traceback() -> None:
    try:
        _broken()
    except RuntimeError:
        record = logging.LogRecord(
            "conveyor.worker", logging.WARNING, __file__, 1, "job %s failed", ("7",), sys.exc_info()
        )
    record.job_id = "7"
    record.attempt = 2

    line = JsonFormatter().format(record)

    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "warning"
    assert data["logger"] == "conveyor.worker"
    assert data["message"] == "job 7 failed"
    assert (data["job_id"], data["attempt"]) == ("7", 2)
    assert data["traceback"].endswith("RuntimeError: broken")
    assert data["ts"].endswith("+00:00")


def test_job_record_of_a_job_that_ran(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        app.register("fails", lambda: 1 / 0)
        job = app.publish("fails", queue="mail")
        app.process()
        record = job_record(app.get(job.id))
    finally:
        app.close()

    assert record["job_id"] == job.id
    assert record["type"] == "fails"
    assert record["queue"] == "mail"
    assert record["attempt"] == 1
    assert record["outcome"] == "temporarily_failed"
    assert isinstance(record["duration_ms"], int)
    assert record["error"] == "division by zero"


def test_process_with_json_logs(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    (tmp_path / "jsonapp.py").write_text(APP.format(url=f"sqlite:///{db}"))
    app = Conveyor(f"sqlite:///{db}")
    app.register("ok", lambda: None)
    app.register("fails", lambda: None)
    ok = app.publish("ok")
    failing = app.publish("fails")
    app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--log-format",
            "json",
            "--app",
            "./jsonapp.py:app",
            "process",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    jobs = {line["job_id"]: line for line in lines if line.get("event") == "job"}
    assert jobs[ok.id]["outcome"] == "finished"
    assert jobs[failing.id]["outcome"] == "temporarily_failed"
    for line in jobs.values():
        assert {"type", "attempt", "duration_ms", "outcome"} <= set(line)
    failures = [line for line in lines if line["logger"] == "conveyor.worker"]
    assert len(failures) == 1  # logged once
    (failure,) = failures
    assert (failure["job_id"], failure["type"], failure["attempt"]) == (failing.id, "fails", 1)
    assert "in helper" in failure["message"]
    assert failure["message"].endswith("ValueError: the mail server said no")

    stored = Conveyor(f"sqlite:///{db}")
    try:
        error = stored.get(failing.id).last_error
        assert error is not None
        assert error.traceback is not None
        assert "in helper" in error.traceback
    finally:
        stored.close()
