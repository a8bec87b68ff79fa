"""Benchmark: claims at scale on PostgreSQL, 1,000,000 jobs against 5,000.

    python bench/scale.py                          # 5,000 then 1,000,000 rows
    python bench/scale.py --sizes 5000,100000 --jobs 5000
    python bench/scale.py --batch-size 1            # one job per claim: many more claims timed
    python bench/scale.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test  # that server

Each size is a fresh job table holding 50 % ready jobs, 40 % delayed ones (due in a day,
published before the ready ones, so they come first in id order) and 10 % finished ones,
on stock server settings: by default a throwaway cluster started from ``initdb`` with every
setting at its default (``jit`` and autovacuum on, ``shared_buffers`` 128 MB), so a test
server's configuration (this machine's runs with autovacuum off) does not decide the figures;
``--url`` measures an existing server instead, on whatever it runs with (both are printed).
The rows are copied server-side (INSERT ... SELECT generate_series) from one job of each kind
published through the library, so the table holds exactly what the library writes. Then
ANALYZE, and one worker at Conveyor's defaults claims and completes ``--jobs`` jobs (at most
80 % of the ready ones). Reported: the claim statement's p50/p99 (timed around its execution,
round trip included), the whole record-and-claim transaction's p50/p99, and jobs/s from the
worker's start to its end; then the ratios of the largest size to the smallest.
Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from conveyor import Conveyor
from conveyor.store.sql.schema import build_tables

sys.path.insert(0, str(Path(__file__).parent))
from stock_postgres import stock_cluster  # noqa: E402

PREFIX = "scale_"
SHARES = {"delayed": 0.4, "finished": 0.1, "ready": 0.5}  # inserted in this order


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def drop(url: str) -> None:
    engine = create_engine(url)
    build_tables(PREFIX).metadata.drop_all(engine, checkfirst=True)
    engine.dispose()


def fill(app: Conveyor, rows: int) -> dict[str, int]:
    """``rows`` jobs in the SHARES mix, copied from one job of each kind the library wrote."""
    delayed = app.publish("noop", delay=timedelta(days=1))
    finished = app.publish("noop")
    (claimed,) = app.claim("fill", limit=1)
    app.report(finished.id, "succeed", {"lease_token": claimed.lease_token})
    ready = app.publish("noop")
    store: Any = app.store
    jobs = store.tables.jobs
    columns = [c.name for c in jobs.columns if c.name != "id"]
    listed = ", ".join(columns)
    counts = {kind: int(rows * share) for kind, share in SHARES.items()}
    with store.engine.begin() as connection:
        for kind, source in (
            ("delayed", delayed),
            ("finished", finished),
            ("ready", ready),
        ):
            connection.execute(
                text(
                    f"INSERT INTO {jobs.name} ({listed}) SELECT {listed} FROM {jobs.name}, "
                    f"generate_series(1, :n) WHERE id = :id ORDER BY 1"
                ),
                {"n": counts[kind], "id": int(source.id)},
            )
        connection.execute(
            text(f"DELETE FROM {jobs.name} WHERE id IN (:a, :b, :c)"),
            {"a": int(delayed.id), "b": int(finished.id), "c": int(ready.id)},
        )
    return counts


class Timings:
    """Wraps the store's statement runner and the app's record-and-claim to time them."""

    def __init__(self, app: Conveyor) -> None:
        self.claims: list[float] = []
        self.transactions: list[float] = []
        store: Any = app.store
        claim_statements = store.claims
        direct = store.direct
        run_rows = direct.rows

        def rows(connection: Any, statement: Any, parameters: Any) -> Any:
            if statement not in claim_statements._cache.values():
                return run_rows(connection, statement, parameters)
            start = time.perf_counter()
            found = run_rows(connection, statement, parameters)
            self.claims.append((time.perf_counter() - start) * 1000)
            return found

        direct.rows = rows
        # The claim in one statement (plannedclaim.py), which a worker's claim is as a rule.
        planned = store.planned
        run_execute = direct.execute

        def execute(connection: Any, compiled: Any, parameters: Any) -> Any:
            if planned is None or compiled not in planned._built.values():
                return run_execute(connection, compiled, parameters)
            start = time.perf_counter()
            found = run_execute(connection, compiled, parameters)
            self.claims.append((time.perf_counter() - start) * 1000)
            return found

        direct.execute = execute
        record_and_claim = app.record_and_claim

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return record_and_claim(*args, **kwargs)
            finally:
                self.transactions.append((time.perf_counter() - start) * 1000)

        app.record_and_claim = timed  # type: ignore[method-assign]


def server_settings(url: str) -> dict[str, str]:
    engine = create_engine(url)
    names = (
        "server_version",
        "jit",
        "jit_above_cost",
        "autovacuum",
        "shared_buffers",
        "synchronous_commit",
    )
    with engine.connect() as connection:
        found = {name: str(connection.exec_driver_sql(f"SHOW {name}").scalar()) for name in names}
        available = connection.exec_driver_sql("SELECT pg_jit_available()").scalar()
        found["jit_available"] = str(available)
    engine.dispose()
    return found


def table_stats(app: Conveyor) -> dict[str, Any]:
    store: Any = app.store
    name = store.tables.jobs.name
    with store.engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count, "
                "pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE relname = :n"
            ),
            {"n": name},
        ).one()
    keys = ("live", "dead", "updates", "hot_updates", "autovacuums", "bytes")
    return dict(zip(keys, (int(v or 0) for v in row), strict=True))


def run(url: str, rows: int, jobs: int, batch_size: int | None) -> dict[str, Any]:
    drop(url)
    app = Conveyor(url, table_prefix=PREFIX)
    try:
        app.register("noop", lambda: None)
        start = time.perf_counter()
        counts = fill(app, rows)
        store: Any = app.store
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql(f"ANALYZE {store.tables.jobs.name}")
        filled = time.perf_counter() - start
        wanted = min(jobs, int(counts["ready"] * 0.8))
        timings = Timings(app)
        start = time.perf_counter()
        options = {} if batch_size is None else {"batch_size": batch_size}
        stats = app.process(limit=wanted, **options)
        elapsed = time.perf_counter() - start
        result = {
            "rows": rows,
            "mix": counts,
            "fill_seconds": round(filled, 1),
            "jobs": stats.jobs,
            "jobs_per_second": round(stats.jobs / elapsed, 1),
            "claim_ms": {
                "p50": round(statistics.median(timings.claims), 3),
                "p99": round(percentile(timings.claims, 0.99), 3),
                "max": round(max(timings.claims), 3),
                "count": len(timings.claims),
            },
            "record_and_claim_ms": {
                "p50": round(statistics.median(timings.transactions), 3),
                "p99": round(percentile(timings.transactions, 0.99), 3),
            },
        }
        result["table"] = table_stats(app)
        start = time.perf_counter()
        pruned = app.clear_finished()
        result["prune"] = {
            "jobs": pruned,
            "seconds": round(time.perf_counter() - start, 2),
        }
    finally:
        app.close()
        drop(url)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url",
        default=None,
        help="measure this server (default: a throwaway cluster on initdb's own settings)",
    )
    parser.add_argument("--sizes", default="5000,1000000")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the worker's claim batch (default: adaptive)"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    server = contextlib.nullcontext(args.url) if args.url else stock_cluster()
    with server as url:
        measure(args, url, sizes)


def measure(args: argparse.Namespace, url: str, sizes: list[int]) -> None:
    settings = server_settings(url)
    settings["stock_cluster"] = str(args.url is None)
    print("server:", ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    results = []
    for size in sizes:
        result = run(url, size, args.jobs, args.batch_size)
        results.append(result)
        claim = result["claim_ms"]
        print(
            f"{size:>9,} rows: {result['jobs']:,} jobs in {result['jobs_per_second']:,.0f} jobs/s, "
            f"{result['claim_ms']['count']:,} claims: p50 {claim['p50']:.3f} ms p99 {claim['p99']:.3f} ms "
            f"(record+claim p50 {result['record_and_claim_ms']['p50']:.3f} ms "
            f"p99 {result['record_and_claim_ms']['p99']:.3f} ms), filled in "
            f"{result['fill_seconds']} s; pruned {result['prune']['jobs']:,} finished jobs in "
            f"{result['prune']['seconds']} s; table {result['table']}",
            flush=True,
        )
    small, large = results[0], results[-1]
    ratios = {
        "rate": round(large["jobs_per_second"] / small["jobs_per_second"], 2),
        "claim_p50": round(large["claim_ms"]["p50"] / small["claim_ms"]["p50"], 2),
        "claim_p99": round(large["claim_ms"]["p99"] / small["claim_ms"]["p99"], 2),
    }
    print(
        f"{large['rows']:,} vs {small['rows']:,} rows: rate x{ratios['rate']}, "
        f"claim p50 x{ratios['claim_p50']}, claim p99 x{ratios['claim_p99']} "
        "(targets: rate >= 0.8, claim p99 <= 5 ms)"
    )
    name = "scale.json" if args.batch_size is None else f"scale-batch{args.batch_size}.json"
    output = Path(__file__).parent / "results" / name
    output.parent.mkdir(exist_ok=True)
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "server": settings,
        "batch_size": args.batch_size,
        "results": results,
        "ratios": ratios,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
