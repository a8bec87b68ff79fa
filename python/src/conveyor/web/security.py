"""Authentication, CSRF protection and security headers, around every request.

CSRF: a state-changing request (any method but GET, HEAD and OPTIONS) is refused when the
browser says it comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or
``none``, or an ``Origin`` whose host is not the one asked. Clients that are not browsers send
neither header and are let through (they need the credentials anyway when the interface is
exposed). The API also takes only ``application/json`` bodies, which a cross-site form cannot
send. This is the Fetch Metadata check of Sidekiq 8.1 and PgQueuer, with no token to manage.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import WebSettings, host_allowed

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No source outside this server: scripts and styles are files of the package, no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authorized(headers: Headers, settings: WebSettings) -> bool:
    """Whether the request carries a configured credential (or none is configured)."""
    if not settings.authenticated:
        return True
    scheme, _, value = headers.get("authorization", "").partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and settings.token is not None:
        return _equal(value.strip(), settings.token)
    if scheme == "basic" and settings.username is not None and settings.password is not None:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        # Both compared, always: the time taken does not tell which one was wrong.
        return _equal(user, settings.username) & _equal(password, settings.password)
    return False


def cross_site(headers: Headers) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site!r}"
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return f"Origin {origin!r} is not this server ({host})"
    return None


class SecurityMiddleware:
    """Checks credentials and the origin of actions; adds the security headers."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not host_allowed(host, self.settings):
            response = JSONResponse(
                _error(
                    "host_not_allowed",
                    f"this interface does not answer to the host {host!r}: address it as "
                    "127.0.0.1 or localhost, or list the name in allowed_hosts "
                    "(--allowed-host) or configure credentials",
                ),
                status_code=403,
            )
            await response(scope, receive, send_with_headers)
            return
        if not authorized(headers, self.settings):
            # Basic first, so that a browser asks for the password; Bearer whenever a token
            # is configured (HTTP-010).
            challenges = []
            if self.settings.username is not None:
                challenges.append('Basic realm="Conveyor", charset="UTF-8"')
            if self.settings.token is not None:
                challenges.append('Bearer realm="Conveyor"')
            challenge = ", ".join(challenges)
            response = JSONResponse(
                _error("unauthorized", "send the configured token or user name and password"),
                status_code=401,
                headers={"www-authenticate": challenge},
            )
            await response(scope, receive, send_with_headers)
            return
        if scope["method"] not in SAFE_METHODS:
            reason = cross_site(headers)
            if reason is not None:
                response = JSONResponse(
                    _error("cross_site", f"refused a cross-site request ({reason})"),
                    status_code=403,
                )
                await response(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


def _error(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
