"""A FastAPI app that stores an order and publishes its receipt job in one transaction.

Run it with ``uvicorn examples.fastapi_app:api`` and a worker with
``conveyor consume --app examples.fastapi_app:app``; ``CONVEYOR_URL`` picks the database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from conveyor import Conveyor
from conveyor.aio import AsyncConveyor
from conveyor.integrations.starlette import (
    accepted,
    conveyor_of,
    job_route,
    lifespan,
    session_of,
)
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///shop.db"))
metadata = MetaData()
orders = Table(
    "example_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(200), nullable=False),
)
sent: list[int] = []


@app.handler("send_receipt", queue="mail")
def send_receipt(order_id: int) -> None:
    sent.append(order_id)


conveyor = AsyncConveyor(app)


@asynccontextmanager
async def startup(api: FastAPI) -> AsyncIterator[None]:
    """Conveyor's lifespan, and the app's own table (its migrations, in a real app)."""
    async with lifespan(conveyor)(api):
        async with conveyor.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        yield


api = FastAPI(lifespan=startup)
api.router.routes.append(job_route())  # GET /jobs/{job_id}, the 202's Location


class Order(BaseModel):
    id: int
    email: str


@api.post("/orders", status_code=202)
async def place_order(
    order: Order,
    request: Request,
    session: Annotated[AsyncSession, Depends(session_of)],
    conveyor: Annotated[AsyncConveyor, Depends(conveyor_of)],
) -> JSONResponse:
    await session.execute(insert(orders).values(id=order.id, email=order.email))
    job = await conveyor.publish(
        "send_receipt", {"order_id": order.id}, connection=session
    )
    if (
        "@" not in order.email
    ):  # a failure after the publish: neither row nor job is stored
        raise HTTPException(422, "email needs an @")
    await session.commit()
    return accepted(request, job)
