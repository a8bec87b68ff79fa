"""What the web interface may show and do, and who may use it.

Defaults are closed, as an operator expects of a tool that can retry and cancel work: loopback
only, payloads hidden, every action behind a same-origin check. Credentials come from the
caller or from the environment (``CONVEYOR_WEB_TOKEN``, ``CONVEYOR_WEB_USER`` and
``CONVEYOR_WEB_PASSWORD``), never from the command line, where other users can read them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


@dataclass(frozen=True)
class WebSettings:
    """Options of :func:`conveyor.web.create_app`.

    - ``read_only``: every action (publish, cancel, retry, requeue, pause, resume) is refused
      with 403; the pages show no action buttons.
    - ``show_payloads``: payloads and metadata are shown; by default they are replaced by
      ``null`` with ``"payload_hidden": true`` (they often carry personal data or secrets).
    - ``token``: API clients send ``Authorization: Bearer TOKEN``.
    - ``username`` / ``password``: HTTP basic authentication, for browsers and clients alike.
    - ``refresh_seconds``: how often the pages poll for new figures (0: never).
    - ``allowed_hosts``: the host names requests may address (the ``Host`` header). Empty:
      loopback names only while no credential is configured (a web page cannot reach the
      interface by DNS rebinding), any host once one is. ``"*"`` allows any host, for an
      interface mounted behind the application's own authentication.
    """

    read_only: bool = False
    show_payloads: bool = False
    token: str | None = None
    username: str | None = None
    password: str | None = None
    refresh_seconds: float = 5.0
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ConfigurationError(
                "basic authentication needs both a user name and a password: set both "
                "CONVEYOR_WEB_USER and CONVEYOR_WEB_PASSWORD (or neither)"
            )
        if self.token is not None and len(self.token) < 16:
            raise ConfigurationError(
                "the web token is shorter than 16 characters: use a long random value, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.refresh_seconds < 0:
            raise ConfigurationError("refresh_seconds must be 0 (no refresh) or more")

    @property
    def authenticated(self) -> bool:
        """Whether any credential is required of every request."""
        return self.token is not None or self.username is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: object) -> WebSettings:
        """Settings with the credentials of ``CONVEYOR_WEB_*`` environment variables."""
        source = os.environ if env is None else env
        values: dict[str, object] = {
            "token": source.get("CONVEYOR_WEB_TOKEN") or None,
            "username": source.get("CONVEYOR_WEB_USER") or None,
            "password": source.get("CONVEYOR_WEB_PASSWORD") or None,
        }
        values.update(options)
        return cls(**values)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, settings: WebSettings) -> bool:
    """Whether a request addressed to ``host_header`` (``name[:port]``) may be served."""
    if "*" in settings.allowed_hosts:
        return True
    name = host_header.lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if settings.allowed_hosts:
        return name in {h.lower() for h in settings.allowed_hosts} or is_loopback(name)
    return settings.authenticated or is_loopback(name)


def check_bind(host: str, settings: WebSettings) -> None:
    """Refuse to listen beyond this machine without authentication."""
    if is_loopback(host) or settings.authenticated:
        return
    raise ConfigurationError(
        f"refusing to listen on {host} without authentication: anyone who can reach it could "
        "retry, cancel and publish jobs. Set CONVEYOR_WEB_TOKEN (API clients) or "
        "CONVEYOR_WEB_USER and CONVEYOR_WEB_PASSWORD (browsers), or listen on 127.0.0.1"
    )
