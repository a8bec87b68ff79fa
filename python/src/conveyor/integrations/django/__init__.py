"""Django: settings, ``manage.py`` commands, and publishing inside Django's own transaction.

Add ``"conveyor.integrations.django"`` to ``INSTALLED_APPS`` and, optionally, name your app in
the settings (``CONVEYOR = {"APP": "shop.jobs:app"}``; without it an app without handlers over
the default database serves ``conveyor_status``). :func:`publish` writes the job through the
connection of a Django database alias, so it commits or rolls back with the surrounding
``transaction.atomic()``: the job exists if and only if the Django transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, NotSupported
from ...publishing import Call
from .borrowed import borrowed_engine

if TYPE_CHECKING:
    from ...app import Conveyor
    from ...model import Job

# Django database backends whose connection the store's SQLAlchemy dialect can drive
# (tested: PostgreSQL with psycopg 3, the driver both use).
_DIALECTS = {"django.db.backends.postgresql": "postgresql+psycopg"}
_apps: dict[str, Conveyor] = {}  # the project's app, once built


def settings_of() -> dict[str, Any]:
    """The ``CONVEYOR`` setting (a dict; empty when absent)."""
    from django.conf import settings

    found = getattr(settings, "CONVEYOR", {})
    if not isinstance(found, dict):
        raise ConfigurationError(
            f"settings.CONVEYOR must be a dict such as {{'APP': 'shop.jobs:app'}}, not "
            f"{type(found).__name__}"
        )
    return found


def app_spec() -> str | None:
    """``CONVEYOR["APP"]``: the ``module:attribute`` of the project's Conveyor app."""
    spec = settings_of().get("APP")
    return str(spec) if spec else None


def get_app() -> Conveyor:
    """The project's Conveyor app: the one ``CONVEYOR["APP"]`` names, else an app without
    handlers over the default database (enough for status and clean-up)."""
    if "app" not in _apps:
        spec = app_spec()
        if spec is not None:
            from ...cli.discovery import load_app

            _apps["app"] = load_app(spec)
        else:
            from ...app import Conveyor

            _apps["app"] = Conveyor(database_url())
    return _apps["app"]


def database_url(alias: str = "default") -> str:
    """The SQLAlchemy URL of a Django database alias, for ``Conveyor(database_url())``:
    jobs then live in the database (and transactions) of the project's models."""
    from django.conf import settings
    from sqlalchemy.engine import URL

    database = settings.DATABASES[alias]
    engine = database["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    drivers = {
        "django.db.backends.postgresql": "postgresql+psycopg",
        "django.db.backends.mysql": "mysql+pymysql",
    }
    if engine not in drivers:
        raise ConfigurationError(
            f"database {alias!r} uses {engine}, which Conveyor does not store jobs in; use "
            "PostgreSQL, MariaDB/MySQL or SQLite"
        )
    url = URL.create(
        drivers[engine],
        username=database.get("USER") or None,
        password=database.get("PASSWORD") or None,
        host=database.get("HOST") or None,
        port=int(database["PORT"]) if database.get("PORT") else None,
        database=database.get("NAME") or None,
    )
    return url.render_as_string(hide_password=False)


def publish(type: str, payload: Any = None, *, using: str = "default", **options: Any) -> Job:
    """:meth:`Conveyor.publish` inside Django's transaction on the database ``using``."""
    return publish_job([Call(type, payload)], using=using, **options)


def publish_job(calls: Sequence[Call], *, using: str = "default", **options: Any) -> Job:
    """:meth:`Conveyor.publish_job` inside Django's transaction on the database ``using``.

    Inside ``transaction.atomic()`` the job commits or rolls back with it; outside one,
    Django's autocommit stores it at once. The database must be the one the app's store
    uses (``Conveyor(database_url())``). In broker mode the job's message is sent by the
    repair loop, not at the commit.
    """
    from django.conf import settings

    if "connection" in options:
        raise ConfigurationError(
            "conveyor.integrations.django.publish takes using= (a Django database alias), "
            "not connection="
        )
    engine = settings.DATABASES[using]["ENGINE"]
    if engine not in _DIALECTS:
        raise NotSupported(
            f"publishing inside Django's transaction needs PostgreSQL (psycopg 3); "
            f"database {using!r} uses {engine}: publish with get_app().publish() instead"
        )
    with borrowed_engine(using, _DIALECTS[engine]).connect() as connection:
        return get_app().publish_job(calls, connection=connection, **options)


def close_connections_around_jobs(app: Conveyor) -> Conveyor:
    """Close Django's stale database connections before and after each job, as Django does
    around each request (``close_old_connections``): a handler using the ORM on a worker
    thread neither reuses a broken connection nor leaves one open. Returns ``app``."""

    def close_old(job: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()

    app.before_job(close_old)
    app.after_job(close_old)
    return app


def reset() -> None:
    """Forget the app (tests that change settings)."""
    _apps.clear()
