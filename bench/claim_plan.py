"""EXPLAIN ANALYZE of one claim on PostgreSQL at scale, the claim statement as the worker runs it.

    python bench/claim_plan.py                       # 1,000,000 rows, claims of 10 jobs
    python bench/claim_plan.py --rows 100000 --limit 100 --runs 50
    python bench/claim_plan.py --drain 300000 --limit 100 --plans   # after a long drain

A fresh job table is filled as ``bench/scale.py`` fills it (50 % ready, 40 % delayed, 10 %
finished, copied server-side from jobs the library wrote), then ANALYZEd. The claim statement
of a worker over every queue is prepared with the generic plan Conveyor's connections use
(``plan_cache_mode = force_generic_plan``, ``jit = off``), and run ``--runs`` times under
``EXPLAIN (ANALYZE, BUFFERS)``, each in a transaction rolled back (the rows stay claimable, so
every run reads the same rows). ``--drain N`` first has one worker claim and complete N jobs,
as a long drain leaves the table (dead rows and index entries until a vacuum). Reported: the median and spread of the execution time the
server reports, the plan of the last run, and the same for the statement without the
concurrency and rate-limit conditions (what a claim cost before them), and the claim in one
statement a worker runs on PostgreSQL (store/sql/plannedclaim.py: the read and the write of
the claimed rows; its runs are rolled back too). The tables are dropped
at the end. Writes bench/results/claim_plan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import literal_column

sys.path.insert(0, str(Path(__file__).parent))

from scale import fill  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from conveyor import Conveyor  # noqa: E402
from conveyor.store.base import ClaimQuery  # noqa: E402
from conveyor.store.sql.claim import ClaimStatements, Shape  # noqa: E402
from conveyor.store.sql.direct import Compiled  # noqa: E402
from conveyor.store.sql.schema import build_tables  # noqa: E402

PREFIX = "claimplan_"
URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def drop(url: str) -> None:
    engine = create_engine(url)
    build_tables(PREFIX).metadata.drop_all(engine, checkfirst=True)
    engine.dispose()


def positional(sql: str) -> tuple[str, list[str]]:
    """psycopg's ``%(name)s`` placeholders as PREPARE's ``$n``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), names


def explain(
    store: Any, statements: dict[str, Any], parameters: dict[str, Any], runs: int
) -> dict[str, Any]:
    """Each statement prepared once, then run in turn ``runs`` times: timed from the client,
    and under EXPLAIN ANALYZE; every run rolled back."""
    raw = store.engine.raw_connection()
    found: dict[str, Any] = {}
    try:
        cursor = raw.cursor()
        cursor.execute("SET jit = off")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        calls = {}
        for number, (name, statement) in enumerate(statements.items()):
            compiled = statement if isinstance(statement, Compiled) else None
            compiled = compiled or store.direct.compiled(statement)
            sql, names = positional(compiled.sql.replace("%%", "%"))
            cursor.execute(f"PREPARE claim{number} AS {sql}")
            # the moment, the limit, the worker's id, ids to skip: written into EXECUTE
            values = ", ".join(_literal(parameters[key]) for key in names)
            calls[name] = f"EXECUTE claim{number}({values})"
            found[name] = {"execution": [], "round_trip": [], "plan": ""}
        raw.commit()
        for _ in range(runs):
            for name, call in calls.items():
                start = time.perf_counter()
                cursor.execute(call)
                cursor.fetchall()
                found[name]["round_trip"].append((time.perf_counter() - start) * 1000)
                raw.rollback()
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {call}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
                raw.rollback()
                found[name]["plan"] = plan
                timed = re.search(r"Execution Time: ([\d.]+)", plan)
                found[name]["execution"].append(float(timed.group(1)) if timed else 0.0)
        cursor.execute("DEALLOCATE ALL")
        raw.commit()
    finally:
        raw.close()
    for figures in found.values():
        for key in ("execution", "round_trip"):
            values = figures.pop(key)
            figures[f"{key}_ms"] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
    return found


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return "'{" + ",".join(str(int(item)) for item in value) + "}'"
    return str(int(value))


def without_limits(store: Any) -> Any:
    """The claim statement with the concurrency and rate-limit conditions left out."""
    statements = ClaimStatements(store.tables, store.states, store.dialect)
    true = literal_column("true")
    statements._slot_free = lambda j: true  # type: ignore[method-assign]
    statements._rate_free = lambda j: true  # type: ignore[method-assign]
    return statements.statement(ClaimQuery())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=10, help="jobs per claim")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--plans", action="store_true", help="print the plans")
    parser.add_argument(
        "--no-analyze", action="store_true", help="leave the table without statistics (new)"
    )
    parser.add_argument(
        "--drain", type=int, default=0, help="jobs one worker runs before the claims are explained"
    )
    args = parser.parse_args()
    drop(args.url)
    app = Conveyor(args.url, table_prefix=PREFIX)
    results: dict[str, Any] = {"rows": args.rows, "limit": args.limit, "runs": args.runs}
    try:
        app.register("noop", lambda: None)
        start = time.perf_counter()
        fill(app, args.rows)
        store: Any = app.store
        if not args.no_analyze:
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql(f"ANALYZE {store.tables.jobs.name}")
        print(f"{args.rows:,} rows filled in {time.perf_counter() - start:.0f} s", flush=True)
        if args.drain:
            start = time.perf_counter()
            drained = app.process(limit=args.drain).jobs
            print(f"{drained:,} jobs drained in {time.perf_counter() - start:.0f} s", flush=True)
            results["drained"] = drained
        now_ms = int(time.time() * 1000)
        parameters = store.claims.parameters(ClaimQuery(), now_ms, args.limit)
        parameters.update(at=now_ms, worker_id="w", expires=now_ms + 30_000, skip=[])
        variants = {
            "claim": store.claims.statement(ClaimQuery()),
            "claim without the limit conditions": without_limits(store),
        }
        if store.planned is not None and app.lifecycle.claim_plan is not None:
            # what a worker runs: the read and the write of plain jobs in one statement
            variants["claim in one statement (read and write)"] = store.planned.statement(
                app.lifecycle.claim_plan, Shape.of(ClaimQuery())
            )
        for name, found in explain(store, variants, parameters, args.runs).items():
            results[name] = found
            execution, trip = found["execution_ms"], found["round_trip_ms"]
            print(
                f"{name}: execution median {execution['median']:.3f} ms "
                f"(min {execution['min']:.3f}, max {execution['max']:.3f}); round trip "
                f"median {trip['median']:.3f} ms (min {trip['min']:.3f}, max {trip['max']:.3f})",
                flush=True,
            )
            if args.plans:
                print(found["plan"], flush=True)
    finally:
        app.close()
        drop(args.url)
    output = Path(__file__).parent / "results" / "claim_plan.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
