"""The demo behind ``conveyor demo``: a realistic mix of jobs, processed in a few seconds.

It publishes jobs into a fresh SQLite file and runs a worker until every job is terminal:
retries that later succeed, a permanent failure and the dependent it cancels, a serial
group, a high-priority job published last, a delayed job, a multi-request job, a unique
duplicate, a waiting job and a dependency pair. Nothing but Python and this package is needed.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .app import Conveyor
from .errors import ConfigurationError
from .handlers import JobContext
from .model import Job
from .notify import describe
from .outcomes import PermanentError, TemporaryError, Waiting
from .publishing import Call
from .worker import WorkerControl, WorkerStats

DEFAULT_PATH = "conveyor-demo.db"
# Written into the SQLite header of every demo file (PRAGMA application_id, "CvDm"), so that
# a later run recreates only its own files, never a real queue or anything else at that path.
DEMO_APPLICATION_ID = 0x4376446D
_SQLITE_HEADER = b"SQLite format 3\x00"


def _refuse_unless_demo(path: Path) -> None:
    """Raise ConfigurationError unless ``path`` is missing, empty or a demo database."""
    if not path.exists():
        return
    if not path.is_file():
        raise ConfigurationError(
            f"conveyor demo cannot use {path}: it is not a file; pass --db with a new file name"
        )
    with path.open("rb") as file:
        header = file.read(len(_SQLITE_HEADER))
    if not header:
        return
    found = None
    if header == _SQLITE_HEADER:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = connection.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError:
            found = None
        finally:
            connection.close()
    if found != DEMO_APPLICATION_ID:
        what = "a SQLite database" if header == _SQLITE_HEADER else "a file"
        raise ConfigurationError(
            f"conveyor demo recreates its database on every run, and {path} is {what} that "
            "conveyor demo did not create: pass --db with a new file name, or delete the file "
            "yourself if you no longer need it"
        )


@dataclass(frozen=True)
class Published:
    """A job the demo published and what it illustrates."""

    job_id: str
    scenario: str


@dataclass(frozen=True)
class Outcome:
    """One row of the demo's result: the stored job, its scenario and its run order."""

    job: Job
    scenario: str
    ran: int | None


@dataclass
class _Recorder:
    """Collects what happens while the demo runs (thread-safe: the worker runs in a thread)."""

    first_run: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    waited: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ran(self, job: Job) -> None:
        with self.lock:
            if job.id not in self.first_run:
                self.first_run.append(job.id)

    def notify(self, kind: str, job: Job) -> None:
        with self.lock:
            self.notifications.append(describe(kind, job))


def _work(low: float = 0.04, high: float = 0.12) -> None:
    """Pretend to do something, so the progress bar has something to show."""
    time.sleep(random.uniform(low, high))


