"""Choosing a store from a URL: ``memory://`` or any SQLAlchemy database URL."""

from __future__ import annotations

from .errors import ConfigurationError
from .store.base import StateSets, Store

# URLs without a driver, as hosting platforms and other tools write them, mapped to the
# drivers of the extras (SQLAlchemy would pick psycopg2 or mysqlclient, which are not installed).
_DRIVER_FORMS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def with_driver(url: str) -> str:
    """``url`` in its driver form: ``postgres://`` and ``postgresql://`` become
    ``postgresql+psycopg://``, ``mysql://`` and ``mariadb://`` become ``mysql+pymysql://``;
    any other URL is returned as it is."""
    scheme, separator, rest = url.partition("://")
    driver = _DRIVER_FORMS.get(scheme.lower()) if separator else None
    return f"{driver}://{rest}" if driver else url


def masked_url(url: str) -> str:
    """The URL with its password hidden: safe for logs, errors and command output."""
    if url.startswith("memory:"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a store URL that cannot be parsed>"


def open_store(
    url: str, states: StateSets, table_prefix: str = "conveyor_", announce: bool = True
) -> Store:
    """The store ``url`` names; ``announce=False``: no wake-ups for waiting workers (PostgreSQL
    NOTIFY) when jobs become claimable, as in broker mode, where the broker wakes them."""
    if url.startswith("memory:"):
        from .store.memory import MemoryStore

        return MemoryStore(states, url)
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from .store.sql.store import SqlStore

    try:
        return SqlStore(url, states, table_prefix, announce=announce)
    except NoSuchModuleError:
        raise ConfigurationError(
            f"no database backend for {masked_url(url)}; use memory://, sqlite:///PATH, "
            "postgresql+psycopg://... or mysql+pymysql://..."
        ) from None
    except ArgumentError:
        raise ConfigurationError(
            f"the store URL {masked_url(url)} is not valid; use memory://, sqlite:///PATH, "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB or mysql+pymysql://USER:PASSWORD@HOST/DB"
        ) from None
    except ModuleNotFoundError as error:
        raise ConfigurationError(
            f"the database driver {error.name!r} for {masked_url(url)} is not installed; "
            "install it with pip install 'conveyor-queue[postgresql]' or 'conveyor-queue[mysql]'"
        ) from None
