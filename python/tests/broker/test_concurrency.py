"""Several consumer processes on one broker queue (PostgreSQL, or SQLite when it is down):
every job runs exactly once, and a serial group never runs two jobs at once nor out of order.

Spec: BROKER-004, GROUP-001..003, LEASE-002.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from ..conftest import TEST_PREFIX, service_problem
from .conftest import AMQP_URL, delete_queues, require_amqp
from .processes import Environment, processes, terminated
from .test_faults import parent_app, wait_for

pytestmark = pytest.mark.slow

CONSUMERS = 3
GROUPS = 4
PER_GROUP = 15
LOOSE = 30


@pytest.fixture
def env(tmp_path: Path, broker_prefix: str) -> Environment:
    require_amqp()
    backend = "postgresql" if service_problem("postgresql") is None else "sqlite"
    return Environment.made(tmp_path, backend, f"{TEST_PREFIX}bcc_", broker_prefix, AMQP_URL)


@pytest.mark.parametrize(
    "options", [("--prefetch", "5"), ("--concurrency", "4")], ids=["prefetch-5", "concurrency-4"]
)
def test_consumer_processes_run_each_job_once_and_keep_groups_serial(
    env: Environment, options: tuple[str, ...]
) -> None:
    app = parent_app(env)
    group_of: dict[int, str] = {}
    try:
        consumers = [env.consumer(f"c{i}", *options) for i in range(CONSUMERS)]
        with processes(*consumers):
            # Each consumer registers once it runs, its signal handlers set: a SIGTERM that
            # came while one still started would kill it instead of stopping it.
            wait_for(lambda: len(app.workers()) >= CONSUMERS, 60, "every consumer", env)
            # Interleave the groups, so that every consumer gets messages of every group.
            for index in range(PER_GROUP):
                for group in range(GROUPS):
                    n = group * 1000 + index
                    group_of[n] = f"g{group}"
                    app.publish("work", {"n": n, "sleep": 0.004}, serial_group=f"g{group}")
            for n in range(LOOSE):
                app.publish("work", {"n": 90_000 + n, "sleep": 0.002})
            total = GROUPS * PER_GROUP + LOOSE
            wait_for(lambda: sum(env.counts("done").values()) >= total, 120, "all jobs", env)
            codes = terminated(*consumers)
        jobs = app.jobs(limit=10_000)
    finally:
        delete_queues([app])
        app.close()
    assert codes == [0] * CONSUMERS
    assert {job.state for job in jobs} == {"finished"}
    starts, dones = env.counts("start"), env.counts("done")
    assert len(dones) == total, "every job ran"
    assert max(dones.values()) == 1, "no job ran twice"
    assert max(starts.values()) == 1, "no job started twice"
    pids = {parts[2] for parts in env.lines()}
    assert len(pids) >= 2, "the work was shared between consumer processes"
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    began: dict[int, float] = {}
    for kind, n, _pid, moment in env.lines():
        if int(n) in group_of:
            if kind == "start":
                began[int(n)] = float(moment)
            else:
                intervals[group_of[int(n)]].append((began[int(n)], float(moment), int(n)))
    for group, runs in intervals.items():
        runs.sort()
        assert [n for _, _, n in runs] == sorted(n for _, _, n in runs), f"{group} in order"
        for (_, stopped, _), (started, _, _) in itertools.pairwise(runs):
            assert started >= stopped, f"two jobs of {group} overlapped"
