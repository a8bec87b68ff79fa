"""Consumers in real processes, for the CLI and fault tests: an app module and helpers.

The app module reads its settings from the environment, so that ``conveyor --app`` can load it
in a child process. Its handler appends ``start N PID TIME`` and ``done N PID TIME`` lines to a
runs file (O_APPEND writes of one short line are atomic across processes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .node import RabbitNode

APP_SOURCE = """
import os
import time
from datetime import timedelta
from pathlib import Path

from conveyor import Conveyor
from conveyor.broker import BrokerSettings

RUNS = Path(os.environ["BROKER_RUNS"])


def record(line: str) -> None:
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line} {os.getpid()} {time.time():.3f}\\n".encode())
    finally:
        os.close(fd)


app = Conveyor(
    os.environ["BROKER_STORE_URL"],
    table_prefix=os.environ["BROKER_TABLE_PREFIX"],
    lease=timedelta(seconds=float(os.environ.get("BROKER_LEASE", "30"))),
    broker_url=os.environ["BROKER_AMQP_URL"],
    broker_settings=BrokerSettings(
        prefix=os.environ["BROKER_PREFIX"], heartbeat=5, hand_back_after=1.0,
        confirm_timeout=5.0, connect_timeout=2.0,
    ),
)


@app.handler("work", retry="progressive")
def work(n: int, sleep: float = 0.0, block: bool = False) -> None:
    record(f"start {n}")
    release = Path(os.environ.get("BROKER_RELEASE", "/nonexistent"))
    while block and not release.exists():
        time.sleep(0.02)
    time.sleep(sleep)
    record(f"done {n}")
"""


@dataclass
class Environment:
    directory: Path
    store_url: str
    table_prefix: str
    broker_prefix: str
    amqp_url: str
    lease: float = 30.0

    @property
    def runs(self) -> Path:
        return self.directory / "runs.log"

    @property
    def release(self) -> Path:
        return self.directory / "release"

    def variables(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.directory), *sys.path]),
            "BROKER_RUNS": str(self.runs),
            "BROKER_RELEASE": str(self.release),
            "BROKER_STORE_URL": self.store_url,
            "BROKER_TABLE_PREFIX": self.table_prefix,
            "BROKER_PREFIX": self.broker_prefix,
            "BROKER_AMQP_URL": self.amqp_url,
            "BROKER_LEASE": str(self.lease),
        }

    @classmethod
    def made(
        cls, directory: Path, backend: str, table_prefix: str, broker_prefix: str, amqp_url: str
    ) -> Environment:
        """An environment whose app module is written, over ``backend``'s test database."""
        from ..conftest import backend_url

        made = cls(
            directory=directory,
            store_url=backend_url(backend, directory),
            table_prefix=table_prefix,
            broker_prefix=broker_prefix,
            amqp_url=amqp_url,
        )
        made.write_module()
        return made

    def write_module(self) -> None:
        (self.directory / "broker_app.py").write_text(APP_SOURCE)
        self.runs.touch()

    def conveyor(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "conveyor", "--app", "broker_app:app", *args]

    def consumer(self, name: str, *args: str) -> subprocess.Popen[str]:
        """``conveyor consume`` in a child process; its output goes to ``<name>.log``."""
        with (self.directory / f"{name}.log").open("w") as output:
            return subprocess.Popen(
                self.conveyor(
                    "consume", "--single-id", name, "--quiet", "--cycle-delay", "0.1", *args
                ),
                env=self.variables(),
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def output(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.runs.read_text().splitlines() if line.strip()]

    def counts(self, kind: str) -> Counter[int]:
        return Counter(int(parts[1]) for parts in self.lines() if parts[0] == kind)


def terminated(*children: subprocess.Popen[str]) -> list[int]:
    """SIGTERM every child at once, then their exit codes (a graceful stop is 0)."""
    for child in children:
        child.send_signal(signal.SIGTERM)
    return [child.wait(timeout=30) for child in children]


@contextmanager
def processes(*children: subprocess.Popen[str]) -> Iterator[None]:
    """Kill whatever is still running when the block ends."""
    try:
        yield
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)


# -- outages of a private RabbitMQ node ------------------------------------------------------


def broker_answers(amqp_url: str) -> bool:
    import pika

    parameters = pika.URLParameters(amqp_url)
    parameters.socket_timeout = 2
    parameters.connection_attempts = 1
    try:
        pika.BlockingConnection(parameters).close()
    except Exception:
        return False
    return True


@contextmanager
def broker_stopped_and_restored(node: RabbitNode) -> Iterator[None]:
    """Yield between ``stop_app`` and ``start_app`` of the test's own node; whatever happens,
    the node ends running and answering (bounded waits)."""
    node.stop_app()
    try:
        yield
    finally:
        node.start_app()
        deadline = time.monotonic() + 60
        while not broker_answers(node.amqp_url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert broker_answers(node.amqp_url), "the RabbitMQ node did not come back after start_app"
