"""The app a fault scenario's workers load (``conveyor --app faultapp:app consume``).

Settings come from the environment, as a deployment's would. The handler appends ``start``
and ``done`` lines to the scenario's runs file: one ``os.write`` of a short line with
O_APPEND is atomic across processes, so a SIGKILL leaves whole lines only.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from datetime import datetime, timedelta

from conveyor import Conveyor
from conveyor.broker import BrokerSettings
from conveyor.clock import SystemClock

from policy import RETRY

RUNS = os.environ.get("FAULTS_RUNS", os.devnull)


class ShiftedClock:
    """The wall clock plus an offset in seconds read from a file: the suite steps this
    worker's time by rewriting the file (the library takes any ``Clock``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.system = SystemClock()
        self.stamp = -1.0
        self.offset = timedelta()

    def now(self) -> datetime:
        try:
            stamp = os.stat(self.path).st_mtime
            if stamp != self.stamp:
                with open(self.path) as source:
                    self.offset = timedelta(seconds=float(source.read().strip() or 0))
                self.stamp = stamp
        except (OSError, ValueError):
            pass
        return self.system.now() + self.offset


def record(kind: str, n: int) -> None:
    line = f"{kind} {n} {os.getpid()} {time.time():.4f}\n".encode()
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _app() -> Conveyor:
    broker_url = os.environ.get("FAULTS_AMQP_URL") or None
    clock_file = os.environ.get("FAULTS_CLOCK_FILE")
    return Conveyor(
        os.environ.get("FAULTS_STORE_URL", "sqlite:///faults.db"),
        table_prefix=os.environ.get("FAULTS_TABLE_PREFIX", "faults_"),
        lease=timedelta(seconds=float(os.environ.get("FAULTS_LEASE", "3"))),
        clock=ShiftedClock(clock_file) if clock_file else None,
        broker_url=broker_url,
        broker_settings=BrokerSettings(
            prefix=os.environ.get("FAULTS_BROKER_PREFIX", "faults."),
            heartbeat=5,
            hand_back_after=1.0,
            confirm_timeout=3.0,
            connect_timeout=2.0,
        )
        if broker_url
        else None,
    )


# SIGUSR1 prints every thread's stack: the suite asks a worker that does not stop in time.
faulthandler.register(signal.SIGUSR1, all_threads=True)
app = _app()


@app.handler("work", retry=RETRY)
def work(n: int, sleep: float = 0.0) -> None:
    """Record the run's start, take ``sleep`` seconds, record its end."""
    record("start", n)
    if sleep:
        time.sleep(sleep)
    record("done", n)
