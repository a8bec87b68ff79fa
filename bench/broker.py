"""Broker benchmark: Conveyor's RabbitMQ path against raw pika, measured in the same run.

    python bench/broker.py                       # SQLite and PostgreSQL, default sizes
    python bench/broker.py --db sqlite --jobs 2000 --prefetch 10
    python bench/run.py --broker                 # the SQL benchmark, then this one

Throughput, for 1 and 2 consumer processes with the same prefetch and confirm mode on both
sides (persistent messages, publisher confirms, durable quorum queues, manual acks):

- raw pika: publish N messages (one confirm wait per message, and confirms in chunks of 1000),
  then consume them with basic_consume and an ack per message;
- raw pika + SQL: the same, plus what any queue with a database of record must do per job:
  insert the row before publishing, and mark it processing then finished (two commits) per
  message, in plain SQL (bench/raw.py's table and statements);
- Conveyor: app.publish (one commit and one confirmed message per job), app.bulk (chunks of
  1000 rows and confirms), then `conveyor consume` consumers draining the queue, one claim
  per message (`--batch-size 1`), and one claim per `prefetch` messages (`--batch-size`
  = prefetch).

Latency: publish-to-start p50/p99 at a steady moderate rate, through the broker (one consumer)
and through the database-polling worker (default idle delay of 1 s; PostgreSQL wakes it with
LISTEN/NOTIFY, SQLite does not).

Writes bench/results/broker.json and bench/results/broker.md. Figures move 10-30 % between
runs on a shared machine: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import raw

AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
URLS = {
    "sqlite": "sqlite:///bench/results/bench-broker.db",
    "postgresql": os.environ.get(
        "CONVEYOR_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
}
PREFIX = "bench_broker_"
QUORUM = {"x-queue-type": "quorum"}


def broker_up() -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception as error:
        print(f"skipping the broker benchmark: RabbitMQ at {AMQP_URL.split('@')[-1]}: {error}")
        return False
    return True


# -- raw pika ------------------------------------------------------------------------------


def _channel() -> tuple[Any, Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    return connection, connection.channel()


def raw_publish(queue: str, count: int, chunk: int, url: str | None = None) -> float:
    """Seconds to publish ``count`` persistent messages, waiting for confirms every ``chunk``
    messages (chunk 1: one wait per message). With ``url``, each message first inserts its row
    (one commit per message, or one multi-row INSERT per chunk)."""
    import pika

    connection, channel = _channel()
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    pending: set[int] = set()
    counter = [0]

    def confirmed(frame: Any) -> None:
        tag = frame.method.delivery_tag
        done = [t for t in pending if t <= tag] if frame.method.multiple else [tag]
        pending.difference_update(done)

    channel._impl.confirm_delivery(ack_nack_callback=confirmed, callback=lambda _: None)
    connection.process_data_events(time_limit=0.2)
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    body = b'{"specversion":"0.2","job_id":"1","queue":"default","priority":100}'
    database = raw.connect(url) if url else None
    cursor = database.cursor() if database is not None else None
    sqlite = url is not None and raw.backend_of(url) == "sqlite"
    mark = "?" if sqlite else "%s"
    started = time.perf_counter()
    for offset in range(0, count, chunk):
        rows = min(chunk, count - offset)
        if cursor is not None:
            if rows == 1:
                cursor.execute(
                    f"INSERT INTO {raw.TABLE} (state, priority, payload) VALUES "
                    f"('ready', 100, {mark})",
                    ("{}",),
                )
            else:
                if sqlite:
                    cursor.execute("BEGIN")
                values = ",".join(["('ready', 100, '{}')"] * rows)
                cursor.execute(
                    f"INSERT INTO {raw.TABLE} (state, priority, payload) VALUES {values}"
                )
                if sqlite:
                    cursor.execute("COMMIT")
        for _ in range(rows):
            counter[0] += 1
            pending.add(counter[0])
            channel._impl.basic_publish("", queue, body, properties, mandatory=True)
        while pending:
            connection.process_data_events(time_limit=0.001)
    elapsed = time.perf_counter() - started
    if database is not None:
        database.close()
    connection.close()
    return elapsed


def _raw_consume(queue: str, prefetch: int, url: str | None) -> tuple[int, float, float]:
    """Consume until the queue stays empty; with ``url`` each message claims one row and
    finishes it, as raw.py's loop does (two commits)."""
    connection, channel = _channel()
    channel.basic_qos(prefetch_count=prefetch)
    database = raw.connect(url) if url else None
    cursor = database.cursor() if database is not None else None
    backend = raw.backend_of(url) if url else ""
    done = [0]
    last = [time.time()]

    def handle(chan: Any, method: Any, _properties: Any, _body: bytes) -> None:
        if cursor is not None:
            _claim_and_finish(cursor, backend)
        chan.basic_ack(method.delivery_tag)
        done[0] += 1
        last[0] = time.time()

    channel.basic_consume(queue, handle, auto_ack=False)
    started = time.time()
    while True:
        connection.process_data_events(time_limit=0.2)
        if time.time() - last[0] > 1.0 and done[0] > 0:
            break
        if time.time() - started > 600:
            break
    connection.close()
    if database is not None:
        database.close()
    return done[0], started, last[0]


