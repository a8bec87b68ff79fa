"""One scenario's world: a store, optionally a private RabbitMQ node and a proxy, workers run
as ``conveyor consume`` subprocesses, and the runner's own app that publishes and inspects.

Everything it starts it stops by pid. It never changes the availability of a shared service:
outages hit its own RabbitMQ node, its own proxy, or only its own workers' database sessions
(PostgreSQL ``application_name``, a MariaDB user of its own).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, text

from conveyor import Conveyor
from conveyor.broker import BrokerSettings

from ledger import Tally, tally
from policy import RETRY
from proxy import Proxy

FAULTS = Path(__file__).resolve().parent
POSTGRES_URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "CONVEYOR_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
RUN_ID = f"flt{os.getpid()}"
# The workers' own database identity: their sessions, and only theirs, are what the suite
# terminates (PostgreSQL: by application_name; MariaDB: by user).
WORKER_APPLICATION = f"conveyor-faults-{os.getpid()}"
WORKER_MARIADB_USER = f"conveyor_faults_{os.getpid()}"


DONE_STATES = ("finished", "redundant")


class Skip(Exception):
    """The scenario cannot run here (a missing service or permission); the reason is printed."""


def service_problem(backend: str) -> str | None:
    url = {"postgresql": POSTGRES_URL, "mariadb": MARIADB_URL}.get(backend)
    if url is None:
        return None
    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        return f"{backend} is not reachable: {str(error).splitlines()[0]}"
    return None


def ensure_mariadb_user() -> None:
    engine = create_engine(MARIADB_URL)
    database = engine.url.database or "test"
    with engine.begin() as connection:
        for host in ("127.0.0.1", "localhost"):
            connection.execute(text(f"CREATE USER IF NOT EXISTS '{WORKER_MARIADB_USER}'@'{host}'"))
            connection.execute(
                text(f"GRANT ALL ON `{database}`.* TO '{WORKER_MARIADB_USER}'@'{host}'")
            )
    engine.dispose()


def drop_mariadb_user() -> None:
    engine = create_engine(MARIADB_URL)
    with engine.begin() as connection:
        for host in ("127.0.0.1", "localhost"):
            connection.execute(text(f"DROP USER IF EXISTS '{WORKER_MARIADB_USER}'@'{host}'"))
    engine.dispose()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed_at: float | None = None  # when the suite SIGKILLed it (its traceback is no crash)
    hung: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready_or_gone(self) -> bool:
        """It printed its "consuming ..." line (its signal handlers are in place) or ended."""
        return self.process.poll() is not None or "consuming " in self.log.read_text(
            errors="replace"
        )


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+):")


def foreign_tracebacks(output: str) -> list[str]:
    """The log records or bare output that carry a traceback, except pika's connection logs."""
    found: list[str] = []
    record = ""
    for line in output.splitlines():
        if LOG_RECORD.match(line):
            record = line
        elif line.startswith(("Traceback (most recent call last)", "Exception in thread")):
            match = LOG_RECORD.match(record)
            if match is None or not match.group(2).startswith("pika."):
                found.append(record or line)
    return found


