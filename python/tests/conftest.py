"""Fixtures: an app per backend, against real services (never mocks).

Backends: ``memory``, ``sqlite`` (a file in tmp_path), ``postgresql`` and ``mariadb`` (the
URLs come from CONVEYOR_TEST_POSTGRES_URL / CONVEYOR_TEST_MARIADB_URL). Locally an
unreachable service skips with the reason; under CI=true it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conveyor import Conveyor, ManualClock

POSTGRES_URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "CONVEYOR_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
SERVER_URLS = {"postgresql": POSTGRES_URL, "mariadb": MARIADB_URL}
ALL_BACKENDS = ("memory", "sqlite", "postgresql", "mariadb")
# One table set per test process, so concurrent test runs on one server never collide.
TEST_PREFIX = f"ct{os.getpid()}_"

_reachable: dict[str, str | None] = {}


def service_problem(backend: str) -> str | None:
    """None when the backend's server answers, else why not."""
    if backend not in SERVER_URLS:
        return None
    if backend not in _reachable:
        try:
            engine = create_engine(SERVER_URLS[backend])
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            engine.dispose()
            _reachable[backend] = None
        except Exception as error:
            _reachable[backend] = f"{backend} is not reachable: {error}"
    return _reachable[backend]


def require_service(backend: str) -> None:
    problem = service_problem(backend)
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(problem)


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    return SERVER_URLS[backend]


def wipe(app: Conveyor) -> None:
    """Empty the shared test tables of a server backend (each test starts clean)."""
    app.store.erase()


AppFactory = Callable[..., Conveyor]


@pytest.fixture(scope="session", autouse=True)
def _drop_test_tables() -> Iterator[None]:
    """Drop this process's tables on the servers when the session ends."""
    yield
    from conveyor.store.sql.schema import build_tables

    for backend, url in SERVER_URLS.items():
        if service_problem(backend) is not None:
            continue
        engine = create_engine(url)
        build_tables(TEST_PREFIX).metadata.drop_all(engine, checkfirst=True)
        engine.dispose()


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_service(name)
    return name


@pytest.fixture(params=("memory", "sqlite"))
def local_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _factory(backend: str, tmp_path: Path, clock: ManualClock) -> Iterator[AppFactory]:
    apps: list[Conveyor] = []

    def make(**options: Any) -> Conveyor:
        options.setdefault("clock", clock)
        options.setdefault("table_prefix", TEST_PREFIX)
        app = Conveyor(backend_url(backend, tmp_path), **options)
        if not apps and backend in SERVER_URLS:
            wipe(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def make_app(backend: str, tmp_path: Path, clock: ManualClock) -> Iterator[AppFactory]:
    """Builds apps on the parametrised backend, sharing one store location and clock."""
    yield from _factory(backend, tmp_path, clock)


@pytest.fixture
def app(make_app: AppFactory) -> Conveyor:
    return make_app()


@pytest.fixture
def make_local_app(local_backend: str, tmp_path: Path, clock: ManualClock) -> Iterator[AppFactory]:
    """Like make_app, over memory and SQLite only (for the heavier property tests)."""
    yield from _factory(local_backend, tmp_path, clock)
