"""The fault scenarios. Each builds a world, publishes jobs, injects its fault while workers
run, waits for every job to end, stops the workers and returns the tally.

Sizes are small on purpose (the suite runs on a 2-core machine): each scenario is about the
fault, repeated enough times to meet jobs in flight, not about throughput.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.broker import BrokerSettings
from tests.broker.node import RabbitNode

from harness import (
    Skip,
    World,
    ensure_mariadb_user,
    kill_mariadb_connections,
    terminate_postgres_sessions,
    world,
)
from ledger import Tally, group_order_breaks, overlaps_in_group


@dataclass
class Context:
    directory: Path
    node: Callable[[], RabbitNode]  # the suite's private RabbitMQ node, started on first use
    seed: int = 0
    short: bool = False


@dataclass
class Outcome:
    tally: Tally
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scenario-specific failures

    @property
    def failed(self) -> bool:
        return self.tally.failed or bool(self.problems)


Body = Callable[[Context], Outcome]


@dataclass(frozen=True)
class Scenario:
    name: str
    body: Body
    short: bool = False  # part of `just faults --short` (and so of `just test`)
    needs: tuple[str, ...] = ()  # services: postgresql, mariadb, rabbitmq


SCENARIOS: list[Scenario] = []
STALE_AFTER = BrokerSettings().stale_after.total_seconds()


def scenario(
    name: str, *, short: bool = False, needs: tuple[str, ...] = ()
) -> Callable[[Body], Body]:
    def register(body: Body) -> Body:
        SCENARIOS.append(Scenario(name, body, short, needs))
        return body

    return register


def open_world(ctx: Context, name: str, backend: str, broker: bool = False, **options: Any) -> Any:
    if backend == "mariadb":
        ensure_mariadb_user()
    amqp = ctx.node().amqp_url if broker else None
    return world(
        name=name,
        backend=backend,
        directory=ctx.directory / name,
        amqp_url=amqp,
        **options,
    )


def finish(
    w: World, timeout: float = 60.0, notes: list[str] | None = None, *, broker_up: bool = False
) -> Outcome:
    """Wait for every job to end, stop the workers, count. In broker mode the wait covers the
    repair loop's ``stale_after`` (60 s): a job whose message was lost is handed over again
    by then, which the notes report as "republished"."""
    if w.amqp_url:
        timeout = max(timeout, (w.stale_after or STALE_AFTER) + 30)
    drained = w.drain(timeout)
    crashes = w.stop_workers()
    result = w.tally()
    result.crashes = crashes
    outcome = Outcome(result, notes or [])
    if w.amqp_url:
        r = w.repaired
        outcome.notes.append(
            f"repair loop: rescued {r['rescued']}, requeued {r['requeued']} broker_failed, "
            f"republished {r['republished']} without a message"
        )
    if not drained:
        outcome.problems.append(f"jobs still open after {timeout:g} s")
    if crashes:
        outcome.problems.append(f"worker crash:{w.crash_logs()}")
    if broker_up and w.repaired["republished"]:
        # RabbitMQ stayed up and confirmed every message: a job the repair loop had to hand
        # over again waited stale_after (60 s) with idle consumers.
        outcome.problems.append(
            f"{w.repaired['republished']} job(s) lost their wake-up message with RabbitMQ up "
            "and waited for the repair loop's stale_after"
        )
    return outcome


# -- SIGKILL loops ---------------------------------------------------------------------------


def kill_loop(w: World, workers: int, kills: int, every: float, rng: random.Random) -> int:
    """SIGKILL a random running worker every ``every`` seconds and start a new one."""
    done = 0
    for _ in range(kills):
        time.sleep(every)
        victims = w.running()
        if victims:
            w.kill(rng.choice(victims))
            done += 1
        while len(w.running()) < workers:
            w.start_worker("w")
    return done


def sigkill_loop(
    ctx: Context, name: str, backend: str, broker: bool, kills: int, jobs: int
) -> Outcome:
    rng = random.Random(ctx.seed)
    with open_world(ctx, name, backend, broker=broker) as w:
        w.publish(jobs, sleep=0.05)
        for _ in range(3):
            w.start_worker("w")
        count = kill_loop(w, 3, kills, 0.8, rng)
        return finish(w, notes=[f"{count} SIGKILLs"])


@scenario("sigkill-sqlite", short=True)
def sigkill_sqlite(ctx: Context) -> Outcome:
    return sigkill_loop(ctx, "sigkill-sqlite", "sqlite", False, kills=8, jobs=200)


@scenario("sigkill-postgresql", needs=("postgresql",))
def sigkill_postgresql(ctx: Context) -> Outcome:
    return sigkill_loop(ctx, "sigkill-postgresql", "postgresql", False, kills=15, jobs=400)


@scenario("sigkill-mariadb", needs=("mariadb",))
def sigkill_mariadb(ctx: Context) -> Outcome:
    return sigkill_loop(ctx, "sigkill-mariadb", "mariadb", False, kills=15, jobs=400)


@scenario("sigkill-broker", short=True, needs=("postgresql", "rabbitmq"))
def sigkill_broker(ctx: Context) -> Outcome:
    return sigkill_loop(ctx, "sigkill-broker", "postgresql", True, kills=8, jobs=200)


@scenario("sigkill-broker-sqlite", needs=("rabbitmq",))
def sigkill_broker_sqlite(ctx: Context) -> Outcome:
    return sigkill_loop(ctx, "sigkill-broker-sqlite", "sqlite", True, kills=10, jobs=300)


# -- a paused worker -------------------------------------------------------------------------


def paused_worker(ctx: Context, name: str, backend: str, broker: bool) -> Outcome:
    """SIGSTOP a worker mid-job for longer than the lease: another worker takes the job over;
    after SIGCONT the paused one's late result is refused by the fencing token."""
    with open_world(ctx, name, backend, broker=broker, lease=1.5) as w:
        first = w.start_worker("paused")
        w.publish(1, sleep=1.0)
        if not w.wait_until(lambda: w.started() >= 1, 30):
            return Outcome(w.tally(), problems=["the job never started"])
        first.process.send_signal(signal.SIGSTOP)
        w.start_worker("second")
        taken = w.wait_until(lambda: w.started() >= 2, 30)
        w.wait_until(lambda: bool(w.finished()), 30)
        first.process.send_signal(signal.SIGCONT)
        time.sleep(0.1)
        # The paused worker ends its run and tries to record it: refused (StaleLease).
        refused = w.wait_until(lambda: "stale_lease" in first.log.read_text(errors="replace"), 15)
        w.publish(20, start=1)
        outcome = finish(w)
        attempts = [job.attempts for job in w.app.jobs(limit=10) if job.attempts > 1]
        outcome.notes.append(
            f"taken over: {taken}; late result refused: {refused}; attempts {attempts}"
        )
        if not taken:
            outcome.problems.append("no worker took over the paused worker's job")
        if not refused:
            outcome.problems.append("the paused worker's late result was not refused")
        return outcome


