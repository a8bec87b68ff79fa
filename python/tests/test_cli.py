"""The ``conveyor`` command line, over real SQLite files (and real processes for the locks)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor import AlreadyRunning, Conveyor
from conveyor.cli import cli
from conveyor.cli.commands.worker import SLOTS_SWITCH_INTERVAL
from conveyor.cli.context import ByteSize
from conveyor.locks import command_lock

from .conftest import AppFactory

APP_SOURCE = """
from datetime import timedelta

from conveyor import Conveyor, PermanentError, TemporaryError

app = Conveyor({url!r}, lease=timedelta(seconds=10))


@app.handler("ok")
def ok(n: int = 0) -> None:
    pass


@app.handler("boom", queue="risky")
def boom() -> None:
    raise PermanentError("kaboom")


@app.handler("later")
def later() -> None:
    raise TemporaryError("not now", retry_after=3600)


app.schedule("nightly-ok", "0 2 * * *", "ok", {{"n": 1}}, tz="Europe/Paris", overlap="skip")


@app.handler("measured", pass_context=True, result_ttl=timedelta(hours=1))
def measured(context) -> dict:
    context.progress(75, "three quarters")
    return {{"rows": 3}}


def make_app() -> Conveyor:
    return app


not_an_app = 42
"""


@dataclass
class AppModule:
    """A test app module importable as ``name`` (from tmp_path), over ``db``."""

    name: str
    db: Path
    directory: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def spec(self) -> str:
        return f"{self.name}:app"

    @property
    def app(self) -> Conveyor:
        module: Any = __import__(self.name)
        app: Conveyor = module.app
        return app

    def env(self) -> dict[str, str]:
        paths = [str(self.directory), os.environ.get("PYTHONPATH", "")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "COLUMNS": "200"}


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[AppModule]:
    name = f"cli_app_{uuid.uuid4().hex[:12]}"
    db = tmp_path / "jobs.db"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE.format(url=f"sqlite:///{db}"))
    sys.path.insert(0, str(tmp_path))
    module = AppModule(name, db, tmp_path)
    try:
        yield module
    finally:
        if name in sys.modules:
            module.app.close()
            del sys.modules[name]
        sys.path.remove(str(tmp_path))


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for key in list(os.environ):
        if key.startswith("CONVEYOR_"):
            monkeypatch.delenv(key)
    return CliRunner()


def run(runner: CliRunner, *args: str, code: int = 0, **kwargs: Any) -> Result:
    result = runner.invoke(cli, list(args), **kwargs)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def conveyor_process(module: AppModule, *args: str, **kwargs: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=module.env(),
        cwd=module.directory,
        timeout=60,
        check=False,
        **kwargs,
    )


# -- demo -----------------------------------------------------------------------------------


def test_demo_runs_through_the_real_entry_point(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--db", str(db)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    for state in ("redundant", "permanently_failed", "finished", "cancelled"):
        assert state in done.stdout
    assert "Outcomes" in done.stdout
    assert "Traceback" not in done.stderr
    assert elapsed < 20
    # The run left its jobs behind, to look at with the other commands.
    app = Conveyor(f"sqlite:///{db}")
    try:
        states = {job.state for job in app.jobs()}
        assert states == {"finished", "permanently_failed", "cancelled", "redundant"}
    finally:
        app.close()


def test_demo_refuses_to_replace_a_file_it_did_not_create(
    runner: CliRunner, tmp_path: Path, app_module: AppModule
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    app_module.app.publish("ok")  # a real queue's SQLite file

    for path, what in ((notes, "a file"), (app_module.db, "a SQLite database")):
        before = path.read_bytes()
        result = run(runner, "demo", "--db", str(path), code=1)
        assert result.output.startswith("error: conveyor demo recreates its database")
        assert f"{path} is {what} that conveyor demo did not create" in result.output
        assert "pass --db with a new file name" in result.output
        assert path.read_bytes() == before
    assert len(app_module.app.jobs()) == 1


def test_demo_recreates_its_own_file(tmp_path: Path) -> None:
    from conveyor.demo import Demo

    path = tmp_path / "demo.db"
    first = Demo(path)
    first.publish()
    first.close()
    (tmp_path / "empty.db").touch()

    again = Demo(path)  # its own file: recreated, not refused
    try:
        assert again.app.jobs() == []
    finally:
        again.close()
    Demo(tmp_path / "empty.db").close()  # an empty file holds nothing to lose


def test_tables_at_80_columns_keep_every_word() -> None:
    """A cropped cell loses the words at the end of its lines ("declined: not retry")."""
    import dataclasses

    from rich.console import Console

    from conveyor.cli.render import jobs_table
    from conveyor.model import JobError

    app = Conveyor("memory://")
    app.register("charge_card_with_a_long_type_name", lambda: None)
    job = app.publish("charge_card_with_a_long_type_name", queue="payments")
    app.close()
    words = ["card", "0002", "declined:", "do", "not", "retry,", "ask", "for", "another"]
    failed = dataclasses.replace(
        job, last_error=JobError(kind="permanent", message=" ".join(words), attempt=1)
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(jobs_table([failed]))
    lines = console.export_text().splitlines()

    assert max(len(line) for line in lines) <= 80
    cells = " ".join(line[-12:] for line in lines)  # the last column, read down
    found = [word for word in cells.split() if word in words]
    assert found == words


# -- inspection and operations --------------------------------------------------------------


def test_status_counts_jobs_by_queue_and_state(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    for n in range(3):
        app.publish("ok", {"n": n})
    app.publish("boom")
    app.process()

    table = run(runner, "--app", app_module.spec, "status").output
    assert "risky" in table
    assert "permanently_failed" in table
    assert "finished" in table

    data = json.loads(run(runner, "--app", app_module.spec, "status", "--json").output)
    assert data["total"] == 4
    assert data["states"] == {"finished": 3, "permanently_failed": 1}
    assert {"queue": "risky", "state": "permanently_failed", "count": 1} in data["counts"]


def test_status_of_an_empty_store_over_url(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert "no jobs" in run(runner, "--url", url, "status").output
    assert json.loads(run(runner, "--url", url, "status", "--json").output)["total"] == 0


def test_url_comes_from_the_environment(runner: CliRunner, app_module: AppModule) -> None:
    app_module.app.publish("ok")
    result = run(runner, "jobs", "list", "--json", env={"CONVEYOR_URL": app_module.url})
    assert [job["state"] for job in json.loads(result.output)] == ["ready"]


def test_jobs_list_filters(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    first = app.publish("ok", {"n": 1}, tags=["customer:7"], identifier="import-1")
    app.publish("ok", {"n": 2})
    app.publish("boom")
    app.process()
    spec = app_module.spec

    def ids(*args: str) -> list[str]:
        result = run(runner, "--app", spec, "jobs", "list", "--json", *args)
        return [job["id"] for job in json.loads(result.output)]

    assert len(ids()) == 3
    assert ids("--state", "permanently_failed") == ["3"]
    assert ids("--state", "finished", "--state", "permanently_failed") == ["1", "2", "3"]
    assert ids("--queue", "risky") == ["3"]
    assert ids("--tag", "customer:7") == [first.id]
    assert ids("--identifier", "import-1") == [first.id]
    assert ids("--limit", "1") == ["1"]
    assert ids("--after", "1", "--limit", "1") == ["2"]

    table = run(runner, "--app", spec, "jobs", "list").output
    assert "kaboom" in table
    assert "permanently_failed" in table
    unknown = run(runner, "--app", spec, "jobs", "list", "--state", "bogus", code=2)
    assert "unknown state bogus" in unknown.output


def test_jobs_show_prints_every_field(runner: CliRunner, app_module: AppModule) -> None:
    job = app_module.app.publish("ok", {"n": 5}, serial_group="g1", tags=["t"])
    spec = app_module.spec

    data = json.loads(run(runner, "--app", spec, "jobs", "show", job.id, "--json").output)
    assert data == app_module.app.get(job.id).to_dict()

    panel = run(runner, "--app", spec, "jobs", "show", job.id).output
    for text in (f"job {job.id}", "ready", "g1", "serial group", '{"n": 5}'):
        assert text in panel

    failed = app_module.app.publish("boom")
    app_module.app.process()
    shown = run(runner, "--app", spec, "jobs", "show", failed.id).output
    for text in ("Traceback of the last error", "in boom", "PermanentError: kaboom"):
        assert text in shown

    measured = app_module.app.publish("measured")
    app_module.app.process()
    shown = run(runner, "--app", spec, "jobs", "show", measured.id).output
    for text in ("75% three quarters", '{"rows": 3} (kept until', "progress", "result"):
        assert text in shown

    missing = run(runner, "--app", spec, "jobs", "show", "999", code=1)
    assert missing.output.strip() == "error: job 999 does not exist (it may have been pruned)"


def test_schedules_lists_the_app_s_schedules(runner: CliRunner, app_module: AppModule) -> None:
    spec = app_module.spec
    (entry,) = json.loads(run(runner, "--app", spec, "schedules", "--json").output)
    assert entry["name"] == "nightly-ok"
    assert (entry["cron"], entry["tz"], entry["overlap"]) == ("0 2 * * *", "Europe/Paris", "skip")
    assert entry["last_fire"] is None
    assert entry["next_fire"].endswith(":00:00.000Z")
    table = run(runner, "--app", spec, "schedules").output
    for text in ("nightly-ok", "Europe/Paris", "0 2 * * *"):
        assert text in table


def test_jobs_retry_cancel_requeue(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    failed = app.publish("boom")
    postponed = app.publish("later")
    done = app.publish("ok")
    app.process()
    spec = app_module.spec

    result = run(runner, "--app", spec, "jobs", "retry", failed.id)
    assert result.output.strip() == f"job {failed.id}: permanently_failed -> ready"
    result = run(runner, "--app", spec, "jobs", "cancel", failed.id)
    assert result.output.strip() == f"job {failed.id}: ready -> cancelled"
    assert app.get(failed.id).state == "cancelled"

    result = run(runner, "--app", spec, "jobs", "requeue", postponed.id)
    assert result.output.strip() == f"job {postponed.id}: temporarily_failed -> ready"
    (running,) = app.claim("w1", job_id=postponed.id)
    result = run(runner, "--app", spec, "jobs", "cancel", running.id)
    assert result.output.startswith(f"job {running.id}: processing, cancel requested;")
    assert app.get(running.id).cancel_requested
    assert "cancel requested" in run(runner, "--app", spec, "jobs", "show", running.id).output
    assert app.get(postponed.id).available_at <= app.now()

    refused = run(runner, "--app", spec, "jobs", "retry", done.id, code=1)
    assert refused.output.startswith(f"error: cannot retry job {done.id}: it is finished;")
    assert "permanently_failed, cancelled" in refused.output
    assert "Traceback" not in refused.output


# -- running jobs ---------------------------------------------------------------------------


def test_process_with_isolation_runs_handlers_in_processes_importing_the_app(
    runner: CliRunner, app_module: AppModule
) -> None:
    """--isolation process: handler processes import the module --app names."""
    app = app_module.app
    job = app.publish("measured")
    result = run(runner, "--app", app_module.spec, "process", "--isolation", "process")
    assert "process: 1 job (finished 1)" in result.output
    done = app.get(job.id)
    assert done.result == {"rows": 3}
    assert done.progress is not None
    assert done.progress["message"] == "three quarters"


def test_process_runs_due_jobs_with_a_limit(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    for n in range(3):
        app.publish("ok", {"n": n})
    spec = app_module.spec

    first = run(runner, "--app", spec, "process", "--limit", "2")
    assert "process: 2 jobs (finished 2)" in first.output
    assert [job.state for job in app.jobs()] == ["finished", "finished", "ready"]

    second = run(runner, "--app", spec, "process", "--quiet")
    assert "1 job (finished 1)" in second.output
    assert "no due jobs left" in second.output
    assert "job 3 ok" not in second.output


def test_process_options_come_from_the_environment(
    runner: CliRunner, app_module: AppModule
) -> None:
    for _ in range(2):
        app_module.app.publish("ok")
    env = {"CONVEYOR_APP": app_module.spec, "CONVEYOR_PROCESS_LIMIT": "1"}
    assert "process: 1 job" in run(runner, "process", env=env).output


def test_consume_stops_after_n_jobs(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    for n in range(3):
        app.publish("ok", {"n": n})
    app.publish("ok", priority=500)
    spec = app_module.spec

    result = run(runner, "--app", spec, "consume", "--jobs", "2", "-p", "-100")
    assert "consuming queues all, priorities -100" in result.output
    assert "processed 2 jobs (limit 2)" in result.output
    assert [job.state for job in app.jobs()] == ["finished", "finished", "ready", "ready"]

    result = run(runner, "--app", spec, "consume", "--cycles-limit", "2", "-q", "default")
    assert "ran 2 cycles (limit 2)" in result.output
    assert app.jobs(states=["ready"]) == []


def test_consume_memory_limit_stops_the_worker(runner: CliRunner, app_module: AppModule) -> None:
    app_module.app.publish("ok")
    result = run(runner, "--app", app_module.spec, "consume", "--memory-limit", "1K")
    assert "memory above 1024 bytes" in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("512K", 512 * 1024), ("512M", 512 * 1024**2), ("1G", 1024**3),
     ("1.5GiB", int(1.5 * 1024**3)), ("2mb", 2 * 1024**2)],
)  # fmt: skip
def test_memory_limit_sizes(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


def test_bad_worker_options_are_usage_errors(runner: CliRunner, app_module: AppModule) -> None:
    spec = app_module.spec
    bad_range = run(runner, "--app", spec, "consume", "-p", "40-20", code=2)
    assert "is empty: 40 > 20" in bad_range.output
    bad_size = run(runner, "--app", spec, "consume", "--memory-limit", "lots", code=2)
    assert "'lots' is not a size" in bad_size.output


@pytest.mark.parametrize("command", ["consume", "process"])
def test_running_handlers_needs_an_app(runner: CliRunner, tmp_path: Path, command: str) -> None:
    result = run(runner, "--url", f"sqlite:///{tmp_path / 'x.db'}", command, code=1)
    assert result.output.startswith(f"error: `conveyor {command}` runs handlers")
    assert "pass --app module:attribute" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- upkeep ---------------------------------------------------------------------------------


def test_clear_finished_removes_finished_jobs(runner: CliRunner, app_module: AppModule) -> None:
    app = app_module.app
    for n in range(3):
        app.publish("ok", {"n": n})
    failed = app.publish("boom")
    app.process()
    url = app_module.url

    assert "deleted 0 finished" in run(runner, "--url", url, "clear-finished", "7").output
    result = run(runner, "--url", url, "clear-finished", "--yes")
    assert "deleted 3 finished or redundant jobs (all of them)" in result.output
    assert [job.id for job in app.jobs()] == [failed.id]


def _three_finished(app_module: AppModule) -> Conveyor:
    app = app_module.app
    for n in range(3):
        app.publish("ok", {"n": n})
    app.process()
    return app


def test_clear_finished_dry_run_counts_and_deletes_nothing(
    runner: CliRunner, app_module: AppModule
) -> None:
    app = _three_finished(app_module)

    result = run(runner, "--url", app_module.url, "clear-finished", "--dry-run")

    assert "would delete 3 finished or redundant jobs (all of them)" in result.output
    assert "nothing deleted" in result.output
    assert len(app.jobs()) == 3


def test_clear_finished_without_a_terminal_refuses_unless_yes(
    runner: CliRunner, app_module: AppModule
) -> None:
    app = _three_finished(app_module)

    result = run(runner, "--url", app_module.url, "clear-finished", code=1)

    assert result.output.startswith("error: clear-finished would delete 3 finished")
    assert "pass --yes" in result.output
    assert "--dry-run" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert len(app.jobs()) == 3


@pytest.mark.parametrize(("answer", "left", "code"), [("y\n", 0, 0), ("n\n", 3, 1)])
def test_clear_finished_asks_on_a_terminal(
    runner: CliRunner,
    app_module: AppModule,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    left: int,
    code: int,
) -> None:
    from conveyor.cli.commands import maintenance

    app = _three_finished(app_module)
    monkeypatch.setattr(maintenance, "_interactive", lambda: True)

    result = run(runner, "--url", app_module.url, "clear-finished", input=answer, code=code)

    assert "Delete 3 finished or redundant jobs (all of them)" in result.output
    assert len(app.jobs()) == left


def test_update_schema_prints_the_version(runner: CliRunner, tmp_path: Path) -> None:
    from conveyor.store.sql.schema import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run(runner, "--url", url, "update-schema")
    assert f"schema of {url} is at version {SCHEMA_VERSION}" in result.output
    assert "keeps no schema" in run(runner, "--url", "memory://", "update-schema").output


# -- discovery and errors -------------------------------------------------------------------


def test_url_is_ignored_with_an_app(
    runner: CliRunner, app_module: AppModule, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    result = run(runner, "--app", app_module.spec, "--url", f"sqlite:///{other}", "status")
    assert "note: --url is ignored" in result.output
    assert f"no jobs in {app_module.url}" in result.output
    assert not other.exists()


def test_app_may_be_a_factory(runner: CliRunner, app_module: AppModule) -> None:
    app_module.app.publish("ok")
    result = run(runner, "--app", f"{app_module.name}:make_app", "jobs", "list", "--json")
    assert len(json.loads(result.output)) == 1


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("nope", "has no attribute 'nope'"),
        ("not_an_app", "names a value of type int, not a conveyor.Conveyor"),
    ],
)
def test_app_discovery_errors(
    runner: CliRunner, app_module: AppModule, attribute: str, message: str
) -> None:
    result = run(runner, "--app", f"{app_module.name}:{attribute}", "status", code=1)
    assert message in result.output
    assert result.output.startswith("error: ")


def test_app_given_as_a_file_path(
    runner: CliRunner, app_module: AppModule, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app_module.app.publish("ok")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = run(runner, "--app", f"../{app_module.name}.py:app", "jobs", "list", "--json")

    assert len(json.loads(result.output)) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./no_such_file.py:app", "names the file ./no_such_file.py, which does not exist"),
        ("..relative:app", "does not name a module"),
        ("my app:app", "does not name a module"),
    ],
)
def test_bad_app_paths_are_one_red_line(runner: CliRunner, spec: str, message: str) -> None:
    result = run(runner, "--app", spec, "status", code=1)

    assert result.output.startswith("error: ")
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_app_file_through_the_real_entry_point_is_one_red_line(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--app", "./myapp.py:app", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("error: --app ./myapp.py:app names the file")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:pw@db/jobs", "postgresql+psycopg://u:pw@db/jobs"),
        ("postgresql://u@db/jobs", "postgresql+psycopg://u@db/jobs"),
        ("mysql://root@db/jobs", "mysql+pymysql://root@db/jobs"),
        ("mariadb://root@db/jobs", "mysql+pymysql://root@db/jobs"),
        ("postgresql+psycopg://u@db/jobs", "postgresql+psycopg://u@db/jobs"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        ("memory://", "memory://"),
    ],
)
def test_urls_without_a_driver_take_the_extras_driver(given: str, expected: str) -> None:
    from conveyor.urls import with_driver

    assert with_driver(given) == expected
    assert Conveyor(given).url == expected


@pytest.mark.parametrize(
    ("backend", "scheme"), [("postgresql", "postgres://"), ("mariadb", "mysql://")]
)
def test_short_urls_reach_the_real_servers(backend: str, scheme: str) -> None:
    from .conftest import SERVER_URLS, TEST_PREFIX, require_service

    require_service(backend)
    app = Conveyor(scheme + SERVER_URLS[backend].split("://", 1)[1], table_prefix=TEST_PREFIX)
    try:
        assert isinstance(app.jobs(limit=1), list)
        assert app.url == SERVER_URLS[backend]
    finally:
        app.close()


def test_missing_app_module(runner: CliRunner) -> None:
    result = run(runner, "--app", "no_such_module_here:app", "status", code=1)
    assert "cannot import module 'no_such_module_here'" in result.output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://user:hunter2@127.0.0.1:1/jobs",
        "mysql+pymysql://user:hunter2@127.0.0.1:1/jobs",
    ],
)
@pytest.mark.parametrize(
    "command", [["status"], ["jobs", "list"], ["update-schema"], ["clear-finished"]]
)
def test_password_never_printed(runner: CliRunner, url: str, command: list[str]) -> None:
    result = run(runner, "--url", url, *command, code=1)
    assert "hunter2" not in result.output
    assert "user:***@127.0.0.1:1" in result.output
    assert result.output.startswith("error: cannot reach the database")
    assert len(result.output.strip().splitlines()) == 1


def test_an_unknown_backend_is_a_clear_error(runner: CliRunner) -> None:
    result = run(runner, "--url", "nosuchdb://user:hunter2@host/db", "status", code=1)
    assert "no database backend for nosuchdb://user:***@host/db" in result.output
    assert "hunter2" not in result.output


def test_help_lists_every_command(runner: CliRunner) -> None:
    output = run(runner, "--help").output
    for command in (
        "demo", "consume", "process", "clear-finished", "update-schema", "status", "jobs",
    ):  # fmt: skip
        assert f"  {command} " in output
    jobs = run(runner, "jobs", "--help").output
    for command in ("list", "show", "retry", "cancel", "requeue"):
        assert f"  {command} " in jobs


# -- locks ----------------------------------------------------------------------------------


def test_consume_lock_across_processes(runner: CliRunner, app_module: AppModule) -> None:
    """Consumers run side by side, unless they name the same --single-id."""
    first = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--app", app_module.spec, "consume",
         "--cycle-delay", "0.05", "--single-id", "default"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=app_module.env(),
        cwd=app_module.directory,
    )  # fmt: skip
    watchdog = threading.Timer(30, first.kill)
    watchdog.start()
    try:
        assert first.stderr is not None
        started = first.stderr.readline()
        assert "consuming" in started, started + first.stderr.read()

        second = conveyor_process(
            app_module, "--app", app_module.spec, "consume", "--single-id", "default"
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert (
            "another `conveyor consume` with single-id 'default' is running on "
            f"{app_module.url}" in second.stderr
        )
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr

        other = run(
            runner, "--app", app_module.spec, "consume", "--single-id", "b", "--cycles-limit", "1"
        )
        assert "ran 1 cycles (limit 1)" in other.output
        unnamed = run(runner, "--app", app_module.spec, "consume", "--cycles-limit", "1")
        assert "ran 1 cycles (limit 1)" in unnamed.output

        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stdout + stderr
    assert "consume: 0 jobs in" in stdout
    assert "stopped: received SIGTERM" in stdout

    # The lock went with the process: the same single-id may run again.
    again = run(
        runner, "--app", app_module.spec, "consume", "--single-id", "default", "--cycles-limit", "1"
    )
    assert "consume: 0 jobs" in again.output


def test_command_lock_on_every_backend(make_app: AppFactory) -> None:
    """Held by one app, refused to a second app over the same store; freed on exit."""
    holder, other = make_app(), make_app()
    with command_lock(holder, "consume"):
        busy = "another `conveyor consume` with single-id"
        with pytest.raises(AlreadyRunning, match=busy), command_lock(other, "consume"):
            pass  # pragma: no cover
        with command_lock(other, "consume", "second"), command_lock(other, "process"):
            pass
    with command_lock(other, "consume"):
        pass


def test_lock_message_masks_the_password(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with (
            command_lock(app, "process", "nightly"),
            pytest.raises(AlreadyRunning) as caught,
            command_lock(app, "process", "nightly"),
        ):
            pass  # pragma: no cover
        message = str(caught.value)
        assert "`conveyor process` with single-id 'nightly'" in message
        assert "pass --single-id to run several" in message
        assert (tmp_path / "a.db.process.nightly.lock").exists()
    finally:
        app.close()


def test_consume_leaves_start_up_objects_out_of_full_collections(
    runner: CliRunner, app_module: AppModule
) -> None:
    """While `conveyor consume` runs, the start-up objects are frozen (gc.freeze), so a full
    collection does not walk them between jobs; they are given back when it returns."""
    frozen_during_the_job: list[int] = []

    def report_frozen() -> None:
        frozen_during_the_job.append(gc.get_freeze_count())

    app_module.app.register("report_frozen", report_frozen)
    app_module.app.publish("report_frozen")
    before = gc.get_freeze_count()
    run(runner, "--app", app_module.spec, "consume", "--jobs", "1")
    (frozen,) = frozen_during_the_job
    assert frozen > before + 10_000
    assert gc.get_freeze_count() == before


def test_consume_with_slots_shortens_the_switch_interval(
    runner: CliRunner, app_module: AppModule
) -> None:
    app_module.app.publish("ok")
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        run(runner, "--app", app_module.spec, "consume", "--jobs", "1", "--concurrency", "2")
        assert sys.getswitchinterval() == pytest.approx(SLOTS_SWITCH_INTERVAL)
        app_module.app.publish("ok")
        run(
            runner, "--app", app_module.spec, "consume", "--jobs", "1", "--switch-interval", "0.002"
        )
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
