"""FastAPI and Starlette: a lifespan, dependencies, a job status route and a 202 response.

A request handler publishes in its own database session and answers ``202 Accepted`` with a
``Location`` that names the job; the client polls that URL. Only Starlette is imported, so
the same pieces serve a bare Starlette app; FastAPI takes them as they are
(``Depends(conveyor_of)``, ``FastAPI(lifespan=lifespan(conveyor))``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import NoMatchFound, Route

from ..aio import AsyncConveyor
from ..errors import ConfigurationError, JobNotFound
from ..model import Job

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# The name of the job status route: accepted() builds the Location header from it.
JOB_ROUTE = "conveyor_job"


def lifespan(
    conveyor: AsyncConveyor,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan that opens ``conveyor`` at startup (the schema is created or checked
    before the first request) and closes it at shutdown; the app's ``state.conveyor`` holds
    it for :func:`conveyor_of`. To combine it with a lifespan of your own, enter
    ``lifespan(conveyor)(app)`` inside yours."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        app.state.conveyor = conveyor
        await conveyor.start()
        try:
            yield
        finally:
            await conveyor.close()

    return run


def conveyor_of(request: Request) -> AsyncConveyor:
    """The request's app's :class:`AsyncConveyor` (a FastAPI dependency as it is)."""
    found = getattr(request.app.state, "conveyor", None)
    if not isinstance(found, AsyncConveyor):
        raise ConfigurationError(
            "this app has no Conveyor: pass lifespan=conveyor.integrations.starlette."
            "lifespan(AsyncConveyor(...)) to FastAPI() or Starlette()"
        )
    return found


async def session_of(request: Request) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` on the Conveyor's engine for one request (a FastAPI dependency):
    publish with ``connection=session`` and commit it, and your rows and the job are stored
    together, or neither. Closed (rolled back unless committed) after the request."""
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(conveyor_of(request).engine, expire_on_commit=False) as session:
        yield session


def job_document(job: Job) -> dict[str, Any]:
    """What the status route tells a client about a job."""
    return {
        "id": job.id,
        "state": job.state,
        "queue": job.queue,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "attempts": job.attempts,
    }


async def job_status(request: Request) -> JSONResponse:
    """``GET /jobs/{job_id}``: the job's state, or 404."""
    job_id = request.path_params["job_id"]
    try:
        job = await conveyor_of(request).get(job_id)
    except JobNotFound as error:
        return JSONResponse({"detail": str(error)}, status_code=404)
    return JSONResponse(job_document(job))


def job_route(path: str = "/jobs/{job_id}") -> Route:
    """The job status route, named :data:`JOB_ROUTE`; add it to the app's routes
    (``api.router.routes.append(job_route())`` on FastAPI)."""
    return Route(path, job_status, methods=["GET"], name=JOB_ROUTE)


def accepted(request: Request, job: Job, location: str | None = None) -> JSONResponse:
    """``202 Accepted`` for a published job, with ``Location`` naming its status URL (the
    :func:`job_route`, unless ``location`` is given) and the job's id and state as body."""
    if location is None:
        try:
            location = str(request.url_for(JOB_ROUTE, job_id=job.id))
        except NoMatchFound:
            raise ConfigurationError(
                "accepted() builds the Location header from the job status route, and this "
                "app has none: add conveyor.integrations.starlette.job_route() to its routes "
                "or pass location="
            ) from None
    return JSONResponse(
        {"id": job.id, "state": job.state}, status_code=202, headers={"Location": location}
    )
