"""Conveyor against pgqueuer, Procrastinate, Dramatiq and Celery, measured the same way in one run.

    just bench-peers                              # everything, default sizes (about 20 min)
    just bench-peers --rounds 1 --jobs 2000 --only conveyor --only pgqueuer
    just bench-io                                 # the I/O-bound benchmark (10 ms handlers)

Runs in the peers' own virtualenv (bench/.peers-venv, made by the Justfile recipe from
bench/requirements-peers.txt), on PostgreSQL (BENCH_PG_URL) and RabbitMQ (BENCH_AMQP_URL).

No-op benchmark: for 1 and 2 worker processes, ``--jobs`` jobs are enqueued with no worker
running, the tables ANALYZEd, a CHECKPOINT taken, then each system's own worker CLI started;
the rate runs from the first job's start to the last job's end, read from a probe every
handler calls (probe.py), median of ``--rounds`` rounds that alternate the systems. Then
publishing (one job per call, and bulk in chunks of 1,000) and publish-to-start latency at a
steady rate through one worker at its defaults.

I/O benchmark (``--io``): handlers that wait 10 ms (time.sleep in a sync handler, asyncio.sleep
in an async one); jobs/s of one Conveyor process at each ``--concurrency``, of one Dramatiq
process (8 threads) and one pgqueuer process, and the target of issue 12; and, as the ceiling
of each kind of wait, as many threads or tasks as the top concurrency doing nothing but the
wait (ceiling.py).

Writes bench/results/peers.json (io.json) with every round, a small peers-summary.json
(io-summary.json) and prints the tables. Every table, schema, queue and exchange of a run
starts with its name (bp + 6 hex digits) and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
KEYS = [
    "conveyor",
    "conveyor-best",
    "pgqueuer",
    "procrastinate",
    "conveyor-broker",
    "conveyor-broker-best",
    "dramatiq",
    "celery",
]
PACKAGES = [
    "conveyor",
    "pgqueuer",
    "asyncpg",
    "procrastinate",
    "psycopg",
    "dramatiq",
    "pika",
    "celery",
    "kombu",
    "amqp",
    "sqlalchemy",
    "typer",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median)")
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per throughput round")
    parser.add_argument(
        "--only",
        action="append",
        choices=KEYS,
        metavar="SYSTEM",
        help=f"measure only these (repeat): {', '.join(KEYS)}",
    )
    parser.add_argument(
        "--workers", type=int, action="append", help="worker processes (repeat; default 1 and 2)"
    )
    parser.add_argument(
        "--publish-jobs",
        type=int,
        default=2000,
        help="jobs published one per call (bulk: ten times as many)",
    )
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--skip-publish", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--conveyor-best",
        default="--batch-size 100 --concurrency 32",
        help="Conveyor's labelled best setting on PostgreSQL (consume options)",
    )
    parser.add_argument(
        "--conveyor-broker-best",
        default="--prefetch 100 --batch-size 100",
        help="Conveyor's labelled best setting in broker mode",
    )
    parser.add_argument("--io", action="store_true", help="the I/O-bound benchmark instead")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="--io: Conveyor concurrency levels (repeat; default 1, 8, 32)",
    )
    parser.add_argument(
        "--io-seconds",
        type=float,
        default=3.0,
        help="--io: jobs per round sized to take about this long",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds one measurement may take (default from --jobs)",
    )
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    from systems import amqp, pg

    with contextlib.suppress(Exception), pg() as connection:
        found["postgresql"] = connection.execute("SHOW server_version").fetchone()[0]
    with contextlib.suppress(Exception):
        connection = amqp()
        version = connection._impl.server_properties["version"]
        found["rabbitmq"] = version.decode() if isinstance(version, bytes) else str(version)
        connection.close()
    return found


def median_of(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None and r.get("complete", True)]
    return round(statistics.median(values), 1) if values else None


def say(*parts: Any) -> None:
    print(*parts, flush=True)


# -- the no-op benchmark -------------------------------------------------------------------------


def noop_benchmark(args: argparse.Namespace, chosen: list[Any], run: Any) -> dict[str, Any]:
    import measure

    data: dict[str, Any] = {
        s.key: {
            "label": s.label,
            "transport": s.transport,
            "setting": s.setting(),
            "defaults": s.defaults,
            "handler": s.handler,
            "throughput": {},
            "publish": {},
            "latency": None,
        }
        for s in chosen
    }
    timeout = args.timeout or 120 + args.jobs / 50
    if not args.skip_throughput:
        for workers in args.workers or [1, 2]:
            for round_number in range(1, args.rounds + 1):
                for system in chosen:
                    result = measure.throughput(
                        system, run, args.jobs, workers, system.extra, "noop", timeout
                    )
                    data[system.key]["throughput"].setdefault(str(workers), []).append(result)
                    say(
                        f"[{round_number}/{args.rounds}] {system.label}, {workers} worker(s): "
                        f"{result.get('jobs_per_s', '-')} jobs/s "
                        f"({result['jobs']} jobs, start-up {result.get('startup_s', '-')} s)"
                    )
                    if result.get("problem"):
                        say(result["problem"])
    if not args.skip_publish:
        for round_number in range(1, args.rounds + 1):
            for system in chosen:
                if system.extra:
                    continue  # publishing does not depend on the worker's setting
                system.reset()
                single = args.publish_jobs / system.publish_single(args.publish_jobs)
                system.reset()
                bulk_seconds = system.publish_bulk(args.publish_jobs * 10)
                bulk = args.publish_jobs * 10 / bulk_seconds if bulk_seconds else None
                system.reset()
                entry = data[system.key]["publish"]
                entry.setdefault("single", []).append(round(single, 1))
                if bulk is not None:
                    entry.setdefault("bulk", []).append(round(bulk, 1))
                say(
                    f"[{round_number}/{args.rounds}] {system.label}: publish {single:,.0f}/s "
                    f"one per call, {f'{bulk:,.0f}/s' if bulk else '-'} bulk"
                )
    if not args.skip_latency:
        for system in chosen:
            if system.extra:
                continue
            result = measure.latency(
                system,
                run,
                args.latency_rate,
                args.latency_seconds,
                timeout=args.latency_seconds + 60,
            )
            data[system.key]["latency"] = result
            say(
                f"{system.label}: publish-to-start at {args.latency_rate:g}/s: "
                f"p50 {result.get('p50_ms', '-')} ms, p99 {result.get('p99_ms', '-')} ms"
            )
            if result.get("problem"):
                say(result["problem"])
    return data


def summarize_noop(data: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, entry in data.items():
        summary[key] = {
            "label": entry["label"],
            "transport": entry["transport"],
            "jobs_per_s": {
                w: median_of(rounds, "jobs_per_s") for w, rounds in entry["throughput"].items()
            },
            "jobs_per_s_each_round": {
                w: [r.get("jobs_per_s") for r in rounds]
                for w, rounds in entry["throughput"].items()
            },
            "publish_per_s": {
                kind: round(statistics.median(values)) for kind, values in entry["publish"].items()
            },
            "latency_ms": {
                k: v
                for k, v in (entry["latency"] or {}).items()
                if k in ("p50_ms", "p99_ms", "max_ms", "jobs")
            },
        }
    return summary


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def noop_tables(summary: dict[str, Any], workers: list[int], rate: float) -> str:
    out = []
    for transport, title in (("postgresql", "PostgreSQL"), ("rabbitmq", "RabbitMQ")):
        keys = [k for k in KEYS if k in summary and summary[k]["transport"] == transport]
        if not keys:
            continue
        out.append(f"| {title} | " + " | ".join(summary[k]["label"] for k in keys) + " |")
        out.append("|---|" + "---:|" * len(keys))
        for w in workers:
            cells = [number(summary[k]["jobs_per_s"].get(str(w))) for k in keys]
            out.append(
                f"| jobs/s, {w} worker process{'es' if w > 1 else ''} | " + " | ".join(cells) + " |"
            )
        for kind, what in (
            ("single", "publish, one per call, jobs/s"),
            ("bulk", "publish, bulk (chunks of 1,000), jobs/s"),
        ):
            cells = [number(summary[k]["publish_per_s"].get(kind)) for k in keys]
            if any(c != "-" for c in cells):
                out.append(f"| {what} | " + " | ".join(cells) + " |")
        cells = []
        for k in keys:
            lat = summary[k]["latency_ms"]
            cells.append(f"{lat['p50_ms']} / {lat['p99_ms']}" if "p50_ms" in lat else "-")
        if any(c != "-" for c in cells):
            out.append(
                f"| publish-to-start at {rate:g} jobs/s, p50 / p99 ms | " + " | ".join(cells) + " |"
            )
        out.append("")
    ratios = []
    for ours, peer in (
        ("conveyor", "pgqueuer"),
        ("conveyor-best", "pgqueuer"),
        ("conveyor-broker", "dramatiq"),
        ("conveyor-broker-best", "dramatiq"),
    ):
        if ours in summary and peer in summary:
            for w in workers:
                a = summary[ours]["jobs_per_s"].get(str(w))
                b = summary[peer]["jobs_per_s"].get(str(w))
                if a and b:
                    ratios.append(
                        f"{summary[ours]['label']} / {summary[peer]['label']}, "
                        f"{w} worker(s): {a / b:.2f}"
                    )
    if ratios:
        out.append("Ratios: " + "; ".join(ratios) + ".")
    return "\n".join(out)


# -- the I/O-bound benchmark ---------------------------------------------------------------------


def io_benchmark(args: argparse.Namespace, chosen: list[Any], run: Any) -> dict[str, Any]:
    import measure
    from settings import SLEEP_SECONDS

    levels = args.concurrency or [1, 8, 32]
    top = max(levels)
    plans: list[tuple[str, Any, tuple[str, ...], str, int]] = []
    by_key = {s.key: s for s in chosen}
    sized = lambda slots: max(200, round(args.io_seconds * slots / SLEEP_SECONDS))  # noqa: E731
    if "conveyor" in by_key:
        conveyor = by_key["conveyor"]
        for task, handler in (("sleep", "def"), ("asleep", "async def")):
            for level in levels:
                plans.append(
                    (
                        f"Conveyor, {handler}, --concurrency {level}",
                        conveyor,
                        ("--concurrency", str(level)),
                        task,
                        sized(level),
                    )
                )
            noop = "noop" if task == "sleep" else "anoop"
            plans.append(
                (
                    f"Conveyor, {handler}, --concurrency {top}, no-op",
                    conveyor,
                    ("--concurrency", str(top)),
                    noop,
                    args.jobs,
                )
            )
        for handler in ("def", "async def"):  # the wait alone: the ceiling of its kind
            plans.append((f"the wait alone, {handler}, {top} at once", None, (), handler, sized(top)))
    if "dramatiq" in by_key:
        plans.append(
            ("Dramatiq, def, 1 process x 8 threads", by_key["dramatiq"], (), "sleep", sized(8))
        )
    if "pgqueuer" in by_key:
        plans.append(
            (
                "pgqueuer, async def, 1 process, defaults",
                by_key["pgqueuer"],
                (),
                "asleep",
                sized(top),
            )
        )
        # Its default runs every fetched job at once, with no limit: the same process held
        # to Conveyor's top concurrency, labelled, for a comparison at equal slots.
        plans.append(
            (
                f"pgqueuer, async def, 1 process, --max-concurrent-tasks {top}",
                by_key["pgqueuer"],
                ("--max-concurrent-tasks", str(top)),
                "asleep",
                sized(top),
            )
        )
    timeout = args.timeout or 180.0
    results: dict[str, Any] = {}
    for round_number in range(1, args.rounds + 1):
        for label, system, extra, task, jobs in plans:
            if system is None:
                result = wait_alone(task, top, jobs)
            else:
                result = measure.throughput(system, run, jobs, 1, extra, task, timeout)
            entry = results.setdefault(
                label,
                {
                    "system": system.key if system is not None else None,
                    "options": list(extra),
                    "task": task,
                    "jobs": jobs,
                    "rounds": [],
                },
            )
            entry["rounds"].append(result)
            say(
                f"[{round_number}/{args.rounds}] {label}: {result.get('jobs_per_s', '-')} jobs/s "
                f"({result['jobs']} jobs)"
            )
            if result.get("problem"):
                say(result["problem"])
    for entry in results.values():
        entry["jobs_per_s"] = median_of(entry["rounds"], "jobs_per_s")
    return {"levels": levels, "sleep_s": SLEEP_SECONDS, "results": results}


def wait_alone(handler: str, slots: int, waits: int) -> dict[str, Any]:
    """``slots`` threads or tasks doing nothing but the benchmark's wait (``ceiling.py``), in
    a process of their own: what the machine allows that kind of wait, with no queue."""
    found = subprocess.run(
        [sys.executable, "ceiling.py", handler, str(slots), str(waits)],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(found.stdout)
    return result


def io_verdict(data: dict[str, Any]) -> list[str]:
    levels, sleep_s, results = data["levels"], data["sleep_s"], data["results"]
    top = max(levels)
    peers = {
        label: entry["jobs_per_s"]
        for label, entry in results.items()
        if not label.startswith(("Conveyor", "the wait alone"))
    }
    lines = []
    for handler in ("def", "async def"):
        ours = results.get(f"Conveyor, {handler}, --concurrency {top}", {}).get("jobs_per_s")
        noop = results.get(f"Conveyor, {handler}, --concurrency {top}, no-op", {}).get("jobs_per_s")
        if not ours or not noop:
            continue
        bound = min(top / sleep_s, noop)
        verdict = [
            f"{handler} handler at --concurrency {top}: {ours:,.0f} jobs/s = "
            f"{ours / bound:.2f} of min({top} / {sleep_s * 1000:g} ms, no-op "
            f"{noop:,.0f}) = {bound:,.0f} (target 0.90: "
            f"{'met' if ours >= 0.9 * bound else 'NOT met'})"
        ]
        alone = results.get(f"the wait alone, {handler}, {top} at once", {}).get("jobs_per_s")
        if alone:
            verdict.append(f"{ours / alone:.2f} of the wait alone ({alone:,.0f})")
        for label, rate in peers.items():
            if rate:
                verdict.append(
                    f"{ours / rate:.2f}x {label} ({rate:,.0f}: "
                    f"{'met' if ours >= rate else 'NOT met'})"
                )
        lines.append("; ".join(verdict))
    return lines


def io_table(data: dict[str, Any]) -> str:
    lines = ["| what | jobs per round | jobs/s (median) | each round |", "|---|---:|---:|---|"]
    for label, entry in data["results"].items():
        rounds = ", ".join(number(r.get("jobs_per_s")) for r in entry["rounds"])
        lines.append(f"| {label} | {entry['jobs']:,} | {number(entry['jobs_per_s'])} | {rounds} |")
    return "\n".join([*lines, "", *io_verdict(data)])


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    name = f"bp{uuid.uuid4().hex[:6]}"
    os.environ["BENCH_NAME"] = name  # read by settings.py, here and in every worker
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import measure
    import systems

    chosen = systems.every(
        tuple(shlex.split(args.conveyor_best)), tuple(shlex.split(args.conveyor_broker_best))
    )
    if args.io:
        wanted = set(args.only or ["conveyor", "dramatiq", "pgqueuer"])
    else:
        wanted = set(args.only or KEYS)
    chosen = [s for s in chosen if s.key in wanted]
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "when": started.isoformat(timespec="seconds"),
        "command": " ".join(["bench/peers/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "run_name": name,
        "machine": machine(),
        "versions": versions(),
        "settings": {
            s.key: {
                "label": s.label,
                "defaults": s.defaults,
                "handler": s.handler,
                "options": list(s.extra),
            }
            for s in chosen
        },
        "arguments": vars(args),
    }
    say(f"run {name}: {', '.join(s.key for s in chosen)}; versions {report['versions']}")
    run = measure.new_run(name)
    try:
        for system in chosen:
            system.setup()
        if args.io:
            report["io"] = io_benchmark(args, chosen, run)
        else:
            report["noop"] = noop_benchmark(args, chosen, run)
    finally:
        for system in chosen:
            try:
                system.cleanup()
            except Exception as error:  # report and clean up the others
                say(f"clean-up of {system.key} failed: {error}")
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["seconds"] = round((datetime.now(UTC) - started).total_seconds())
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "io" if args.io else "peers"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    head = {k: report[k] for k in ("when", "command", "machine", "versions", "settings")}
    if args.io:
        table = io_table(report["io"])
        summary = {
            **head,
            "io": {
                label: {
                    "jobs_per_s": e["jobs_per_s"],
                    "jobs": e["jobs"],
                    "each_round": [r.get("jobs_per_s") for r in e["rounds"]],
                }
                for label, e in report["io"]["results"].items()
            },
            "verdict": io_verdict(report["io"]),
        }
    else:
        noop_summary = summarize_noop(report["noop"])
        table = noop_tables(noop_summary, args.workers or [1, 2], args.latency_rate)
        summary = {**head, "results": noop_summary}
    (RESULTS / f"{stem}-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    say("")
    say(
        f"{report['when']}, {report['machine']['cpus']} CPUs ({report['machine']['cpu']}), "
        f"load average {report['machine']['load_average_at_start'][0]:.1f} at the start, "
        f"{report['machine']['load_average_at_end'][0]:.1f} at the end; "
        f"{report['seconds']} s"
    )
    say(table)
    say(f"\nwrote {RESULTS / (stem + '.json')} and {stem}-summary.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
