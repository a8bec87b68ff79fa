"""Talking to an adapter process: JSON lines over its stdin and stdout, with timeouts.

Anything on stdout that is not the response to the request just sent (a log line, a second
response, a response with another ``seq``) is a protocol violation: the adapter is broken and
the run cannot tell whether the implementation conforms.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from . import PROTOCOL_VERSION
from .protocol import Protocol


class AdapterError(Exception):
    """The adapter broke the protocol, crashed or hung; ``rule`` names the protocol rule."""

    def __init__(self, rule: str, message: str, stderr: str = "") -> None:
        super().__init__(f"{message} ({rule})")
        self.rule = rule
        self.message = message
        self.stderr = stderr


@dataclass(frozen=True)
class Response:
    kind: str  # result, error, skipped or errored
    value: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.kind == "result"

    @property
    def code(self) -> str | None:
        return self.value.get("code") if self.kind == "error" else None


class Client:
    """One adapter process. ``start()`` spawns it and performs the handshake.

    Responses are read in this thread with ``select`` (no reader threads, which would make
    every exchange wait for the interpreter's thread switch); the adapter's stderr goes to a
    temporary file whose tail is shown when the adapter breaks.
    """

    def __init__(
        self,
        command: str,
        *,
        timeout: float = 30.0,
        protocol: Protocol | None = None,
        validate: bool = False,
        specversion: str = "0.2",
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.protocol = protocol
        self.validate = validate and protocol is not None
        self.specversion = specversion
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.handshake: dict[str, Any] = {}
        self.requests = 0
        self._seq = 0
        self._buffer = b""
        self._eof = False
        self._stderr: Any = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        environment = dict(os.environ)
        environment.setdefault("PYTHONUNBUFFERED", "1")
        if self.env:
            environment.update(self.env)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the adapter
        self._buffer = b""
        self._eof = False
        try:
            self.process = subprocess.Popen(
                self.command,
                shell=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
                env=environment,
                start_new_session=True,
            )
        except OSError as error:
            raise AdapterError("PROTO-006", f"cannot start the adapter: {error}") from None
        response = self.call("start", version=PROTOCOL_VERSION, specversion=self.specversion)
        if not response.ok:
            raise AdapterError(
                "PROTO-003", f"the start handshake failed: {json.dumps(response.value)}"
            )
        self.handshake = response.value
        return self.handshake

    def close(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None and process.stdin is not None:
                with contextlib.suppress(AdapterError):
                    self._send({"seq": self._next_seq(), "cmd": "stop"})
                process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self._kill(process)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self.process = None

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        """Kill the adapter and anything it started (it runs in its own session)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            process.kill()
        process.wait()

    def kill(self) -> None:
        if self.process is not None:
            self._kill(self.process)
            self.process = None

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(size - 8000, 0))
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    # -- I/O --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, request: dict[str, Any]) -> None:
        process = self.process
        if process is None or process.stdin is None:
            raise AdapterError("PROTO-006", "the adapter is not running")
        try:
            data = (json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (LIMIT-007) travels as a JSON escape
            data = (json.dumps(request) + "\n").encode("ascii")
        try:
            process.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            raise AdapterError(
                "PROTO-006", "the adapter closed its stdin (it exited)", self.stderr_tail
            ) from None

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line of stdout, or None at end of file; raises on timeout."""
        process = self.process
        assert process is not None
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            if self._eof:
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    return line
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                self._eof = True
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def call(self, cmd: str, **args: Any) -> Response:
        """Send one request and return its response; raise AdapterError on any violation."""
        request = {"seq": self._next_seq(), "cmd": cmd, **args}
        if self.validate and self.protocol is not None:
            problems = self.protocol.check_request(request)
            if problems:
                raise ValueError(f"the suite built an invalid {cmd} request: {problems}")
        self._send(request)
        self.requests += 1
        try:
            raw = self._read_line(time.monotonic() + self.timeout)
        except TimeoutError:
            raise AdapterError(
                "PROTO-006",
                f"no response to {cmd} (seq {request['seq']}) within {self.timeout:g} s",
                self.stderr_tail,
            ) from None
        if raw is None:
            status = self.process.wait(timeout=5) if self.process else None
            raise AdapterError(
                "PROTO-006",
                f"the adapter exited (status {status}) instead of answering {cmd}",
                self.stderr_tail,
            )
        line = raw.decode("utf-8", "replace")
        try:
            response = json.loads(line)
        except json.JSONDecodeError:
            raise AdapterError(
                "PROTO-002",
                f"stdout noise: a line that is not JSON arrived instead of the {cmd} response: "
                f"{line.strip()[:200]!r}",
                self.stderr_tail,
            ) from None
        if not isinstance(response, dict) or "seq" not in response:
            raise AdapterError(
                "PROTO-002",
                f"stdout noise: {line.strip()[:200]!r} is not a response object with a seq",
                self.stderr_tail,
            )
        if response["seq"] != request["seq"]:
            raise AdapterError(
                "PROTO-001",
                f"the response to {cmd} has seq {response['seq']!r}, expected {request['seq']}",
                self.stderr_tail,
            )
        if self.validate and self.protocol is not None:
            problems = self.protocol.check_response(cmd, response)
            if problems:
                raise AdapterError(
                    "PROTO-004",
                    f"the response to {cmd} breaks the protocol schema: {'; '.join(problems[:5])}",
                    self.stderr_tail,
                )
        for kind in ("result", "error", "skipped", "errored"):
            if kind in response:
                value = response[kind]
                if not isinstance(value, dict):
                    break
                return Response(kind, value)
        raise AdapterError(
            "PROTO-001",
            f"the response to {cmd} has none of result, error, skipped, errored: {line[:200]!r}",
            self.stderr_tail,
        )