@scenario("sigstop-postgresql", short=True, needs=("postgresql",))
def sigstop_postgresql(ctx: Context) -> Outcome:
    return paused_worker(ctx, "sigstop-postgresql", "postgresql", False)


@scenario("sigstop-mariadb", needs=("mariadb",))
def sigstop_mariadb(ctx: Context) -> Outcome:
    return paused_worker(ctx, "sigstop-mariadb", "mariadb", False)


@scenario("sigstop-sqlite")
def sigstop_sqlite(ctx: Context) -> Outcome:
    return paused_worker(ctx, "sigstop-sqlite", "sqlite", False)


@scenario("sigstop-broker", needs=("postgresql", "rabbitmq"))
def sigstop_broker(ctx: Context) -> Outcome:
    return paused_worker(ctx, "sigstop-broker", "postgresql", True)


# -- database sessions terminated --------------------------------------------------------------


def session_rounds(
    ctx: Context,
    name: str,
    backend: str,
    broker: bool,
    rounds: int,
    cut: Callable[[], int],
) -> Outcome:
    with open_world(ctx, name, backend, broker=broker) as w:
        w.publish(300, sleep=0.05)  # about 5 s of work for three workers: the rounds meet it
        workers = [w.start_worker("w") for _ in range(3)]
        # The rounds hit running workers: a worker whose session ends while it starts exits
        # (see "Open findings" in docs/operations/reliability.md).
        for worker in workers:
            w.wait_until(worker.ready_or_gone, 30)
        ended = 0
        for _ in range(rounds):
            time.sleep(0.7)
            ended += cut()
        return finish(w, notes=[f"{rounds} rounds, {ended} sessions ended"])


