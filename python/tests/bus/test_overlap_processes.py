"""WithoutOverlapping holds across worker processes sharing one store (SQLite, PostgreSQL)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from conveyor import SystemClock

from .support import END_TO_END

WIRING = """
    import fcntl
    import json
    import os
    import sys
    import time
    from dataclasses import dataclass

    from conveyor import Conveyor
    from conveyor.bus import (
        ConveyorQueue, HandlerContainer, QueueJob, QueueJobDispatcher, Result, StoreLocks,
        WithoutOverlapping,
    )


    @dataclass(frozen=True)
    class RebuildReport(QueueJob):
        report: str
        n: int


    # A process's first run waits (at most 30 s) until the other process has started a run
    # too: both then work, side by side, however loaded the machine is.
    def wait_for_both(starts_path):
        with open(starts_path, "a") as starts:
            starts.write(f"{os.getpid()}\\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(starts_path) as starts:
                if len(set(starts.read().split())) >= 2:
                    return
            time.sleep(0.01)


    def wire(app, record_path):
        first_run = [True]

        def rebuild(job):
            started = time.time()
            if first_run[0]:
                first_run[0] = False
                wait_for_both(record_path + ".starts")
            time.sleep(0.1)  # widen the window in which an overlap could happen
            finished = time.time()
            line = {"report": job.report, "n": job.n, "pid": os.getpid(),
                    "started": started, "finished": finished}
            with open(record_path, "a") as record:
                fcntl.flock(record, fcntl.LOCK_EX)
                record.write(json.dumps(line) + "\\n")
                fcntl.flock(record, fcntl.LOCK_UN)
            return Result.ok()

        handlers = HandlerContainer()
        handlers.bind(RebuildReport, lambda: rebuild)
        queue = ConveyorQueue(app).dispatch_to(jobs=QueueJobDispatcher(handlers))
        overlap = WithoutOverlapping(
            lambda job: f"report:{job.report}", StoreLocks(app), release_after=0.02
        )
        queue.register(RebuildReport, "tests.rebuild_report", middleware=[overlap])
        return queue


    if __name__ == "__main__":
        url, prefix, record_path = sys.argv[1:4]
        app = Conveyor(url, table_prefix=prefix)
        wire(app, record_path)
        print("ready", flush=True)
        app.worker(idle_delay=0.02).run()  # until SIGTERM
"""

JOBS_PER_REPORT = 5


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("overlap_wiring", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["overlap_wiring"] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@END_TO_END
def test_two_worker_processes_never_overlap_on_one_key(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(clock=SystemClock())
    module_path = tmp_path / "overlap_wiring.py"
    module_path.write_text(textwrap.dedent(WIRING))
    record = tmp_path / "runs.jsonl"
    record.touch()
    wiring = load(module_path)
    queue = wiring.wire(app, str(record))
    app.store  # noqa: B018 - create the schema before the workers start

    workers = [
        subprocess.Popen(
            [sys.executable, str(module_path), app.url, app.table_prefix, str(record)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for report in ("sales", "attendance"):  # claim order puts same-report jobs side by side
            for n in range(JOBS_PER_REPORT):
                queue.push(wiring.RebuildReport(report, n))
        for job in app.jobs(limit=1000):
            app.wait(job.id, timeout=60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.communicate()
        del sys.modules["overlap_wiring"]

    jobs = app.jobs(limit=1000)
    assert len(jobs) == 2 * JOBS_PER_REPORT
    assert {job.state for job in jobs} == {"finished"}
    assert all(worker.returncode == 0 for worker in workers)

    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 2 * JOBS_PER_REPORT  # each job ran exactly once
    by_report: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        by_report[run["report"]].append((run["started"], run["finished"]))
    for report, intervals in by_report.items():
        intervals.sort()
        for (_, previous_end), (start, _) in itertools.pairwise(intervals):
            assert start >= previous_end, f"two {report} runs overlapped"
    # Both processes did work, and runs of different reports did overlap: the workers
    # really ran concurrently, so only the lock kept each report's runs apart.
    assert len({run["pid"] for run in runs}) == 2
    sales, attendance = by_report["sales"], by_report["attendance"]
    assert any(s < a_end and a < s_end for s, s_end in sales for a, a_end in attendance)