@dataclass
class World:
    """A scenario's store, broker and workers. Use as a context manager: leaving it stops
    every worker by pid and drops the scenario's tables."""

    name: str
    backend: str
    directory: Path
    lease: float = 2.0
    amqp_url: str | None = None
    store_path: Path | None = None  # SQLite: where the database file lives (e.g. a tmpfs)
    proxy_target: str | None = None  # "store" or "broker": workers connect through the proxy
    workers: dict[str, Worker] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)  # job id -> n
    killed: dict[int, float] = field(default_factory=dict)  # pid -> when
    stale_after: float | None = None  # the runner's repair loop; None: the library's default
    repairs: int = 0
    repaired: Counter[str] = field(default_factory=Counter)
    _last_repair: float = 0.0
    proxy: Proxy | None = None
    app: Conveyor = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.runs = self.directory / "runs.log"
        self.runs.touch()
        tag = zlib.crc32(self.name.encode()) % 10**6
        self.prefix = f"{RUN_ID}_{tag}_"
        self.broker_prefix = f"{RUN_ID}.{tag}."
        if self.proxy_target is not None:
            self.proxy = Proxy(self._upstream_port())
            self.proxy.start()
        self.app = Conveyor(
            self.store_url(worker=False),
            table_prefix=self.prefix,
            lease=self.lease_delta,
            broker_url=self.amqp_url,
            broker_settings=self.broker_settings() if self.amqp_url else None,
        )
        self.app.register("work", lambda n, sleep=0.0: None, retry=RETRY)
        self.app.store  # noqa: B018 -- creates the tables before any worker starts

    @property
    def lease_delta(self) -> timedelta:
        return timedelta(seconds=self.lease)

    def broker_settings(self) -> BrokerSettings:
        return BrokerSettings(prefix=self.broker_prefix, confirm_timeout=3.0, connect_timeout=2.0)

    def _upstream_port(self) -> int:
        if self.proxy_target == "broker":
            assert self.amqp_url is not None
            return int(self.amqp_url.rsplit(":", 1)[1].split("/")[0])
        return {"postgresql": 5432, "mariadb": 3306}[self.backend]

    def store_url(self, worker: bool) -> str:
        if self.backend == "sqlite":
            folder = self.store_path or self.directory
            return f"sqlite:///{folder / 'faults.db'}"
        if self.backend == "postgresql":
            url = POSTGRES_URL
            if worker:
                if self.proxy_target == "store":
                    assert self.proxy is not None
                    url = url.replace("127.0.0.1:5432", self.proxy.url_host)
                return f"{url}?application_name={quote(WORKER_APPLICATION)}"
            return url
        if self.backend == "mariadb":
            if not worker:
                return MARIADB_URL
            host = self.proxy.url_host if self.proxy_target == "store" and self.proxy else None
            url = MARIADB_URL.replace("root@", f"{WORKER_MARIADB_USER}@")
            return url.replace("127.0.0.1:3306", host) if host else url
        raise ValueError(self.backend)

    def worker_amqp_url(self) -> str | None:
        if self.amqp_url and self.proxy_target == "broker" and self.proxy is not None:
            port = self.amqp_url.rsplit(":", 1)[1].split("/")[0]
            return self.amqp_url.replace(f":{port}/", f":{self.proxy.port}/")
        return self.amqp_url

    # -- workers -------------------------------------------------------------------------

    def start_worker(self, name: str, *args: str, clock_file: Path | None = None) -> Worker:
        """``conveyor consume`` as a user runs it, with the scenario's app module."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(FAULTS), *sys.path]),
            "FAULTS_RUNS": str(self.runs),
            "FAULTS_STORE_URL": self.store_url(worker=True),
            "FAULTS_TABLE_PREFIX": self.prefix,
            "FAULTS_LEASE": str(self.lease),
            "FAULTS_AMQP_URL": self.worker_amqp_url() or "",
            "FAULTS_BROKER_PREFIX": self.broker_prefix,
        }
        if clock_file is not None:
            env["FAULTS_CLOCK_FILE"] = str(clock_file)
        log = self.directory / f"{name}.{len(self.workers)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "conveyor", "--app", "faultapp:app", "consume",
                    "--quiet", "--cycle-delay", "0.1", "--grace-period", "2", *args,
                ],
                env=env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker = Worker(name, process, log)
        self.workers[f"{name}.{process.pid}"] = worker
        return worker

    def running(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.process.poll() is None]

    def kill(self, worker: Worker, sig: int = signal.SIGKILL) -> None:
        """Signal one of this scenario's workers by pid."""
        if worker.process.poll() is not None:
            return
        worker.process.send_signal(sig)
        if sig == signal.SIGKILL:
            worker.killed_at = time.time()
            self.killed[worker.pid] = worker.killed_at
            worker.process.wait(timeout=30)

    # -- jobs ----------------------------------------------------------------------------

    def publish(self, count: int, sleep: float = 0.0, start: int = 0, **options: Any) -> None:
        for n in range(start, start + count):
            job = self.app.publish("work", {"n": n, "sleep": sleep}, **options)
            self.published[job.id] = n

    def finished(self) -> set[int]:
        """The numbers whose every job is done: ``finished``, or ``redundant`` (a unique
        job's duplicate that never runs)."""
        ids = {job.id for job in self.app.jobs(states=DONE_STATES, limit=1_000_000)}
        open_numbers = {n for job_id, n in self.published.items() if job_id not in ids}
        return set(self.published.values()) - open_numbers

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Poll ``condition`` (bounded); in broker mode run the repair loop meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.tick()
            time.sleep(0.1)
        return condition()

    def tick(self) -> None:
        """Broker mode: the repair loop once a second, as ``conveyor process`` from cron
        would run it (rescues expired leases, hands over broker_failed jobs)."""
        if self.amqp_url and time.monotonic() - self._last_repair > 1.0:
            self._last_repair = time.monotonic()
            with contextlib.suppress(Exception):  # the broker may be down: that is the fault
                report = self.app.repair()
                self.repairs += 1
                self.repaired["rescued"] += report.rescued
                self.repaired["requeued"] += report.requeued
                self.repaired["republished"] += report.republished

    def started(self) -> int:
        """How many runs have started so far (all jobs)."""
        return sum(1 for line in self.runs.read_text().splitlines() if line.startswith("start"))

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every published job is finished; in broker mode run the repair loop
        every second meanwhile, as ``conveyor process`` from cron would."""
        want = set(self.published.values())

        def drained() -> bool:
            with contextlib.suppress(Exception):
                return self.finished() >= want
            return False

        return self.wait_until(drained, timeout)

    # -- the end -------------------------------------------------------------------------

    def stop_workers(self) -> int:
        """SIGTERM every running worker (SIGCONT first: a paused one must hear it), then
        count crashes. A worker that does not stop within 30 s prints its threads' stacks
        (SIGUSR1), is killed and counts as a crash (a hang)."""
        for worker in self.running():
            # A worker still importing has no SIGTERM handler yet: let it finish starting.
            self.wait_until(partial(Worker.ready_or_gone, worker), 15)
            worker.process.send_signal(signal.SIGCONT)
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.hung = True
                worker.process.send_signal(signal.SIGUSR1)
                time.sleep(1)
                worker.process.kill()
                worker.process.wait(timeout=30)
        return sum(1 for worker in self.workers.values() if self.crashed(worker))

    def crashed(self, worker: Worker) -> bool:
        """Killed by the suite: no crash. Else a non-zero exit, a hang, or a traceback that
        is not pika's own log of a failed connection attempt (it logs those at ERROR with a
        traceback, see docs/operations/broker.md)."""
        if worker.killed_at is not None:
            return False
        if worker.hung or worker.process.returncode != 0:
            return True
        return bool(foreign_tracebacks(worker.log.read_text(errors="replace")))

    def crash_logs(self) -> str:
        return "".join(
            f"\n--- {w.log.name} (exit {w.process.returncode})\n"
            f"{w.log.read_text(errors='replace')[-2500:]}"
            for w in self.workers.values()
            if self.crashed(w)
        )

    def tally(self) -> Tally:
        finished = set()
        with contextlib.suppress(Exception):
            finished = self.finished()
        return tally(self.runs, set(self.published.values()), finished, self.lease, self.killed)

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
                worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=30)
        if self.proxy is not None:
            self.proxy.stop()
        with contextlib.suppress(Exception):
            self.drop_tables()
        with contextlib.suppress(Exception):
            self.app.close()

    def drop_tables(self) -> None:
        if self.backend == "sqlite":
            return
        from conveyor.store.sql.schema import build_tables

        engine = create_engine(POSTGRES_URL if self.backend == "postgresql" else MARIADB_URL)
        build_tables(self.prefix).metadata.drop_all(engine, checkfirst=True)
        engine.dispose()


@contextlib.contextmanager
def world(**options: Any) -> Iterator[World]:
    made = World(**options)
    try:
        yield made
    finally:
        made.close()


def terminate_postgres_sessions() -> int:
    """``pg_terminate_backend`` of this suite's workers' sessions only (by application_name)."""
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        count = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": WORKER_APPLICATION},
        ).scalar_one()
    engine.dispose()
    return int(count)


def kill_mariadb_connections() -> int:
    """``KILL CONNECTION`` of this suite's workers' sessions only (by their own user)."""
    engine = create_engine(MARIADB_URL)
    killed = 0
    with engine.begin() as connection:
        ids = connection.execute(
            text("SELECT id FROM information_schema.processlist WHERE user = :user"),
            {"user": WORKER_MARIADB_USER},
        ).scalars()
        for connection_id in list(ids):
            with contextlib.suppress(Exception):
                connection.execute(text(f"KILL CONNECTION {int(connection_id)}"))
                killed += 1
    engine.dispose()
    return killed