@scenario("pg-terminate-backend", short=True, needs=("postgresql",))
def pg_terminate(ctx: Context) -> Outcome:
    return session_rounds(
        ctx, "pg-terminate-backend", "postgresql", False, 8, terminate_postgres_sessions
    )


@scenario("pg-terminate-backend-broker", needs=("postgresql", "rabbitmq"))
def pg_terminate_broker(ctx: Context) -> Outcome:
    return session_rounds(
        ctx,
        "pg-terminate-backend-broker",
        "postgresql",
        True,
        8,
        terminate_postgres_sessions,
    )


@scenario("mariadb-kill-connection", needs=("mariadb",))
def mariadb_kill(ctx: Context) -> Outcome:
    return session_rounds(
        ctx, "mariadb-kill-connection", "mariadb", False, 8, kill_mariadb_connections
    )


@scenario("mariadb-kill-connection-idle", needs=("mariadb",))
def mariadb_kill_idle(ctx: Context) -> Outcome:
    """Connections killed while the workers idle, then jobs arrive: they reconnect."""
    with open_world(ctx, "mariadb-kill-connection-idle", "mariadb") as w:
        for _ in range(2):
            w.start_worker("w")
        w.publish(5)
        w.drain(30)
        ended = 0
        for round_number in range(4):
            ended += kill_mariadb_connections()
            w.publish(20, start=5 + 20 * round_number)
            w.drain(30)
        return finish(w, notes=[f"{ended} idle sessions ended"])


# -- the RabbitMQ node -----------------------------------------------------------------------


def node_outage(ctx: Context, name: str, fault: Callable[[RabbitNode], None]) -> Outcome:
    node = ctx.node()
    with open_world(ctx, name, "postgresql", broker=True) as w:
        for _ in range(2):
            w.start_worker("w")
        w.publish(100, sleep=0.01)
        w.wait_until(lambda: w.started() >= 30, 30)
        started = time.monotonic()
        fault(node)
        # Publishing goes on during and after the outage: those jobs are broker_failed until
        # the repair loop hands them over.
        w.publish(100, sleep=0.01, start=100)
        outcome = finish(w, timeout=90)
        outcome.notes.append(f"outage + restart {time.monotonic() - started:.1f} s")
        return outcome


@scenario("broker-idle-then-burst", needs=("rabbitmq",))
def broker_idle_then_burst(ctx: Context) -> Outcome:
    """No fault but idleness: two consumers idle for 3 s, then 30 jobs at once. Every job's
    message must wake a consumer; none may wait for the repair loop."""
    with open_world(ctx, "broker-idle-then-burst", "sqlite", broker=True) as w:
        for _ in range(2):
            w.start_worker("w")
        w.publish(5)
        w.drain(30)
        time.sleep(3)  # the fault under test is idleness itself
        w.publish(30, start=5)
        return finish(w, broker_up=True)


@scenario("rabbitmq-stop-app", short=True, needs=("postgresql", "rabbitmq"))
def rabbitmq_stop_app(ctx: Context) -> Outcome:
    def fault(node: RabbitNode) -> None:
        node.stop_app()
        time.sleep(3)
        node.start_app()

    return node_outage(ctx, "rabbitmq-stop-app", fault)


@scenario("rabbitmq-kill-9", needs=("postgresql", "rabbitmq"))
def rabbitmq_kill(ctx: Context) -> Outcome:
    def fault(node: RabbitNode) -> None:
        node.kill()
        time.sleep(1)
        node.start()

    return node_outage(ctx, "rabbitmq-kill-9", fault)


@scenario("rabbitmq-down-at-publish", needs=("postgresql", "rabbitmq"))
def rabbitmq_down_at_publish(ctx: Context) -> Outcome:
    """Everything is published while the node is stopped; nothing is lost once it is back."""
    node = ctx.node()
    with open_world(ctx, "rabbitmq-down-at-publish", "postgresql", broker=True) as w:
        w.start_worker("w")
        node.stop_app()
        try:
            started = time.monotonic()
            w.publish(50)
            took = time.monotonic() - started
        finally:
            node.start_app()
        outcome = finish(w, timeout=90)
        outcome.notes.append(f"50 publishes with the node down took {took:.1f} s")
        return outcome