def _claim_and_finish(cursor: Any, backend: str) -> None:
    if backend == "postgresql":
        cursor.execute(
            f"UPDATE {raw.TABLE} SET state = 'processing' WHERE id IN (SELECT id FROM "
            f"{raw.TABLE} WHERE state = 'ready' ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP "
            "LOCKED) RETURNING id"
        )
        row = cursor.fetchone()
        if row:
            cursor.execute(f"UPDATE {raw.TABLE} SET state = 'finished' WHERE id = %s", (row[0],))
    else:
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(
            f"SELECT id FROM {raw.TABLE} WHERE state = 'ready' ORDER BY priority, id LIMIT 1"
        )
        row = cursor.fetchone()
        if row:
            cursor.execute(f"UPDATE {raw.TABLE} SET state = 'processing' WHERE id = ?", row)
        cursor.execute("COMMIT")
        if row:
            cursor.execute(f"UPDATE {raw.TABLE} SET state = 'finished' WHERE id = ?", row)


def raw_process(queue: str, consumers: int, prefetch: int, url: str | None) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(consumers) as pool:
        results = pool.starmap(_raw_consume, [(queue, prefetch, url)] * consumers)
    return raw.rate(results, sum(count for count, _, _ in results))


def delete_queue(name: str) -> None:
    connection, channel = _channel()
    channel.queue_delete(name)
    connection.close()


# -- Conveyor ------------------------------------------------------------------------------


def noop() -> None:
    """The job every throughput figure runs."""


def stamp(published: float) -> None:
    """The latency job: record when it started, against when it was published."""
    started = time.time()
    with open(os.environ["BENCH_LATENCY_FILE"], "a", encoding="ascii") as out:
        out.write(f"{published} {started}\n")


def make_app(url: str, prefix: str | None, prefetch: int = 1) -> Any:
    from conveyor import Conveyor
    from conveyor.broker import BrokerSettings

    app = Conveyor(
        url,
        table_prefix=PREFIX,
        broker_url=AMQP_URL if prefix else None,
        broker_settings=BrokerSettings(prefix=prefix, prefetch=prefetch) if prefix else None,
    )
    app.register("noop", noop)
    app.register("stamp", stamp)
    return app


def reset_store(url: str) -> None:
    import conveyor_side

    conveyor_side.reset(url, PREFIX)


def conveyor_publish(url: str, prefix: str, count: int, bulk: bool) -> float:
    app = make_app(url, prefix)
    app.store  # noqa: B018 - connect before the clock starts
    app.broker.broker.check()
    started = time.perf_counter()
    if bulk:
        with app.bulk(size=1000):
            for _ in range(count):
                app.publish("noop")
    else:
        for _ in range(count):
            app.publish("noop")
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def _conveyor_consume(url: str, prefix: str, prefetch: int, batch: int) -> tuple[int, float, float]:
    app = make_app(url, prefix, prefetch)
    app.store  # noqa: B018
    last = [time.time()]

    def on_job(_job: Any) -> None:
        last[0] = time.time()

    started = time.time()
    stats = app.worker(
        stop_when_empty=True, handle_signals=False, on_job=on_job, batch_size=batch
    ).run()
    app.close()
    return stats.jobs, started, last[0]


