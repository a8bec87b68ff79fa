"""A throwaway PostgreSQL cluster on ``initdb``'s own settings, for benchmarks that must not
inherit a test server's configuration (this machine's shared server runs with autovacuum off).

The cluster lives in a temporary directory, listens on a free loopback port, and is stopped
and deleted when the context ends. Only the server binaries of the installed PostgreSQL are
needed (Debian: ``/usr/lib/postgresql/<version>/bin``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def server_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else the newest installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise SystemExit(
            "no PostgreSQL server binaries (initdb) found: install the server package "
            "(Debian: postgresql) or pass --url to measure an existing server"
        )
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def stock_cluster() -> Iterator[str]:
    """Start a fresh cluster with every setting at initdb's default; yield its SQLAlchemy URL."""
    binaries = server_binaries()
    directory = Path(tempfile.mkdtemp(prefix="conveyor-stock-pg-"))
    data = directory / "data"
    control = [str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(directory / "log")]
    try:  # a failed initdb or start leaves no directory behind, a started server no process
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        port = free_port()
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_server_user(initdb), check=True, stdout=subprocess.DEVNULL)
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_server_user([*control, "-o", options, "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([*control, "-m", "fast", "stop"]),
                check=False,
                stdout=subprocess.DEVNULL,
            )
        shutil.rmtree(directory, ignore_errors=True)