@scenario("rabbitmq-restarts-repeated", needs=("rabbitmq",))
def rabbitmq_repeated(ctx: Context) -> Outcome:
    node = ctx.node()
    with open_world(ctx, "rabbitmq-restarts-repeated", "sqlite", broker=True) as w:
        for _ in range(2):
            w.start_worker("w")
        for round_number in range(3):
            w.publish(40, sleep=0.01, start=40 * round_number)
            time.sleep(0.5)
            node.stop_app()
            time.sleep(1)
            node.start_app()
        return finish(w, timeout=90, notes=["3 stop_app/start_app rounds"])


# -- the proxy: cuts, partitions, slow links ---------------------------------------------------


def proxied(
    ctx: Context,
    name: str,
    backend: str,
    broker: bool,
    target: str,
    fault: Callable[[World], str],
    jobs: int = 250,
) -> Outcome:
    """Two workers through the proxy, one direct: the proxy's faults hit the first two."""
    with open_world(ctx, name, backend, broker=broker, proxy_target=target) as w:
        w.publish(jobs, sleep=0.05)  # about 4 s of work: the fault meets jobs in flight
        for _ in range(2):
            w.start_worker("proxied")
        direct = w.proxy_target
        w.proxy_target = None
        w.start_worker("direct")
        w.proxy_target = direct
        w.wait_until(lambda: w.started() >= 10, 30)
        note = fault(w)
        assert w.proxy is not None
        w.proxy.set("pass")
        return finish(w, timeout=90, notes=[note])


def cuts(w: World) -> str:
    assert w.proxy is not None
    for _ in range(5):
        time.sleep(0.6)
        w.proxy.set("cut")
        time.sleep(0.3)
        w.proxy.set("pass")
    return "5 cuts (RST) of 0.3 s"


def blackhole(w: World) -> str:
    assert w.proxy is not None
    w.proxy.set("blackhole")
    time.sleep(w.lease * 2)  # longer than the lease: the direct worker takes the jobs over
    return f"partition (blackhole) of {w.lease * 2:g} s"


def slow_link(w: World) -> str:
    assert w.proxy is not None
    w.proxy.set("delay", 0.05)
    time.sleep(4)
    return "4 s at +50 ms per chunk"


