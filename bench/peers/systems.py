"""One adapter per system: its storage, its publishing calls, its worker CLI, its clean-up.

Every name an adapter creates starts with the run's ``BENCH_NAME`` (tables, schemas, queues,
exchanges), and clean-up removes exactly those. Adapters publish through each system's own
client API; the worker side is the system's own CLI with the app modules of this folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from settings import AMQP_URL, NAME, PG_URL, TASK_NAME, queue

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CHUNK = 1000  # bulk publishes go in chunks of this many jobs


# -- services --------------------------------------------------------------------------------


def pg() -> Any:
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def pg_execute(*statements: str) -> None:
    with pg() as connection:
        for statement in statements:
            connection.execute(statement)


def pg_tables(like: str, schema: str | None = None) -> list[str]:
    """Qualified names of the tables whose name (or schema) matches, for ANALYZE and drops."""
    with pg() as connection:
        if schema:
            rows = connection.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        else:
            rows = connection.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE %s "
                "AND schemaname = current_schema()",
                (like.replace("_", r"\_") + "%",),
            ).fetchall()
    return [f'"{schema_name}"."{table}"' for schema_name, table in rows]


def amqp(attempts: int = 10) -> Any:
    """A connection to RabbitMQ, retried for a few seconds (other people's tests may restart
    its application)."""
    import pika
    import pika.exceptions

    for attempt in range(attempts):
        try:
            return pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        except pika.exceptions.AMQPConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def queue_depth(name: str) -> int:
    import pika.exceptions

    connection = amqp()
    try:
        return int(connection.channel().queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def wait_depth(name: str, count: int, timeout: float = 120.0) -> None:
    """Until RabbitMQ holds ``count`` messages in ``name`` (publishers that do not wait for
    confirms are timed to this point)."""
    deadline = time.monotonic() + timeout
    while queue_depth(name) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {name} did not reach {count} messages in {timeout} s")
        time.sleep(0.005)


def purge_queues(names: list[str]) -> None:
    import pika.exceptions

    for name in names:
        connection = amqp()
        try:
            connection.channel().queue_purge(name)
        except pika.exceptions.ChannelClosedByBroker:
            pass  # not declared yet
        finally:
            with contextlib.suppress(Exception):
                connection.close()


def rabbit_names(kind: str) -> list[str] | None:
    """Queues or exchanges of this run, as rabbitmqctl lists them (None without rabbitmqctl)."""
    if not shutil.which("rabbitmqctl"):
        return None
    listed = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [line.strip() for line in listed.stdout.splitlines() if line.startswith(NAME)]


def delete_rabbit(queues: list[str], exchanges: list[str]) -> None:
    """Delete this run's queues and exchanges (the known names, and any rabbitmqctl lists)."""
    queues = sorted(set(queues) | set(rabbit_names("queues") or []))
    exchanges = sorted(set(exchanges) | set(rabbit_names("exchanges") or []))
    for kind, names in (("queue", queues), ("exchange", exchanges)):
        for name in names:
            if not name.startswith(NAME):
                continue
            connection = amqp()
            try:
                channel = connection.channel()
                if kind == "queue":
                    channel.queue_delete(name)
                else:
                    channel.exchange_delete(name)
            except Exception:  # already gone
                pass
            finally:
                with contextlib.suppress(Exception):
                    connection.close()


def paced(send: Callable[[float | None], Any], count: int, rate: float, stamped: bool) -> int:
    """Call ``send`` ``count`` times at ``rate`` per second, on an absolute schedule."""
    interval = 1 / rate
    next_at = time.perf_counter()
    for _ in range(count):
        send(time.time() if stamped else None)
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return count


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# -- the adapters ------------------------------------------------------------------------------