class Demo:
    """A demo app over a fresh SQLite file; ``publish``, then ``run``, then ``outcomes``."""

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        _refuse_unless_demo(self.path)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        stamp = sqlite3.connect(self.path)
        try:
            stamp.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
            stamp.commit()
        finally:
            stamp.close()
        self.recorder = _Recorder()
        self.app = Conveyor(
            f"sqlite:///{self.path}",
            lease=timedelta(seconds=5),
            waiting_delay=timedelta(milliseconds=100),
            notifier=self.recorder,
        )
        self.app.before_job(self.recorder.ran)
        self.published: list[Published] = []
        self._register()

    def _register(self) -> None:
        app = self.app
        recorder = self.recorder

        @app.handler("call_payment_api", pass_context=True)
        def call_payment_api(context: JobContext, order: int) -> None:
            _work()
            if context.attempt <= 2:
                raise TemporaryError(
                    f"payment API answered 503 (attempt {context.attempt})", retry_after=0.05
                )

        @app.handler("charge_card")
        def charge_card(card: str) -> None:
            _work()
            raise PermanentError(f"card {card[-4:]} declined: do not retry")

        @app.handler("send_receipt")
        def send_receipt(order: int) -> None:
            _work()

        @app.handler("update_order")
        def update_order(order: int, step: str) -> None:
            _work()

        @app.handler("send_alert")
        def send_alert(message: str) -> None:
            _work()

        @app.handler("send_reminder")
        def send_reminder(to: str) -> None:
            _work()

        @app.handler("reserve_stock")
        def reserve_stock(sku: str, quantity: int) -> None:
            _work()

        @app.handler("send_email")
        def send_email(to: str, subject: str) -> None:
            _work()

        @app.handler("rebuild_search_index")
        def rebuild_search_index() -> None:
            _work(0.2, 0.25)

        @app.handler("import_feed", pass_context=True)
        def import_feed(context: JobContext, feed: str) -> None:
            with recorder.lock:
                first = context.job_id not in recorder.waited
                recorder.waited.add(context.job_id)
            if first:
                raise Waiting(f"feed {feed} is not published yet", delay=0.1)
            _work()

        @app.handler("generate_report")
        def generate_report(month: str) -> None:
            _work()

        @app.handler("email_report")
        def email_report(month: str, to: str) -> None:
            _work()

    def publish(self) -> list[Published]:
        """Publish the demo's jobs; the ids come back in publish order."""
        app = self.app

        def add(job: Job, scenario: str) -> Job:
            self.published.append(Published(job.id, scenario))
            return job

        add(app.publish("call_payment_api", {"order": 1041}), "fails twice, then succeeds")
        charge = add(
            app.publish("charge_card", {"card": "4000 0000 0000 0002"}), "permanent failure"
        )
        add(
            app.publish("send_receipt", {"order": 1041}, depends_on=[charge.id]),
            "depends on the failed job",
        )
        for step in ("created", "paid", "shipped"):
            add(
                app.publish("update_order", {"order": 7, "step": step}, serial_group="order-7"),
                f"serial group: {step}",
            )
        add(
            app.publish("send_reminder", {"to": "ada@example.com"}, delay=0.5),
            "delayed by 0.5 s",
        )
        add(
            app.publish_job(
                [
                    Call("reserve_stock", {"sku": "A-1", "quantity": 2}),
                    Call("send_email", {"to": "ada@example.com", "subject": "Order shipped"}),
                ]
            ),
            "two requests in one job",
        )
        for scenario in ("unique: does the work", "unique duplicate"):
            add(
                app.publish("rebuild_search_index", identifier="search-index", unique=True),
                scenario,
            )
        add(app.publish("import_feed", {"feed": "prices"}), "waits once, then succeeds")
        report = add(app.publish("generate_report", {"month": "2024-05"}), "dependency")
        add(
            app.publish(
                "email_report",
                {"month": "2024-05", "to": "cfo@example.com"},
                depends_on=[report.id],
            ),
            "runs after its dependency",
        )
        add(
            app.publish("send_alert", {"message": "disk almost full"}, priority=10),
            "priority 10, published last",
        )
        return self.published

    @property
    def terminal(self) -> frozenset[str]:
        """The states a job ends in."""
        return self.app.lifecycle.states.terminal

    def progress(self) -> tuple[int, int]:
        """(terminal jobs, all jobs) in the store."""
        terminal = self.terminal
        done = total = 0
        for _queue, state, count in self.app.status():
            total += count
            if state in terminal:
                done += count
        return done, total

    def run(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        on_job: Callable[[Job], None] | None = None,
        timeout: float = 30.0,
    ) -> WorkerStats:
        """Run a worker (in a thread) until every job is terminal, reporting progress."""
        worker: WorkerControl = self.app.worker(
            idle_delay=0.02, handle_signals=False, on_job=on_job, worker_id="demo"
        )
        thread = threading.Thread(target=worker.run, name="conveyor-demo-worker", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                done, total = self.progress()
                if on_progress is not None:
                    on_progress(done, total)
                if done >= total:
                    worker.stop("every demo job is terminal")
                    break
                if not thread.is_alive():
                    break
                if time.monotonic() > deadline:
                    worker.stop(f"the demo did not finish within {timeout:g} s")
                    break
                time.sleep(0.05)
        finally:
            worker.stop("interrupted")
            thread.join()
        return worker.stats

    def outcomes(self) -> list[Outcome]:
        order = {job_id: index + 1 for index, job_id in enumerate(self.recorder.first_run)}
        return [
            Outcome(self.app.get(item.job_id), item.scenario, order.get(item.job_id))
            for item in self.published
        ]

    @property
    def notifications(self) -> list[str]:
        return list(self.recorder.notifications)

    def close(self) -> None:
        self.app.close()
