"""Several worker processes on one store: every job runs once, groups never overlap,
unique work runs once under concurrent publishers (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, create_engine, select

from conveyor import Conveyor

from .conftest import TEST_PREFIX, backend_url, require_service, wipe

RECORDER = """
    import asyncio
    import glob
    import os
    import sys
    import time

    from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, create_engine

    from conveyor import Conveyor

    url, prefix, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    metadata = MetaData()
    runs = Table(
        prefix + "runs", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("label", String(50)), Column("pid", Integer),
        Column("started", BigInteger), Column("stopped", BigInteger),
    )
    engine = create_engine(url)


    def work(label: str) -> None:
        started = time.time_ns()
        time.sleep(0.003)  # widen the window in which an overlap would show
        record(label, started)


    async def awork(label: str) -> None:  # the same, as an async handler
        started = time.time_ns()
        await asyncio.sleep(0.003)
        await asyncio.to_thread(record, label, started)


    def record(label: str, started: int) -> None:
        with engine.begin() as connection:
            connection.execute(runs.insert().values(
                label=label, pid=os.getpid(), started=started, stopped=time.time_ns()))


    app = Conveyor(url, table_prefix=prefix)
    app.register("work", work)
    app.register("awork", awork)

    if __name__ == "__main__":
        # Start together: each process says it is ready, then waits (bounded) for the others,
        # so that they race for the jobs instead of the first one taking them all.
        ready = f"{sys.argv[4]}.{os.getpid()}"
        open(ready, "w").close()
        deadline = time.monotonic() + 30
        while len(glob.glob(sys.argv[4] + ".*")) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        app.worker(
            idle_delay=0.05,
            stop_when_empty=True,
            handle_signals=False,
            concurrency=concurrency,
            # One at a time at concurrency 1, so the processes race for every job; the
            # adaptive batch at 8.
            batch_size=1 if concurrency == 1 else None,
        ).run()
"""


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_three_worker_processes_keep_every_rule(
    backend: str, concurrency: int, tmp_path: Path
) -> None:
    """Each worker runs up to ``concurrency`` jobs at once, sync and async handlers mixed."""
    require_service(backend)
    url = backend_url(backend, tmp_path)
    prefix = f"{TEST_PREFIX}conc_"
    module = tmp_path / "recorder.py"
    module.write_text(textwrap.dedent(RECORDER))
    metadata = MetaData()
    runs = Table(
        prefix + "runs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("label", String(50)),
        Column("pid", Integer),
        Column("started", BigInteger),
        Column("stopped", BigInteger),
    )
    engine = create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    app = Conveyor(url, table_prefix=prefix)
    wipe(app)
    app.register("work", lambda label: None)
    app.register("awork", lambda label: None)

    with app.bulk(size=50):
        for n in range(30):
            app.publish("work" if n % 2 else "awork", {"label": f"plain-{n}"})
        for n in range(24):
            group, priority = f"g{n % 4}", 1 + (n * 7) % 3
            kind = "work" if n % 3 else "awork"
            app.publish(kind, {"label": f"{group}-{n}"}, serial_group=group, priority=priority)
    ordered: dict[str, list[str]] = defaultdict(list)
    for job in sorted(app.jobs(limit=1000), key=lambda j: (j.priority, j.sequence)):
        if job.serial_group:
            ordered[job.serial_group].append(job.requests[0].payload["label"])

    barrier = threading.Barrier(2)

    def publish_duplicates() -> None:
        barrier.wait()
        for n in range(15):
            kind = "work" if n % 2 else "awork"
            app.publish(kind, {"label": f"unique-{n % 3}"}, identifier=f"u{n % 3}", unique=True)

    publishers = [threading.Thread(target=publish_duplicates) for _ in range(2)]
    for thread in publishers:
        thread.start()
    # Workers stop when nothing is due; run rounds until everything ended (a round can end
    # early while duplicates are still being published).
    for round_number in range(5):
        ready = tmp_path / f"ready-{round_number}"
        workers = [
            subprocess.Popen(
                [sys.executable, str(module), url, prefix, str(concurrency), str(ready)]
            )
            for _ in "abc"
        ]
        try:
            codes = [worker.wait(timeout=120) for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        assert codes == [0, 0, 0]
        for thread in publishers:
            thread.join()
        if all(job.state in {"finished", "redundant"} for job in app.jobs(limit=1000)):
            break
    else:
        pytest.fail("jobs left unfinished after 5 rounds of workers")

    with engine.connect() as connection:
        rows = connection.execute(select(runs).order_by(runs.c.started)).all()
    engine.dispose()
    labels = [row.label for row in rows]
    jobs = app.jobs(limit=1000)
    assert len(jobs) == 30 + 24 + 30
    assert sorted(label for label in labels if not label.startswith("unique")) == sorted(
        [f"plain-{n}" for n in range(30)] + [f"g{n % 4}-{n}" for n in range(24)]
    ), "every job ran exactly once"
    assert sorted(label for label in labels if label.startswith("unique")) == [
        "unique-0",
        "unique-1",
        "unique-2",
    ], "unique work ran once per identifier"
    assert sum(1 for job in jobs if job.state == "redundant") == 27
    for group, order in ordered.items():
        intervals = [row for row in rows if row.label.startswith(f"{group}-")]
        assert [row.label for row in intervals] == order, f"{group} ran out of order"
        for earlier, later in itertools.pairwise(intervals):
            assert earlier.stopped <= later.started, f"{group} ran two jobs at once"
    if concurrency == 1:  # with 8 slots, one process may well claim every job first
        assert len({row.pid for row in rows}) >= 2, "the work was shared between processes"
    app.close()
