"""Starting and stopping worker CLIs, and the three measurements: throughput, I/O, latency.

Every worker CLI is started in a process group of its own (its pid is the group's id), so
that the children a CLI forks (Celery's pool, Dramatiq's processes) are stopped with it:
SIGTERM first, SIGKILL after a bounded wait, and only to groups this runner started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import probe
from systems import HERE, System, pg_execute

STOP_TIMEOUT = 20.0


@dataclass
class Workers:
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    launched: float
    probes: Path

    def alive(self) -> bool:
        return any(process.poll() is None for process in self.processes)

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in self.logs:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


@dataclass
class Run:
    """Where one measurement's probe files and worker logs go."""

    root: Path
    counter: list[int] = field(default_factory=lambda: [0])

    def directory(self, label: str) -> Path:
        self.counter[0] += 1
        safe = "".join(c if c.isalnum() else "-" for c in label)[:40]
        path = self.root / f"{self.counter[0]:03d}-{safe}"
        path.mkdir(parents=True)
        return path


def start(
    system: System, processes: int, extra: tuple[str, ...], task: str, where: Path
) -> Workers:
    env = {
        **os.environ,
        **system.env(),
        "BENCH_PROBE_DIR": str(where),
        "BENCH_TASK": task,
        "PYTHONPATH": str(HERE),
        "PYTHONUNBUFFERED": "1",
    }
    launched = time.time()
    started, logs = [], []
    for index, argv in enumerate(system.commands(processes, extra)):
        log = where / f"worker-{index}.log"
        with log.open("ab") as out:
            started.append(
                subprocess.Popen(
                    argv,
                    cwd=HERE,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    return Workers(started, logs, launched, where)


def _group_members(group: int) -> bool:
    """Whether any process is still in process group ``group`` (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            return True
    return False


def stop(workers: Workers) -> None:
    for process in workers.processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in workers.processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(deadline - time.monotonic(), 0.1))
        # The group id is the pid of the CLI this runner started: only its own children.
        if _group_members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            print(f"warning: worker {process.pid} did not exit after SIGKILL", flush=True)


def wait_for(workers: Workers, count: int, timeout: float) -> tuple[int, float, float]:
    """Until the probes count ``count`` jobs ended, every worker exited, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, first, last = probe.read(workers.probes)
        if done >= count or time.monotonic() > deadline or not workers.alive():
            return done, first, last
        time.sleep(0.02)


def checkpoint(system: System) -> None:
    """ANALYZE the system's tables (as autovacuum would after a big insert), then CHECKPOINT so
    that no round pays for the previous one's dirty pages."""
    system.analyze()
    if system.transport == "postgresql" or system.key.startswith("conveyor"):
        pg_execute("CHECKPOINT")


def throughput(
    system: System,
    run: Run,
    jobs: int,
    processes: int,
    extra: tuple[str, ...],
    task: str,
    timeout: float,
) -> dict[str, Any]:
    """Jobs per second from the first job's start to the last job's end, ``jobs`` enqueued up
    front with no worker running."""
    system.reset()
    system.enqueue(jobs)
    checkpoint(system)
    where = run.directory(f"{system.key}-{task}-{processes}")
    workers = start(system, processes, extra, task, where)
    try:
        done, first, last = wait_for(workers, jobs, timeout)
    finally:
        stop(workers)
    result: dict[str, Any] = {"jobs": done, "complete": done >= jobs}
    if done and last > first:
        result.update(
            seconds=round(last - first, 3),
            jobs_per_s=round(done / (last - first), 1),
            startup_s=round(first - workers.launched, 2),
        )
    if done < jobs:
        result["problem"] = f"{done} of {jobs} jobs in {timeout:.0f} s\n{workers.tail()}"
    return result


def latency(
    system: System, run: Run, rate: float, seconds: float, timeout: float, warmup: int = 20
) -> dict[str, Any]:
    """Publish-to-start p50/p99 of jobs published at ``rate`` per second for ``seconds``, one
    worker process at its defaults, after ``warmup`` jobs (not counted)."""
    system.reset()
    where = run.directory(f"{system.key}-latency")
    workers = start(system, 1, (), "noop", where)
    try:
        system.publish_paced(warmup, 50.0, stamped=False)
        done, _, _ = wait_for(workers, warmup, timeout)
        if done < warmup:
            return {"problem": f"warm-up: {done} of {warmup} jobs\n{workers.tail()}"}
        sent = system.publish_paced(int(rate * seconds), rate, stamped=True)
        done, _, _ = wait_for(workers, warmup + sent, timeout)
    finally:
        stop(workers)
    samples = probe.latencies(where)
    if not samples:
        return {"problem": "no latency samples"}
    result: dict[str, Any] = {
        "jobs": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        "max_ms": round(samples[-1], 2),
    }
    if len(samples) < sent:
        result["problem"] = f"{len(samples)} of {sent} latency jobs started"
    return result


def new_run(name: str) -> Run:
    return Run(Path(tempfile.mkdtemp(prefix=f"{name}-")))