class System:
    key = ""
    label = ""
    transport = ""  # postgresql or rabbitmq
    handler = ""  # how the job is written for this system
    defaults = ""  # what "defaults" means for this system's worker
    extra: tuple[str, ...] = ()  # worker CLI options of a labelled setting

    def env(self) -> dict[str, str]:
        return {}

    def setup(self) -> None: ...
    def reset(self) -> None: ...
    def analyze(self) -> None: ...
    def cleanup(self) -> None: ...

    def enqueue(self, count: int) -> None:
        """Put ``count`` jobs in the queue before any worker starts (the fastest way)."""
        raise NotImplementedError

    def publish_single(self, count: int) -> float:
        raise NotImplementedError

    def publish_bulk(self, count: int) -> float | None:
        return None  # no bulk API

    def publish_paced(self, count: int, rate: float, stamped: bool) -> int:
        raise NotImplementedError

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        raise NotImplementedError

    def setting(self) -> str:
        return " ".join(self.extra) if self.extra else "defaults"


class ConveyorSystem(System):
    def __init__(self, broker: bool, extra: tuple[str, ...] = ()) -> None:
        self.broker = broker
        self.extra = extra
        base = "conveyor-broker" if broker else "conveyor"
        self.key = f"{base}-best" if extra else base
        self.label = f"Conveyor{' broker mode' if broker else ''}, {self.setting()}"
        self.transport = "rabbitmq" if broker else "postgresql"
        self.handler = "def (thread) / async def (event loop)"
        self.defaults = (
            "`conveyor consume --quiet`: concurrency 1, adaptive batch (up to 100 ahead while a "
            "backlog waits)"
        ) + (
            ", prefetch sized from the concurrency, quorum queue" if broker else ", LISTEN/NOTIFY"
        )
        self._app: Any = None

    def env(self) -> dict[str, str]:
        return {"BENCH_CONVEYOR_BROKER": "1" if self.broker else "0"}

    @property
    def app(self) -> Any:
        if self._app is None:
            import app_conveyor

            self._app = app_conveyor.make_app(self.broker)
        return self._app

    def prefix(self) -> str:
        import app_conveyor

        return app_conveyor.prefix(self.broker)

    def job_queue(self) -> str:
        return str(self.app.broker.topology.queue_name("default", 100))

    def setup(self) -> None:
        self.app.store  # noqa: B018 - creates the tables
        if self.broker:
            self.app.broker.broker.check()

    def reset(self) -> None:
        names = ", ".join(pg_tables(self.prefix()))
        pg_execute(f"TRUNCATE {names} RESTART IDENTITY")
        if self.broker:
            purge_queues([self.job_queue()])

    def analyze(self) -> None:
        pg_execute(*(f"ANALYZE {table}" for table in pg_tables(self.prefix())))

    def enqueue(self, count: int) -> None:
        self.publish_bulk(count)

    def publish_single(self, count: int) -> float:
        publish = self.app.publish
        return timed(lambda: [publish(TASK_NAME) for _ in range(count)])

    def publish_bulk(self, count: int) -> float:
        def bulk() -> None:
            for offset in range(0, count, CHUNK):
                self.app.publish_many(TASK_NAME, [None] * min(CHUNK, count - offset))

        return timed(bulk)

    def publish_paced(self, count: int, rate: float, stamped: bool) -> int:
        def send(published: float | None) -> None:
            self.app.publish(TASK_NAME, {"published": published} if published else None)

        return paced(send, count, rate, stamped)

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        argv = [str(BIN / "conveyor"), "--app", "app_conveyor:from_env", "consume", "--quiet"]
        return [argv + list(extra)] * processes

    def cleanup(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
        tables = pg_tables(self.prefix())
        if tables:
            pg_execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")
        if self.broker:
            delete_rabbit([], [])


class PgqueuerSystem(System):
    key = "pgqueuer"
    label = "pgqueuer, defaults"
    transport = "postgresql"
    handler = "async def"
    defaults = "`pgq run`: batch size 10, no concurrency limit, asyncpg, LISTEN/NOTIFY"

    @staticmethod
    def prefix() -> str:
        return f"{NAME}_pgq_"

    def env(self) -> dict[str, str]:
        return {"PGQUEUER_PREFIX": self.prefix(), "PGDSN": PG_URL}

    def _cli(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "pgq"), *args],
            env={**os.environ, **self.env()},
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def setup(self) -> None:
        self._cli("install")

    def reset(self) -> None:
        pg_execute(f"TRUNCATE {', '.join(pg_tables(self.prefix()))} RESTART IDENTITY")

    def analyze(self) -> None:
        pg_execute(*(f"ANALYZE {table}" for table in pg_tables(self.prefix())))

    @contextlib.contextmanager
    def _queries(self) -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        os.environ.update(self.env())  # pgqueuer reads its table names from the environment
        loop = asyncio.new_event_loop()
        connection = loop.run_until_complete(asyncpg.connect(PG_URL))
        try:
            yield loop, Queries(AsyncpgDriver(connection))
        finally:
            loop.run_until_complete(connection.close())
            loop.close()

    def enqueue(self, count: int) -> None:
        self.publish_bulk(count)

    def publish_single(self, count: int) -> float:
        with self._queries() as (loop, queries):

            async def run() -> float:
                started = time.perf_counter()
                for _ in range(count):
                    await queries.enqueue(TASK_NAME, None)
                return time.perf_counter() - started

            return loop.run_until_complete(run())

    def publish_bulk(self, count: int) -> float:
        with self._queries() as (loop, queries):

            async def run() -> float:
                started = time.perf_counter()
                for offset in range(0, count, CHUNK):
                    size = min(CHUNK, count - offset)
                    await queries.enqueue([TASK_NAME] * size, [None] * size, [0] * size)
                return time.perf_counter() - started

            return loop.run_until_complete(run())

    def publish_paced(self, count: int, rate: float, stamped: bool) -> int:
        with self._queries() as (loop, queries):

            async def run() -> None:
                interval = 1 / rate
                next_at = time.perf_counter()
                for _ in range(count):
                    payload = repr(time.time()).encode() if stamped else None
                    await queries.enqueue(TASK_NAME, payload)
                    next_at += interval
                    await asyncio.sleep(max(next_at - time.perf_counter(), 0))

            loop.run_until_complete(run())
        return count

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        return [[str(BIN / "pgq"), "run", "app_pgqueuer:main", *extra]] * processes

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self._cli("uninstall")
        tables = pg_tables(self.prefix())
        if tables:
            pg_execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")


