"""A private RabbitMQ node for fault tests: its own name, ports, cookie and data directory.

Outages (``stop_app``, SIGKILL of the node) hit only this node, never the machine's shared
broker. The node runs in the foreground under ``rabbitmq-server``, so its process is ours to
stop by pid. Plain module (no pytest): the fault suite under ``faults/`` uses it too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Debian's /usr/sbin wrappers switch to the rabbitmq user and drop the environment; the scripts
# under /usr/lib/rabbitmq/bin take it as given. CONVEYOR_TEST_RABBITMQ_BIN names another folder.
_PACKAGED_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_tool(name: str) -> str | None:
    """The path of ``rabbitmq-server`` or ``rabbitmqctl`` that honours the environment."""
    folder = os.environ.get("CONVEYOR_TEST_RABBITMQ_BIN")
    if folder:
        candidate = Path(folder) / name
        return str(candidate) if candidate.exists() else None
    if (_PACKAGED_BIN / name).exists():
        return str(_PACKAGED_BIN / name)
    return shutil.which(name)


def node_problem() -> str | None:
    """None when a private node can be started here, else why not."""
    for name in ("rabbitmq-server", "rabbitmqctl"):
        if rabbitmq_tool(name) is None:
            return f"{name} is not installed (or set CONVEYOR_TEST_RABBITMQ_BIN)"
    return None


def _ephemeral_low() -> int:
    """The lowest port the kernel gives the local end of an outgoing connection."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the ephemeral range: a node the tests stop and start again must find
    its port free. One from the ephemeral range (bind to port 0) can be taken meanwhile as the
    local end of any outgoing connection, and start_app then fails with eaddrinuse."""
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    for _ in range(200):
        port = low + secrets.randbelow(high - low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high} for a private RabbitMQ node")


@dataclass
class RabbitNode:
    """One RabbitMQ node in ``directory``; ``start()`` boots it, ``stop()`` ends it by pid."""

    directory: Path
    name: str = field(default_factory=lambda: f"conveyor-faults-{os.getpid()}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def environment(self) -> dict[str, str]:
        base = self.directory
        return {
            **os.environ,
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _prepare(self) -> None:
        """Files that keep the machine's settings (/etc/rabbitmq) out of this node."""
        base = self.directory
        for folder in ("home", "mnesia", "log"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        cookie = base / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "rabbitmq-env.conf").write_text("")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        tool = rabbitmq_tool("rabbitmqctl")
        assert tool is not None
        return subprocess.run(
            [tool, "-n", self.name, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 90) -> None:
        """Boot the node (again, after ``kill``: same name, ports and data) and wait for it."""
        tool = rabbitmq_tool("rabbitmq-server")
        assert tool is not None
        self._prepare()
        (self.directory / "node.pid").unlink(missing_ok=True)
        with (self.directory / "server.out").open("ab") as output:
            self.server = subprocess.Popen(
                [tool],
                env=self.environment(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.await_startup(timeout)

    def await_startup(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.name} exited: {self.tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"RabbitMQ node {self.name} did not start: {self.tail()}")
            # await_startup fails at once while the node is not yet known to epmd: poll.
            if self.ctl("-q", "--timeout", str(int(left) + 1), "await_startup").returncode == 0:
                return
            time.sleep(0.2)

    def tail(self) -> str:
        path = self.directory / "server.out"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def stop_app(self) -> None:
        result = self.ctl("-q", "stop_app")
        if result.returncode != 0:
            raise RuntimeError(f"stop_app on {self.name} failed: {result.stderr.strip()}")

    def start_app(self) -> None:
        result = self.ctl("-q", "start_app")
        if result.returncode != 0:
            raise RuntimeError(f"start_app on {self.name} failed: {result.stderr.strip()}")
        self.await_startup()

    def beam_pid(self) -> int | None:
        """The node's own Erlang VM process (what SIGKILL hits), from its pid file."""
        try:
            return int((self.directory / "node.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the node's VM (a crash of the broker host), and reap its server script.
        Only while the server script of this node runs: a stale pid is never signalled."""
        if self.server is None:
            return
        pid = self.beam_pid()
        if self.server.poll() is None:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            else:
                self.server.kill()
        self.server.wait(timeout=60)
        self.server = None
        (self.directory / "node.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """End the node by pid, whatever state it is in (a fixture finalizer's call)."""
        self.kill()

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False
