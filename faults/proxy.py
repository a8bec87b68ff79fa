"""A TCP proxy the suite controls, between workers and a database or RabbitMQ.

It runs an asyncio loop in a thread of the runner. Modes: ``pass`` forwards; ``delay`` holds
each chunk for a while (a slow link); ``blackhole`` forwards nothing and answers nothing until
the mode changes (a partition: both ends wait, connections stay open, and what was sent
arrives once it heals, as TCP retransmits it); ``cut`` resets every connection and refuses new
ones (a host that went away). Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Literal

Mode = Literal["pass", "delay", "blackhole", "cut"]


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    # -- control, from the runner's thread ----------------------------------------------------

    def start(self) -> int:
        self._thread.start()
        self.port = self._call(self._listen())
        return self.port

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch mode; ``cut`` also resets every open connection at once."""
        self._call(self._switch(mode, delay))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    # -- the loop's side --------------------------------------------------------------------

    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _switch(self, mode: Mode, delay: float) -> None:
        self.mode, self.delay = mode, delay
        assert self._flowing is not None
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "cut":
            for writer in list(self._writers):
                _reset(writer)

    async def _close(self) -> None:
        if self._flowing is not None:
            self._flowing.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _reset(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(writer)
            return
        self.connections += 1
        self._writers.add(writer)
        assert self._flowing is not None
        await self._flowing.wait()  # a partition: the connection stays half-open
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._writers.discard(writer)
            _reset(writer)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                assert self._flowing is not None
                await self._flowing.wait()
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.mode == "delay":
                    await asyncio.sleep(self.delay)
                await self._flowing.wait()  # held, not dropped, while partitioned
                if self.mode == "cut":
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a vanished peer or a firewall reject would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.close()
