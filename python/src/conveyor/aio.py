"""The asynchronous application API: publish, read, cancel and retry jobs from asyncio code.

An ``async def`` endpoint that called the synchronous :class:`~conveyor.Conveyor` would hold
the event loop for every round trip to the database. :class:`AsyncConveyor` runs the same
operations (``conveyor.operations``) over SQLAlchemy's asyncio extension with an async driver
(aiosqlite, psycopg's async mode, aiomysql): ``AsyncConnection.run_sync`` runs the shared,
synchronous rule code and suspends the coroutine, not the loop, at each round trip. So the
rules exist once; this module only decides where each operation runs and awaits it.

Handlers, defaults and the schema come from the wrapped :class:`~conveyor.Conveyor`: the
async app publishes jobs that the ordinary workers run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL, make_url

from .app import Conveyor
from .errors import ConfigurationError
from .hooks import Publishing, around
from .lifecycle import Outcome
from .model import Job
from .operations import Operation, job_filter, split_options, stored
from .publishing import Call
from .store.base import Store, Transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

# The async driver used for each backend when the app's URL names a synchronous one.
ASYNC_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "psycopg",  # psycopg 3: create_async_engine picks its async mode
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
}
# Drivers that are async already (or, for psycopg, async under create_async_engine).
_ASYNC_READY = frozenset(
    {"aiosqlite", "psycopg", "psycopg_async", "asyncpg", "aiomysql", "asyncmy"}
)
# Jobs per multi-row insert in publish_many (as Conveyor.bulk's default).
BULK_SIZE = 500


def async_url(url: str | URL) -> URL:
    """The async form of a store URL: ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``,
    ``mysql+pymysql://`` becomes ``mysql+aiomysql://``; an async URL stays as it is."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ConfigurationError(
            f"no async driver for a {backend!r} store; AsyncConveyor works on sqlite, "
            "postgresql and mysql/mariadb URLs (memory:// runs in the loop as it is)"
        )
    if "+" in parsed.drivername and parsed.get_driver_name() in _ASYNC_READY:
        return parsed
    return parsed.set(drivername=f"{backend}+{ASYNC_DRIVERS[backend]}")