@scenario("proxy-postgresql-cut", needs=("postgresql",))
def proxy_pg_cut(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-postgresql-cut", "postgresql", False, "store", cuts)


@scenario("proxy-postgresql-partition", short=True, needs=("postgresql",))
def proxy_pg_partition(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-postgresql-partition", "postgresql", False, "store", blackhole)


@scenario("proxy-postgresql-slow", needs=("postgresql",))
def proxy_pg_slow(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-postgresql-slow", "postgresql", False, "store", slow_link)


@scenario("proxy-mariadb-cut", needs=("mariadb",))
def proxy_maria_cut(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-mariadb-cut", "mariadb", False, "store", cuts)


@scenario("proxy-mariadb-partition", needs=("mariadb",))
def proxy_maria_partition(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-mariadb-partition", "mariadb", False, "store", blackhole)


@scenario("proxy-broker-cut", needs=("postgresql", "rabbitmq"))
def proxy_broker_cut(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-broker-cut", "postgresql", True, "broker", cuts)


@scenario("proxy-broker-partition", needs=("postgresql", "rabbitmq"))
def proxy_broker_partition(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-broker-partition", "postgresql", True, "broker", blackhole)


@scenario("proxy-broker-slow", needs=("postgresql", "rabbitmq"))
def proxy_broker_slow(ctx: Context) -> Outcome:
    return proxied(ctx, "proxy-broker-slow", "postgresql", True, "broker", slow_link)


# -- clocks ----------------------------------------------------------------------------------


def shifted(ctx: Context, name: str, steps: list[float]) -> Outcome:
    """One of three workers runs on a clock the suite steps (the library takes any Clock);
    steps stay within a third of the lease, the skew the lease is documented to absorb."""
    with open_world(ctx, name, "postgresql") as w:
        clock = w.directory / "clock.offset"
        clock.write_text("0")
        w.publish(200, sleep=0.03)
        w.start_worker("shifted", clock_file=clock)
        for _ in range(2):
            w.start_worker("w")
        for step in steps:
            time.sleep(0.8)
            clock.write_text(str(step))
        return finish(w, notes=[f"clock offsets {steps} s, lease {w.lease:g} s"])


@scenario("clock-jumps", needs=("postgresql",))
def clock_jumps(ctx: Context) -> Outcome:
    return shifted(ctx, "clock-jumps", [0.6, -0.6, 0.3, -0.3, 0.0])


@scenario("clock-skew-ahead", needs=("postgresql",))
def clock_ahead(ctx: Context) -> Outcome:
    return shifted(ctx, "clock-skew-ahead", [0.6, 0.6, 0.6])


# -- serial groups and unique jobs under faults -------------------------------------------------


def serial_under_kills(ctx: Context, name: str, backend: str, broker: bool) -> Outcome:
    rng = random.Random(ctx.seed)
    with open_world(ctx, name, backend, broker=broker) as w:
        groups = {f"g{g}": list(range(g * 40, g * 40 + 40)) for g in range(3)}
        for group, members in groups.items():
            for n in members:
                w.publish(1, sleep=0.02, start=n, serial_group=group)
        for _ in range(3):
            w.start_worker("w")
        kills = kill_loop(w, 3, 5, 0.8, rng)
        outcome = finish(w, timeout=90, notes=[f"3 groups of 40, {kills} SIGKILLs"])
        for group, members in groups.items():
            overlaps = overlaps_in_group(w.runs, members)
            breaks = group_order_breaks(w.runs, members)
            if overlaps or breaks:
                outcome.problems.append(
                    f"group {group}: {overlaps} overlaps, {breaks} out of order"
                )
        return outcome


@scenario("serial-groups-sigkill", short=True, needs=("postgresql",))
def serial_pg(ctx: Context) -> Outcome:
    return serial_under_kills(ctx, "serial-groups-sigkill", "postgresql", False)


@scenario("serial-groups-sigkill-broker", needs=("postgresql", "rabbitmq"))
def serial_broker(ctx: Context) -> Outcome:
    return serial_under_kills(ctx, "serial-groups-sigkill-broker", "postgresql", True)


def unique_under_kills(ctx: Context, name: str, backend: str, broker: bool) -> Outcome:
    rng = random.Random(ctx.seed)
    with open_world(ctx, name, backend, broker=broker) as w:
        for _ in range(3):
            w.start_worker("w")
        for copy in range(3):  # each identifier published three times, while workers run
            for n in range(60):
                w.publish(1, sleep=0.03, start=n, identifier=f"u{n}", unique=True)
            if copy < 2:
                kill_loop(w, 3, 2, 0.4, rng)
        return finish(w, timeout=90, notes=["60 identifiers x 3 publishes"])


@scenario("unique-sigkill", needs=("postgresql",))
def unique_pg(ctx: Context) -> Outcome:
    return unique_under_kills(ctx, "unique-sigkill", "postgresql", False)


@scenario("unique-sigkill-sqlite")
def unique_sqlite(ctx: Context) -> Outcome:
    return unique_under_kills(ctx, "unique-sigkill-sqlite", "sqlite", False)


@scenario("unique-sigkill-broker", needs=("postgresql", "rabbitmq"))
def unique_broker(ctx: Context) -> Outcome:
    return unique_under_kills(ctx, "unique-sigkill-broker", "postgresql", True)


# -- SQLite on a full disk ---------------------------------------------------------------------


@scenario("sqlite-full-disk")
def sqlite_full_disk(ctx: Context) -> Outcome:
    """The SQLite file on a small tmpfs of the suite's own, filled up while workers run, then
    freed: workers report the store unavailable, do not crash, and finish every job after."""
    import shutil
    import subprocess

    mount = ctx.directory / "sqlite-full-disk-tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        with open_world(ctx, "sqlite-full-disk", "sqlite", store_path=mount) as w:
            w.publish(100, sleep=0.01)
            for _ in range(2):
                w.start_worker("w")
            w.wait_until(lambda: w.started() >= 20, 30)
            filler = mount / "filler"
            with filler.open("wb") as output:
                try:
                    while True:
                        output.write(b"\0" * 65536)
                        output.flush()
                except OSError:
                    pass
            time.sleep(2)
            filler.unlink()
            w.publish(50, sleep=0.01, start=100)
            return finish(w, notes=["tmpfs of 4 MB full for 2 s"])
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, check=False)
        shutil.rmtree(mount, ignore_errors=True)
