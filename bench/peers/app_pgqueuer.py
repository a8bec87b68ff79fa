"""pgqueuer's side: ``pgq run app_pgqueuer:main`` (names from ``PGQUEUER_PREFIX``).

pgqueuer runs ``async def`` entrypoints on its event loop, so the job is the async one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import jobs
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from settings import PG_URL, TASK_NAME


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(PG_URL)
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(TASK_NAME)
    async def job(job: Job) -> None:
        await jobs.run_async(float(job.payload) if job.payload else None)

    try:
        yield pgq
    finally:
        await connection.close()
