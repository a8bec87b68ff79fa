"""Benchmark: Conveyor against raw-SQL baselines measured in the same run.

    python bench/run.py                      # every available database, default sizes
    python bench/run.py --db postgresql --jobs 20000 --memory-jobs 100000

Writes bench/results/latest.json and prints a table. Figures are ratios to the baseline,
because absolute numbers on a shared machine move by 10-30 % between runs; each processing
figure is the median of --repeat rounds (3) that alternate the raw loop and Conveyor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import conveyor_side  # noqa: E402
import raw  # noqa: E402

URLS = {
    "sqlite": "sqlite:///bench/results/bench.db",
    "postgresql": os.environ.get(
        "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "CONVEYOR_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    ),
}


def reachable(url: str) -> bool:
    try:
        raw.connect(url).close()
    except Exception as error:
        print(f"skipping {url.split('://')[0]}: {error}", file=sys.stderr)
        return False
    return True


def measure(
    db: str, url: str, jobs: int, publish_jobs: int, batches: list[int], repeat: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"processing": [], "publish": {}}
    for batch in batches:
        for workers in (1, 2):
            # Alternate the two sides and keep each one's median: a passing disturbance
            # (a checkpoint, another process) then moves neither figure much.
            baselines, ours_all = [], []
            for _ in range(repeat):
                baselines.append(raw.process(url, jobs, batch, workers))
                ours_all.append(conveyor_side.process(url, jobs, batch, workers))
            baseline, ours = statistics.median(baselines), statistics.median(ours_all)
            row = {
                "batch": batch, "workers": workers,
                "raw_jobs_per_s": round(baseline), "conveyor_jobs_per_s": round(ours),
                "ratio": round(ours / baseline, 2),
                "ratios_of_each_round": [round(o / b, 2) for o, b in zip(ours_all, baselines)],
            }
            print(db, "process", row, flush=True)
            result["processing"].append(row)
    raw.reset(url)
    conveyor_side.reset(url)
    single_raw = publish_jobs / raw.publish_single(url, publish_jobs)
    single_ours = publish_jobs / conveyor_side.publish_single(url, publish_jobs)
    bulk_count = publish_jobs * 10
    bulk_raw = bulk_count / raw.publish_bulk(url, bulk_count)
    bulk_ours = bulk_count / conveyor_side.publish_bulk(url, bulk_count)
    bulk_same_table = bulk_count / raw.publish_bulk_same_table(url, bulk_count)
    result["publish"] = {
        "single": {"raw_per_s": round(single_raw), "conveyor_per_s": round(single_ours),
                   "ratio": round(single_ours / single_raw, 2)},
        "bulk_1000": {"raw_per_s": round(bulk_raw), "conveyor_per_s": round(bulk_ours),
                      "ratio": round(bulk_ours / bulk_raw, 2)},
        # The same rows' database cost alone: raw INSERTs into a table of Conveyor's shape.
        "bulk_1000_same_table": {"raw_per_s": round(bulk_same_table),
                                 "conveyor_per_s": round(bulk_ours),
                                 "ratio": round(bulk_ours / bulk_same_table, 2)},
    }
    print(db, "publish", result["publish"], flush=True)
    return result


def table(results: dict[str, Any]) -> str:
    lines = [
        "| database | what | batch | workers | raw | conveyor | ratio | each round |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for db, data in results["databases"].items():
        for row in data["processing"]:
            lines.append(
                f"| {db} | jobs/s | {row['batch']} | {row['workers']} | "
                f"{row['raw_jobs_per_s']:,} | {row['conveyor_jobs_per_s']:,} | {row['ratio']} | "
                f"{', '.join(str(r) for r in row['ratios_of_each_round'])} |"
            )
        for name, row in data["publish"].items():
            lines.append(
                f"| {db} | publish {name} rows/s | | | {row['raw_per_s']:,} | "
                f"{row['conveyor_per_s']:,} | {row['ratio']} | |"
            )
        if data.get("memory"):
            mib = [round(value / 2**20, 1) for value in data["memory"]]
            lines.append(f"| {db} | worker RSS MiB over the run | | | | {mib} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", choices=sorted(URLS))
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--publish-jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of each processing figure, alternating raw and Conveyor; "
                        "the medians are reported")
    parser.add_argument("--memory-jobs", type=int, default=0,
                        help="also profile worker memory over this many jobs (e.g. 100000)")
    parser.add_argument("--broker", action="store_true",
                        help="then the RabbitMQ benchmark (bench/broker.py, default sizes)")
    args = parser.parse_args()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    batches = args.batch or [1, 10]
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": {"jobs": args.jobs, "publish_jobs": args.publish_jobs, "repeat": args.repeat},
        "databases": {},
    }
    for db in args.db or list(URLS):
        url = URLS[db]
        if not reachable(url):
            continue
        results["databases"][db] = measure(
            db, url, args.jobs, args.publish_jobs, batches, args.repeat
        )
        if args.memory_jobs:
            results["databases"][db]["memory"] = conveyor_side.memory_profile(url, args.memory_jobs)
    Path("bench/results/latest.json").write_text(json.dumps(results, indent=2) + "\n")
    report = table(results)
    Path("bench/results/latest.md").write_text(report + "\n")
    print(report)
    if args.broker:
        import broker

        databases = [db for db in args.db or list(broker.URLS) if db in broker.URLS]
        if databases:
            broker.main([arg for db in databases for arg in ("--db", db)])


if __name__ == "__main__":
    main()
