"""The conformance adapter's HTTP binding: ``conveyor web`` on the adapter's own app.

In HTTP mode (``conveyor-conformance run --http ...``) the harness sends the binding's commands
as HTTP requests to the URL it hands the adapter in ``CONVEYOR_CONFORMANCE_HTTP``. The server
has to share the adapter's store, handlers and controlled clock, so it runs in the adapter's
process: uvicorn in a thread, serving :func:`conveyor.web.create_app` of the app the latest
``reset`` made (every ``reset`` builds a new app). The harness sends one request at a time, so
the thread never works while the protocol loop does.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from .app import Conveyor
from .errors import ConfigurationError

URL_VARIABLE = "CONVEYOR_CONFORMANCE_HTTP"
TOKEN_VARIABLE = "CONVEYOR_CONFORMANCE_HTTP_TOKEN"


class BindingServer:
    """Serves the web API of the current app at a loopback URL, until :meth:`stop`."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ConfigurationError(
                f"{URL_VARIABLE} is {url!r}: give http://HOST:PORT/BASE, e.g. "
                "http://127.0.0.1:8765/api"
            )
        if parts.path.rstrip("/") != "/api":
            raise ConfigurationError(f"{URL_VARIABLE}: conveyor web serves the binding at /api")
        self.host, self.port, self.token = parts.hostname, parts.port, token
        self._web: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, app: Conveyor) -> None:
        """Answer from now on with the web interface of ``app``."""
        from .web import create_app

        self._web = create_app(
            app, token=self.token, username=None, password=None, show_payloads=True
        )

    async def _dispatch(self, scope: Any, receive: Any, send: Any) -> None:
        if self._web is None:
            raise RuntimeError("send reset before any HTTP request")
        await self._web(scope, receive, send)

    def start(self) -> BindingServer:
        try:
            import uvicorn
        except ImportError:
            raise ConfigurationError(
                "HTTP mode needs the web extra: pip install 'conveyor-queue[web]'"
            ) from None
        config = uvicorn.Config(
            self._dispatch,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="conveyor-http", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigurationError(f"could not serve HTTP on {self.host}:{self.port}")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(5)
        self._server = self._thread = None
