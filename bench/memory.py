"""The worker's memory over a long run on PostgreSQL: ``conveyor consume`` drains N no-op jobs.

    python bench/memory.py                                  # 1,000,000 jobs, 15 minutes at most
    python bench/memory.py --jobs 200000 --seconds 300

Publishes ``--chunk`` no-op jobs with ``publish_many`` and copies them server-side up to
``--jobs`` (as ``bench/scale.py`` fills its tables), then runs ``conveyor --app bench/memory_app.py:app consume --jobs N --batch-size 100
--quiet`` as a child process. Its handler notes the process's resident memory (VmRSS) and peak
(VmHWM) at the first job and every ``--every`` jobs; this script also samples VmRSS once a
second from outside. A consumer still running after ``--seconds`` is stopped with SIGTERM,
and the figures are those of the jobs it ran. The tables are dropped at the end. Writes
bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CONVEYOR_BENCH_PREFIX", f"memory{os.getpid()}_")

import memory_app  # noqa: E402

from conveyor.store.sql.schema import build_tables  # noqa: E402


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def drop() -> None:
    engine = create_engine(memory_app.URL)
    build_tables(memory_app.PREFIX).metadata.drop_all(engine, checkfirst=True)
    engine.dispose()


def publish(jobs: int, chunk: int) -> float:
    """The first ``chunk`` jobs by ``publish_many``; the rest copied from them server-side
    (INSERT ... SELECT, ``chunk`` rows per statement), as the library wrote them: publishing
    a million jobs through the library takes longer than draining them."""
    app = memory_app.app
    start = time.perf_counter()
    first = min(chunk, jobs)
    app.publish_many("noop", [None] * first)
    store: Any = app.store
    table = store.tables.jobs.name
    listed = ", ".join(c.name for c in store.tables.jobs.columns if c.name != "id")
    left = jobs - first
    with store.engine.connect() as connection:
        while left > 0:
            count = min(chunk, left)
            connection.execute(
                text(
                    f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {table} "
                    "ORDER BY id LIMIT :n"
                ),
                {"n": count},
            )
            connection.commit()
            left -= count
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"ANALYZE {table}")
    app.close()
    return time.perf_counter() - start


def consume(jobs: int, every: int, seconds: float, notes: Path) -> dict[str, Any]:
    environment = dict(os.environ, CONVEYOR_BENCH_RSS=str(notes), CONVEYOR_BENCH_EVERY=str(every))
    command = [
        sys.executable, "-m", "conveyor", "--app", f"{HERE / 'memory_app.py'}:app",
        "consume", "--jobs", str(jobs), "--batch-size", "100", "--quiet",
    ]  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    stopped = False
    while child.poll() is None:
        found = rss_kib(child.pid)
        if found is not None:
            samples.append((round(time.perf_counter() - start, 1), found))
        if not stopped and time.perf_counter() - start > seconds:
            child.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(1.0)
    elapsed = time.perf_counter() - start
    marks = []
    for line in notes.read_text().splitlines():
        done, moment, rss, peak = line.split()
        marks.append({"jobs": int(done), "rss_kib": int(rss), "peak_kib": int(peak)})
    return {
        "exit_code": child.returncode,
        "stopped_at_time_limit": stopped,
        "seconds": round(elapsed, 1),
        "marks": marks,
        "outside_samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=900, help="stop the consumer after")
    args = parser.parse_args()
    drop()
    try:
        published = publish(args.jobs, args.chunk)
        print(f"published {args.jobs:,} jobs in {published:.0f} s", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            result = consume(args.jobs, args.every, args.seconds, Path(folder) / "rss.txt")
    finally:
        drop()
    result.update(jobs=args.jobs, publish_seconds=round(published, 1))
    for mark in result["marks"]:
        print(
            f"{mark['jobs']:>9,} jobs: RSS {mark['rss_kib'] / 1024:6.1f} MiB "
            f"(peak {mark['peak_kib'] / 1024:6.1f} MiB)",
            flush=True,
        )
    ran = result["marks"][-1]["jobs"] if result["marks"] else 0
    print(
        f"consumer: {result['seconds']} s, exit {result['exit_code']}, "
        f"{'stopped at the time limit, ' if result['stopped_at_time_limit'] else ''}"
        f"last mark at {ran:,} jobs",
        flush=True,
    )
    output = HERE / "results" / "memory.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