def conveyor_process(url: str, prefix: str, consumers: int, prefetch: int, batch: int) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(consumers) as pool:
        results = pool.starmap(_conveyor_consume, [(url, prefix, prefetch, batch)] * consumers)
    return raw.rate(results, sum(count for count, _, _ in results))


def delete_conveyor_queues(url: str, prefix: str) -> None:
    app = make_app(url, prefix)
    mode = app.broker
    names = {
        mode.topology.queue_name("default", 100),
        mode.topology.control_name("default"),
    }
    mode.broker.delete_queues(sorted(names | mode.broker.declared))
    app.close()


# -- latency -------------------------------------------------------------------------------


def _latency_worker(url: str, prefix: str | None, seconds: float, path: str) -> None:
    os.environ["BENCH_LATENCY_FILE"] = path
    app = make_app(url, prefix)
    app.store  # noqa: B018
    worker = app.worker(handle_signals=False, idle_delay=1.0)
    deadline = time.time() + seconds

    def stop_later() -> None:
        time.sleep(max(deadline - time.time(), 0))
        worker.stop("benchmark over")

    import threading

    threading.Thread(target=stop_later, daemon=True).start()
    worker.run()
    app.close()


def latency(url: str, prefix: str | None, rate: float, seconds: float) -> dict[str, float]:
    """Publish ``rate`` jobs per second for ``seconds``; p50/p99 of start - publish, in ms."""
    reset_store(url)
    path = Path(tempfile.mkdtemp()) / "latency.txt"
    path.touch()
    context = multiprocessing.get_context("spawn")
    worker = context.Process(
        target=_latency_worker, args=(url, prefix, seconds + 4, str(path)), daemon=True
    )
    worker.start()
    app = make_app(url, prefix)
    app.store  # noqa: B018
    time.sleep(2.5)  # the worker connects and subscribes
    interval = 1 / rate
    next_at = time.time()
    for _ in range(int(rate * seconds)):
        next_at += interval
        app.publish("stamp", {"published": time.time()})
        time.sleep(max(next_at - time.time(), 0))
    worker.join(timeout=seconds + 30)
    app.close()
    samples = sorted(
        (float(start) - float(published)) * 1000
        for published, start in (line.split() for line in path.read_text().splitlines())
    )
    if not samples:
        return {"jobs": 0}
    return {
        "jobs": len(samples),
        "p50_ms": round(statistics.median(samples), 1),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1),
        "max_ms": round(samples[-1], 1),
    }


# -- report --------------------------------------------------------------------------------


