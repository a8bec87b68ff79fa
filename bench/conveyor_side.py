"""Conveyor's side of the benchmark: the same work through the library."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from conveyor import Conveyor
from conveyor.execution import resident_memory

PREFIX = "bench_"


def noop() -> None:
    """The no-op job every figure measures."""


def make_app(url: str, prefix: str = PREFIX) -> Conveyor:
    app = Conveyor(url, table_prefix=prefix)
    app.register("noop", noop)
    return app


def reset(url: str, prefix: str = PREFIX) -> None:
    """Empty Conveyor's tables the way the raw baseline starts: from fresh storage.

    A DELETE would leave every old row's index entries behind until autovacuum runs, and
    the claim's index scan would step over them; the raw baseline recreates its table.
    """
    app = make_app(url, prefix)
    store: Any = app.store
    tables = [t for t in reversed(store.tables.metadata.sorted_tables) if t is not store.tables.schema]
    backend = store.engine.dialect.name
    with store.engine.begin() as connection:
        if backend == "postgresql":
            names = ", ".join(table.name for table in tables)
            connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")
        elif backend in ("mysql", "mariadb"):
            connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for table in tables:
                connection.exec_driver_sql(f"TRUNCATE TABLE {table.name}")
            connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in tables:
                connection.execute(table.delete())
    app.close()


def publish_single(url: str, count: int) -> float:
    app = make_app(url)
    started = time.perf_counter()
    for _ in range(count):
        app.publish("noop")
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def publish_bulk(url: str, count: int, chunk: int = 1000) -> float:
    app = make_app(url)
    started = time.perf_counter()
    with app.bulk(size=chunk):
        for _ in range(count):
            app.publish("noop")
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def _work(url: str, batch: int) -> tuple[int, float, float]:
    app = make_app(url)
    app.store  # noqa: B018 - connect and check the schema before the clock starts
    started = time.time()
    stats = app.worker(batch_size=batch, stop_when_empty=True, handle_signals=False).run()
    ended = time.time()
    app.close()
    return stats.jobs, started, ended


def process(url: str, jobs: int, batch: int, workers: int) -> float:
    from raw import quiesce, rate

    reset(url)
    publish_bulk(url, jobs)
    quiesce(url)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        results = pool.starmap(_work, [(url, batch)] * workers)
    return rate(results, jobs)


def memory_profile(url: str, jobs: int, samples: int = 10) -> list[int]:
    """Resident memory of one worker every ``jobs / samples`` jobs (flat means no leak)."""
    reset(url)
    publish_bulk(url, jobs)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_profile, (url, jobs, samples))


def _profile(url: str, jobs: int, samples: int) -> list[int]:
    app = make_app(url)
    every = max(jobs // samples, 1)
    readings: list[int] = []
    count = 0

    def on_job(job: Any) -> None:
        nonlocal count
        count += 1
        if count % every == 0:
            readings.append(resident_memory())

    app.worker(batch_size=10, stop_when_empty=True, handle_signals=False, on_job=on_job).run()
    app.close()
    return readings