class AsyncConveyor:
    """The awaitable face of a :class:`~conveyor.Conveyor`.

    ``AsyncConveyor(app)`` shares ``app``'s handlers, defaults, clock, notifier and broker;
    ``AsyncConveyor(url, **options)`` makes that app. ``engine=`` takes the caller's
    ``AsyncEngine`` on the same database (by default one is made from the app's URL, with
    the async driver of :data:`ASYNC_DRIVERS`). Call :meth:`start` once at startup (a web
    framework's lifespan) to open the store and create or check its schema; the first
    operation does it otherwise.
    """

    def __init__(
        self,
        app: Conveyor | str | None = None,
        *,
        engine: AsyncEngine | None = None,
        **app_options: Any,
    ) -> None:
        if isinstance(app, Conveyor):
            if app_options:
                raise ConfigurationError(
                    "AsyncConveyor(app) takes no app options: configure the Conveyor you pass"
                )
            self.app = app
        else:
            self.app = Conveyor(app, **app_options)
        self._engine = engine
        self._own_engine = engine is None
        self._store: Store | None = None
        self._sql = not self.app.url.startswith("memory:") or engine is not None

    # -- lifetime ---------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The async engine, made on first use from the app's URL."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        from sqlalchemy.exc import NoSuchModuleError

        try:
            from sqlalchemy.ext.asyncio import create_async_engine
        except (ImportError, ValueError) as error:  # greenlet missing
            raise ConfigurationError(
                f"the async API needs SQLAlchemy's asyncio extension ({error}); install it "
                "with pip install 'conveyor-queue[asyncio]'"
            ) from None
        parsed = make_url(self.app.url)
        synchronous = str(parsed.query.get("synchronous", "FULL")).upper()
        if parsed.get_backend_name() == "sqlite":
            parsed = parsed.difference_update_query(["synchronous"])
        url = async_url(parsed)
        try:
            engine = create_async_engine(url)
        except (NoSuchModuleError, ModuleNotFoundError) as error:
            name = getattr(error, "name", None) or url.get_driver_name()
            raise ConfigurationError(
                f"the async database driver {name!r} is not installed; install it with pip "
                "install 'conveyor-queue[asyncio]' (SQLite), "
                "'conveyor-queue[asyncio-postgresql]' or 'conveyor-queue[asyncio-mysql]'"
            ) from None
        if url.get_backend_name() == "sqlite":
            from .store.sql.dialects import configure_sqlite

            # The same WAL, busy timeout and BEGIN IMMEDIATE as the store's own engine.
            configure_sqlite(engine.sync_engine, synchronous)
        return engine

    async def start(self) -> None:
        """Open the store (creating or upgrading its schema) without holding the loop."""
        await self._opened()

    async def _opened(self) -> Store:
        if self._store is None:
            self._store = await asyncio.to_thread(lambda: self.app.store)
        return self._store

    async def close(self) -> None:
        """Dispose of the engine this object made, and close the app."""
        if self._engine is not None and self._own_engine:
            await self._engine.dispose()
        await asyncio.to_thread(self.app.close)

    async def __aenter__(self) -> AsyncConveyor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running operations ---------------------------------------------------------------

    async def run(self, operation: Operation[T], connection: Any = None) -> T:
        """Run one operation in a transaction of its own, or in the caller's ``connection``
        (an ``AsyncConnection`` or ``AsyncSession``), which the caller commits."""
        store = await self._opened()
        if connection is None and not self._sql:  # the memory store never waits on I/O
            with store.transaction() as tx:
                return operation(tx)
        return await self.call(lambda sync: operation(store.join(sync)), connection)

    async def call(self, work: Callable[[Any], T], connection: Any = None) -> T:
        """Run synchronous Conveyor code, ``work(sync)``, over the async driver: ``sync`` is
        the synchronous ``Connection`` (or ``Session``) of the caller's ``connection``, or
        of a transaction of its own that commits when ``work`` returns. Code given ``sync``
        as ``connection=`` (``Conveyor.publish``, ``ConveyorQueue.push``) then runs without
        blocking the loop. On the memory store ``sync`` is None."""
        await self._opened()
        if connection is not None:
            result: T = await self._in_caller(connection, work)
            return result
        if not self._sql:
            return work(None)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    @staticmethod
    async def _in_caller(connection: Any, work: Any) -> Any:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        if not isinstance(connection, AsyncConnection | AsyncSession):
            raise ConfigurationError(
                f"connection= takes a SQLAlchemy AsyncConnection or AsyncSession, not "
                f"{type(connection).__name__}; a synchronous one goes to Conveyor.publish"
            )
        return await connection.run_sync(work)

    async def _deliver(self, outcomes: Sequence[Outcome]) -> dict[str, Job]:
        """Notifications and the broker hand-over block: they run in a thread."""
        if self.app.broker_url is None and not any(o.notifications for o in outcomes):
            return {}
        changed: dict[str, Job] = {}
        for outcome in outcomes:
            changed.update(await asyncio.to_thread(self.app._deliver, outcome))
        return changed

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, type: str, payload: Any = None, **options: Any) -> Job:
        """Publish a job with one request; the options are :meth:`Conveyor.publish`'s, and
        ``connection=`` an ``AsyncConnection`` or ``AsyncSession``: the job exists if and
        only if the caller's transaction commits."""
        return await self.publish_job([Call(type, payload)], **options)

    async def publish_job(self, calls: Sequence[Call], **options: Any) -> Job:
        """Publish one job made of several requests run in order."""
        publish_options, connection = split_options(options)
        job = self.app.operations.build(calls, publish_options, self.app.now())
        return (await self._store_jobs([job], connection))[0]

    async def publish_many(
        self, type: str, payloads: Iterable[Any], *, size: int = BULK_SIZE, **options: Any
    ) -> list[Job]:
        """Publish one job of ``type`` per payload, all with the same options (checked once),
        as multi-row inserts of ``size`` jobs in one transaction: all are stored, or none.
        The signature of :meth:`Conveyor.publish_many`, plus ``size``."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"size must be a whole number of at least 1, not {size!r}")
        publish_options, connection = split_options(options)
        jobs = self.app.operations.build_many(type, payloads, publish_options, self.app.now())
        return await self._store_jobs(jobs, connection, size)

    async def _store_jobs(
        self, jobs: Sequence[Job], connection: Any, size: int = BULK_SIZE
    ) -> list[Job]:
        if not jobs:
            return []
        with around(self.app.hooks.around_publish, Publishing(list(jobs))) as publishing:
            publishing.stored = await self._store_built(publishing.jobs, connection, size)
        return publishing.stored

    async def _store_built(self, jobs: Sequence[Job], connection: Any, size: int) -> list[Job]:
        now = self.app.now()
        chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        publishes = [self.app.operations.publish(chunk, now) for chunk in chunks]

        def publish_all(tx: Transaction) -> list[Outcome]:
            return [publish(tx) for publish in publishes]

        if connection is None:
            outcomes = await self.run(publish_all)
            changed = await self._deliver(outcomes)
        else:
            store = await self._opened()

            def in_caller(sync: Any) -> list[Outcome]:
                published = publish_all(store.join(sync))
                for outcome in published:  # the broker hand-over waits for the caller's commit
                    self.app._deliver(outcome, caller_transaction=sync)
                return published

            outcomes = await self._in_caller(connection, in_caller)
            changed = {}
        return [
            job
            for chunk, outcome in zip(chunks, outcomes, strict=True)
            for job in stored(outcome, len(chunk), changed)
        ]

    # -- reading --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job, or :class:`~conveyor.JobNotFound`."""
        job = await self.run(self.app.operations.get(job_id))
        return job.result_read_at(self.app.now())

    async def jobs(
        self,
        *,
        states: Sequence[str] = (),
        queue: str | None = None,
        tag: str | None = None,
        identifier: str | None = None,
        batch: str | None = None,
        limit: int = 100,
        after_sequence: int = 0,
        serial_group: str | None = None,
    ) -> list[Job]:
        """Jobs in publish order, filtered, as :meth:`Conveyor.jobs`."""
        query = job_filter(
            states=states,
            queue=queue,
            tag=tag,
            identifier=identifier,
            batch=batch,
            limit=limit,
            after_sequence=after_sequence,
            serial_group=serial_group,
        )
        found = await self.run(self.app.operations.find(query))
        now = self.app.now()
        return [job.result_read_at(now) for job in found]

    async def unfinished_identifiers(self, identifiers: Iterable[str]) -> set[str]:
        return await self.run(self.app.operations.unfinished(list(identifiers)))

    async def status(self) -> list[tuple[str, str, int]]:
        """(queue, state, count) for every non-empty combination."""
        return await self.run(self.app.operations.counts())

    # -- state changes --------------------------------------------------------------------

    async def fire(self, job_id: str, event: str, params: dict[str, Any] | None = None) -> Job:
        """Fire a machine event on a job; the machine refuses what it does not allow."""
        outcome = await self.run(self.app.operations.fire(job_id, event, self.app.now(), params))
        await self._deliver([outcome])
        return outcome.jobs[0]

    async def cancel(self, job_id: str) -> Job:
        """As :meth:`Conveyor.cancel`: a ``processing`` job gets a cancel request
        (CANCEL-001), signalled at once to the app's own workers if they run it."""
        job = await self.fire(job_id, "cancel")
        if job.cancel_requested and job.lease is not None:
            self.app.cancellations.request(job.id, job.lease.token)
        return job

    async def retry(self, job_id: str) -> Job:
        return await self.fire(job_id, "retry")

    async def requeue(self, job_id: str) -> Job:
        return await self.fire(job_id, "requeue")