def measure(db: str, url: str, jobs: int, prefetch: int, rate: float, seconds: float) -> Any:
    out: dict[str, Any] = {"throughput": [], "publish": {}, "latency": {}}
    queue = f"bench.raw.{uuid.uuid4().hex[:6]}"
    prefix = f"bench.{uuid.uuid4().hex[:6]}."
    try:
        raw.reset(url)
        out["publish"]["single"] = {
            "raw_pika_per_s": round(jobs / raw_publish(queue, jobs, 1)),
            "raw_pika_sql_per_s": round(jobs / raw_publish(queue, jobs, 1, url)),
        }
        out["publish"]["bulk_1000"] = {
            "raw_pika_per_s": round(jobs / raw_publish(queue, jobs, 1000)),
            "raw_pika_sql_per_s": round(jobs / raw_publish(queue, jobs, 1000, url)),
        }
        delete_queue(queue)
        reset_store(url)
        out["publish"]["single"]["conveyor_per_s"] = round(
            jobs / conveyor_publish(url, prefix, jobs, bulk=False)
        )
        reset_store(url)
        out["publish"]["bulk_1000"]["conveyor_per_s"] = round(
            jobs / conveyor_publish(url, prefix, jobs, bulk=True)
        )
        delete_conveyor_queues(url, prefix)
        for row in out["publish"].values():
            row["ratio_raw_pika"] = round(row["conveyor_per_s"] / row["raw_pika_per_s"], 2)
            row["ratio_raw_pika_sql"] = round(row["conveyor_per_s"] / row["raw_pika_sql_per_s"], 2)
        print(db, "publish", out["publish"], flush=True)
        for consumers in (1, 2):
            raw_publish(queue, jobs, 1000)
            pika_only = raw_process(queue, consumers, prefetch, None)
            raw.reset(url)
            raw_publish(queue, jobs, 1000, url)
            pika_sql = raw_process(queue, consumers, prefetch, url)
            reset_store(url)
            conveyor_publish(url, prefix, jobs, bulk=True)
            ours = conveyor_process(url, prefix, consumers, prefetch, 1)
            reset_store(url)
            conveyor_publish(url, prefix, jobs, bulk=True)
            batched = conveyor_process(url, prefix, consumers, prefetch, prefetch)
            row = {
                "consumers": consumers,
                "prefetch": prefetch,
                "raw_pika_jobs_per_s": round(pika_only),
                "raw_pika_sql_jobs_per_s": round(pika_sql),
                "conveyor_jobs_per_s": round(ours),
                "conveyor_batch_jobs_per_s": round(batched),
                "ratio_raw_pika": round(ours / pika_only, 2),
                "ratio_raw_pika_sql": round(ours / pika_sql, 2),
            }
            print(db, "process", row, flush=True)
            out["throughput"].append(row)
        delete_queue(queue)
        delete_conveyor_queues(url, prefix)
        out["latency"]["broker"] = latency(url, prefix, rate, seconds)
        delete_conveyor_queues(url, prefix)
        out["latency"]["polling"] = latency(url, None, rate, seconds)
        out["latency"]["rate_per_s"] = rate
        print(db, "latency", out["latency"], flush=True)
    finally:
        with contextlib.suppress(Exception):
            delete_queue(queue)
        with contextlib.suppress(Exception):
            delete_conveyor_queues(url, prefix)
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| database | what | consumers | raw pika | raw pika + SQL | conveyor | vs pika "
        "| vs pika + SQL | conveyor, batch = prefetch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for db, data in results["databases"].items():
        for row in data["throughput"]:
            lines.append(
                f"| {db} | jobs/s (prefetch {row['prefetch']}) | {row['consumers']} | "
                f"{row['raw_pika_jobs_per_s']:,} | {row['raw_pika_sql_jobs_per_s']:,} | "
                f"{row['conveyor_jobs_per_s']:,} | {row['ratio_raw_pika']} | "
                f"{row['ratio_raw_pika_sql']} | {row['conveyor_batch_jobs_per_s']:,} |"
            )
        for name, row in data["publish"].items():
            lines.append(
                f"| {db} | publish {name} /s | | {row['raw_pika_per_s']:,} | "
                f"{row['raw_pika_sql_per_s']:,} | {row['conveyor_per_s']:,} | "
                f"{row['ratio_raw_pika']} | {row['ratio_raw_pika_sql']} | |"
            )
    lines += [
        "",
        "| database | publish-to-start at | path | jobs | p50 ms | p99 ms | max ms |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for db, data in results["databases"].items():
        latency_data = data["latency"]
        for path in ("broker", "polling"):
            row = latency_data.get(path, {})
            lines.append(
                f"| {db} | {latency_data.get('rate_per_s')}/s | {path} | {row.get('jobs', 0)} | "
                f"{row.get('p50_ms', '-')} | {row.get('p99_ms', '-')} | {row.get('max_ms', '-')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", choices=sorted(URLS))
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="latency: jobs per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: how long")
    args = parser.parse_args(argv)
    if not broker_up():
        return
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": vars(args),
        "databases": {},
    }
    for db in args.db or list(URLS):
        url = URLS[db]
        try:
            raw.connect(url).close()
        except Exception as error:
            print(f"skipping {db}: {error}")
            continue
        results["databases"][db] = measure(
            db, url, args.jobs, args.prefetch, args.rate, args.seconds
        )
    Path("bench/results/broker.json").write_text(json.dumps(results, indent=2) + "\n")
    report = table(results)
    Path("bench/results/broker.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
