"""CPU time per job of the library's own process: publish, and claim + run + complete.

Wall-clock rates on a shared machine move with everybody else's load; the CPU time this
process spends per job does much less, and it is what bounds one worker once the database
answers quickly. Each measurement runs in a fresh child process: it publishes ``--jobs``
no-op jobs one call each (``publish``), as many again in ``bulk()`` (``bulk``), then one worker
at its defaults drains them (``work``: claim, run, complete, with the worker's threads).
Reported: CPU µs per job (``time.process_time``, every thread of the process) and, for
reference, wall µs per job; medians over ``--rounds``, and their range.

``--against DIR`` runs the same measurements with another checkout's library (its
``python/src``), alternating rounds, so two versions compare under the same load:

    python bench/cpu_per_job.py --against /path/to/other/checkout/python/src

``--instructions`` counts instead the instructions a worker executes per job (valgrind's
callgrind, which must be installed): jobs are published by a separate process, then a
worker drains ``--jobs`` and, in another run, twice as many; the difference divided by
``--jobs`` leaves out start-up. About 50 times slower than running natively, but the count
does not depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POSTGRES_URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PREFIX = f"cpu{os.getpid()}_"
HERE = Path(__file__).resolve()
OWN_SOURCE = HERE.parent.parent / "python" / "src"


def noop() -> None:
    """The no-op job every figure measures."""


def _measure(url: str, jobs: int, steps: set[str]) -> dict[str, dict[str, float]]:
    """One round in this process: the figures of each step, per job."""
    from conveyor import Conveyor

    app = Conveyor(url, table_prefix=PREFIX)
    app.register("noop", noop)
    app.store  # noqa: B018 - connect and create the schema before the clocks start
    figures: dict[str, dict[str, float]] = {}

    def timed(step: str, count: int, action: Any) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        done = action()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if done is not None and done != count:
            raise SystemExit(f"{step}: {done} jobs instead of {count}")
        figures[step] = {"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}

    def publish() -> None:
        for _ in range(jobs):
            app.publish("noop")

    def bulk() -> None:
        with app.bulk(size=1000):
            for _ in range(jobs):
                app.publish("noop")

    def work() -> int:
        return app.worker(stop_when_empty=True, handle_signals=False).run().jobs

    try:
        if "publish" in steps:
            timed("publish", jobs, publish)
        timed(
            "bulk", jobs, bulk
        )  # always: the work step drains what the steps published
        if "work" in steps:
            done = jobs * (2 if "publish" in steps else 1)
            timed("work", done, work)
    finally:
        app.store.drop_schema()  # type: ignore[attr-defined]
        app.close()
    return figures


def _drain_instructions(source: Path, url: str, jobs: int) -> int:
    """Instructions of one process that publishes nothing and drains ``jobs`` jobs."""
    environment = dict(os.environ, PYTHONPATH=str(source))
    prefix = f"cpuir{os.getpid()}_"
    script = [sys.executable, str(HERE), "--child-drain", url, "--prefix", prefix]
    subprocess.run(
        [*script, "--jobs", str(jobs)], env=environment, check=True
    )  # publish
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *script,
            "--jobs",
            "0",
        ],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        [*script, "--jobs", "-1"], env=environment, check=True
    )  # drop the tables
    (count,) = re.findall(r"Collected : (\d+)", run.stderr)
    return int(count)


def _drain_child(url: str, prefix: str, jobs: int) -> None:
    """Publish ``jobs`` (> 0), drain everything (0), or drop the tables (-1)."""
    from conveyor import Conveyor

    app = Conveyor(url, table_prefix=prefix)
    app.register("noop", noop)
    if jobs > 0:
        with app.bulk(size=1000):
            for _ in range(jobs):
                app.publish("noop")
    elif jobs == 0:
        app.worker(stop_when_empty=True, handle_signals=False).run()
    else:
        app.store.drop_schema()  # type: ignore[attr-defined]
    app.close()


def _instructions(
    sources: dict[str, Path], backends: list[str], jobs: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            url = (
                POSTGRES_URL
                if backend == "postgresql"
                else f"sqlite:///{folder}/cpu.db"
            )
            for name, source in sources.items():
                once = _drain_instructions(source, url, jobs)
                twice = _drain_instructions(source, url, 2 * jobs)
                per_job = (twice - once) / jobs
                results[f"{backend} work {name}"] = {"instructions": per_job}
                print(
                    f"{backend:<10} work     {name:<8} {per_job:,.0f} instructions/job",
                    flush=True,
                )
    return results


def _child(
    source: Path, backend: str, jobs: int, steps: str
) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        url = POSTGRES_URL if backend == "postgresql" else f"sqlite:///{folder}/cpu.db"
        environment = dict(os.environ, PYTHONPATH=str(source))
        output = subprocess.run(
            [
                sys.executable,
                str(HERE),
                "--child",
                url,
                "--jobs",
                str(jobs),
                "--steps",
                steps,
            ],
            env=environment,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    figures: dict[str, dict[str, float]] = json.loads(output.splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per publish step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steps", default="publish,work", help="publish and/or work (bulk always runs)"
    )
    parser.add_argument("--against", type=Path, help="another checkout's python/src")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions (valgrind) instead",
    )
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--child-drain", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.jobs, set(args.steps.split(",")))))
        return
    if args.child_drain:
        _drain_child(args.child_drain, args.prefix, args.jobs)
        return
    sources = {"this": OWN_SOURCE}
    if args.against:
        sources["against"] = args.against.resolve()
    out = HERE.parent / "results" / "cpu_per_job.json"
    out.parent.mkdir(exist_ok=True)
    if args.instructions:
        counted = _instructions(sources, args.backends.split(","), args.jobs)
        out.write_text(json.dumps(counted, indent=2) + "\n")
        return
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {
            name: [] for name in sources
        }
        names = list(sources)
        for number in range(args.rounds):
            # alternating, and in turn first: both see the same load, neither always goes first
            for name in names if number % 2 == 0 else names[::-1]:
                rounds[name].append(_child(sources[name], backend, args.jobs, args.steps))
        for name, measured in rounds.items():
            for step in measured[0]:
                cpus = [r[step]["cpu_us"] for r in measured]
                walls = [r[step]["wall_us"] for r in measured]
                cpu, wall = statistics.median(cpus), statistics.median(walls)
                results[f"{backend} {step} {name}"] = {
                    "cpu_us": cpu,
                    "wall_us": wall,
                    "cpu_us_rounds": cpus,
                    "wall_us_rounds": walls,
                }
                print(
                    f"{backend:<10} {step:<8} {name:<8} CPU {cpu:7.1f} µs/job "
                    f"({min(cpus):.1f}-{max(cpus):.1f})   wall {wall:7.1f} µs/job "
                    f"({min(walls):.1f}-{max(walls):.1f})",
                    flush=True,
                )
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
