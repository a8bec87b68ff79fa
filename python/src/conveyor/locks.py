"""Command locks: a command that must not run twice at once over one store holds one.

A lock is named by the command, a *single id* (``default`` unless several named instances
should run side by side) and the store it works on. The store holds it
(:meth:`~conveyor.store.base.Store.command_lock`), by something the operating system or the
database server releases when the process dies, so a crashed process never leaves a stale
lock behind (unlike a PID file): ``flock`` next to a SQLite file, a PostgreSQL advisory lock
or a MariaDB ``GET_LOCK`` on a connection of its own, a lock in the process for stores that
live in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Conveyor

DEFAULT_SINGLE_ID = "default"


def store_location(app: Conveyor) -> str:
    """The store the app works on, as a URL safe to print (password masked)."""
    return app.store.display_url


@contextmanager
def command_lock(
    app: Conveyor,
    name: str,
    single_id: str = DEFAULT_SINGLE_ID,
    *,
    on_lost: Callable[[str], None] | None = None,
    check_every: float = 5.0,
) -> Iterator[None]:
    """Hold the lock of command ``name`` (instance ``single_id``) on the app's store.

    Raises :class:`~conveyor.errors.AlreadyRunning` at once when another process (or
    another thread of this one) holds it; never waits. A lock held by a database session
    (PostgreSQL, MariaDB) is checked every ``check_every`` seconds: when its session was cut,
    it is taken again, and when another instance took it meanwhile, ``on_lost`` is called with
    the reason (the command should stop).
    """
    busy = (
        f"another `conveyor {name}` with single-id {single_id!r} is running on "
        f"{store_location(app)}; wait for it to stop, or pass --single-id to run several"
    )
    with app.store.command_lock(name, single_id, busy, on_lost, check_every):
        yield