class ProcrastinateSystem(System):
    key = "procrastinate"
    label = "Procrastinate, defaults"
    transport = "postgresql"
    handler = "async def"
    defaults = "`procrastinate worker`: concurrency 1, LISTEN/NOTIFY, psycopg"

    @staticmethod
    def schema() -> str:
        return f"{NAME}_proc"

    @property
    def module(self) -> Any:
        import app_procrastinate

        return app_procrastinate

    def setup(self) -> None:
        pg_execute(f'CREATE SCHEMA "{self.schema()}"')
        subprocess.run(
            [str(BIN / "procrastinate"), "--app=app_procrastinate.app", "schema", "--apply"],
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(HERE)},
        )

    def reset(self) -> None:
        tables = pg_tables("", schema=self.schema())
        pg_execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")

    def analyze(self) -> None:
        pg_execute(*(f"ANALYZE {table}" for table in pg_tables("", schema=self.schema())))

    def enqueue(self, count: int) -> None:
        self.publish_bulk(count)

    def publish_single(self, count: int) -> float:
        with self.module.app.open():
            defer = self.module.job.defer
            return timed(lambda: [defer() for _ in range(count)])

    def publish_bulk(self, count: int) -> float:
        with self.module.app.open():
            job = self.module.job

            def bulk() -> None:
                for offset in range(0, count, CHUNK):
                    job.batch_defer(*[{}] * min(CHUNK, count - offset))

            return timed(bulk)

    def publish_paced(self, count: int, rate: float, stamped: bool) -> int:
        with self.module.app.open():
            job = self.module.job
            return paced(lambda t: job.defer(published=t), count, rate, stamped)

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        argv = [
            str(BIN / "procrastinate"),
            "--app=app_procrastinate.app",
            "worker",
            "-q",
            queue("procrastinate"),
        ]
        return [argv + list(extra)] * processes

    def cleanup(self) -> None:
        pg_execute(f'DROP SCHEMA IF EXISTS "{self.schema()}" CASCADE')


