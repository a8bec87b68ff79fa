"""Conveyor Web: a JSON HTTP API and a dashboard over a Conveyor app, as one ASGI app.

Mount it in FastAPI, Starlette or any ASGI server, or run it with ``conveyor web``::

    from conveyor.web import create_app
    web = create_app(app, read_only=True)          # Starlette: Mount("/conveyor", app=web)

It has no logic of its own: every figure and action goes through the app's public API, run in a
worker thread. Needs the ``web`` extra (``pip install 'conveyor-queue[web]'``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import Conveyor
from .api import api_routes
from .pages import page_routes
from .security import SecurityMiddleware
from .service import WebService
from .settings import WebSettings, check_bind, is_loopback

__all__ = ["WebSettings", "check_bind", "create_app", "is_loopback"]


def create_app(
    conveyor_app: Conveyor, settings: WebSettings | None = None, **options: Any
) -> Starlette:
    """The web interface of ``conveyor_app``; ``options`` are :class:`WebSettings` fields
    (credentials default to the ``CONVEYOR_WEB_*`` environment variables)."""
    if settings is None:
        settings = WebSettings.from_env(**options)
    elif options:
        raise TypeError("pass either settings= or WebSettings options, not both")
    service = WebService(conveyor_app, settings)
    routes = [
        *_metrics(service),
        *api_routes(service),
        *page_routes(service),
        Mount("/static", StaticFiles(packages=[("conveyor.web", "static")]), name="static"),
    ]
    web = Starlette(routes=routes)
    web.add_middleware(SecurityMiddleware, settings=settings)
    web.state.settings = settings
    return web


def _metrics(service: WebService) -> list[Route]:
    """``/metrics`` when prometheus-client is installed (extra ``metrics``)."""
    try:
        from .metrics import metrics_route
    except ImportError:
        return []
    return [metrics_route(service)]
