"""Procrastinate's side: ``procrastinate --app=app_procrastinate.app worker -q QUEUE``.

Its tables live in a schema of this run (``search_path`` in the connection string). The task
is ``async def``: Procrastinate runs it on its event loop (a sync task would go through a
thread).
"""

from __future__ import annotations

import urllib.parse

import jobs
import procrastinate
from settings import NAME, PG_URL, TASK_NAME, queue

SCHEMA = f"{NAME}_proc"
QUEUE = queue("procrastinate")
separator = "&" if "?" in PG_URL else "?"
CONNINFO = f"{PG_URL}{separator}options=" + urllib.parse.quote(f"-c search_path={SCHEMA}")

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=CONNINFO))


@app.task(name=TASK_NAME, queue=QUEUE)
async def job(published: float | None = None) -> None:
    await jobs.run_async(published)