class RabbitPeer(System):
    transport = "rabbitmq"
    handler = "def (thread)"

    def _send(self, published: float | None) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        purge_queues(self.queues())

    def queues(self) -> list[str]:
        return [queue(self.key)]

    def enqueue(self, count: int) -> None:
        self.publish_single(count)

    def publish_single(self, count: int) -> float:
        # Neither peer waits for publisher confirms by default: the clock stops when RabbitMQ
        # holds every message.
        send = self._send

        def publish() -> None:
            for _ in range(count):
                send(None)
            wait_depth(queue(self.key), count)

        return timed(publish)

    def publish_paced(self, count: int, rate: float, stamped: bool) -> int:
        return paced(self._send, count, rate, stamped)

    def cleanup(self) -> None:
        delete_rabbit(self.queues(), [queue(self.key)])


class DramatiqSystem(RabbitPeer):
    key = "dramatiq"
    label = "Dramatiq, defaults"
    defaults = "`dramatiq --processes N`: 8 threads per process, prefetch 16, classic queue"

    def queues(self) -> list[str]:
        name = queue(self.key)
        return [name, f"{name}.DQ", f"{name}.XQ"]

    def setup(self) -> None:
        import app_dramatiq

        self.actor = app_dramatiq.job
        app_dramatiq.broker.declare_queue(app_dramatiq.QUEUE)

    def _send(self, published: float | None) -> None:
        self.actor.send(published)

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        # One CLI supervising N worker processes (its default N is the number of CPUs).
        return [[str(BIN / "dramatiq"), "app_dramatiq", "--processes", str(processes), *extra]]

    def cleanup(self) -> None:
        import app_dramatiq

        with contextlib.suppress(Exception):
            app_dramatiq.broker.close()
        super().cleanup()


class CelerySystem(RabbitPeer):
    key = "celery"
    label = "Celery, defaults"
    defaults = (
        "`celery worker -c N`: prefork pool of N children (its default N is the number of "
        "CPUs), early acks, prefetch multiplier 4, classic queue"
    )

    def setup(self) -> None:
        import app_celery

        self.task = app_celery.job
        with app_celery.app.connection_for_write() as connection:
            app_celery.app.amqp.queues[app_celery.QUEUE].bind(connection).declare()

    def _send(self, published: float | None) -> None:
        self.task.delay(published)

    def commands(self, processes: int, extra: tuple[str, ...]) -> list[list[str]]:
        argv = [str(BIN / "celery"), "-A", "app_celery", "worker", "-c", str(processes)]
        return [argv + list(extra)]

    def cleanup(self) -> None:
        import app_celery

        with contextlib.suppress(Exception):
            app_celery.app.pool.force_close_all()
        super().cleanup()


def every(conveyor_best: tuple[str, ...], broker_best: tuple[str, ...]) -> list[System]:
    """Every system, PostgreSQL ones first, in the order of the report's columns."""
    return [
        ConveyorSystem(broker=False),
        ConveyorSystem(broker=False, extra=conveyor_best),
        PgqueuerSystem(),
        ProcrastinateSystem(),
        ConveyorSystem(broker=True),
        ConveyorSystem(broker=True, extra=broker_best),
        DramatiqSystem(),
        CelerySystem(),
    ]
