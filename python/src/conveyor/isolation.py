"""Sync handlers in handler processes (``isolation="process"``), so a handler can be killed.

A thread cannot be stopped in Python: a sync handler past its timeout keeps its slot until it
returns (TIMEOUT-003). In process isolation each of a worker's slots has a child process,
a fresh interpreter that imports the app the way the CLI does (``module:attribute``, with the
worker's ``sys.path``) and runs handlers by their type name. Only JSON crosses the pipe: the
request's stored payload and its context going in; the encoded result, progress reports and a
description of a raised exception coming back. Leases, heartbeats, hooks and the recording of
outcomes stay in the worker's process.

At the attempt's timeout the child is sent SIGTERM, then SIGKILL after :data:`KILL_GRACE`, and
replaced; the attempt ends with the outcome ``timeout`` and its slot is free at once. A child
that dies while it runs a handler (a crash in native code, ``os._exit``) ends the attempt with
a temporary error of type :class:`~conveyor.errors.HandlerProcessDied`. ``async def`` handlers
keep running on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from . import codec, failures
from .appref import import_attribute
from .cancellation import Cancellation
from .errors import (
    ConfigurationError,
    ConveyorError,
    HandlerProcessDied,
    InvalidPayload,
    PayloadTooLarge,
    Refused,
    StaleLease,
)
from .execution import (
    AttemptTimedOut,
    Encoded,
    HandlerCall,
    Invoke,
    refused_its_arguments,
    resident_memory,
)
from .handlers import JobContext
from .outcomes import Die, JobCancelled, PermanentError, TemporaryError, Waiting
from .results import encode_result

log = logging.getLogger("conveyor.worker")

KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL
# How often a worker waiting on a handler process looks for a cancel request (CANCEL-002):
# the request already waited up to a heartbeat interval, this adds little to it.
CANCEL_CHECK = 0.1
START_TIMEOUT = 120.0  # seconds a new handler process may take to import the app
_ENTRY = "from conveyor.isolation import main; main()"


class HandlerRaised(Exception):
    """An exception a handler raised in its handler process, rebuilt from its description:
    the recorded error shows the original class name and traceback (the object itself
    stays in that process)."""


# -- in the handler process ---------------------------------------------------------------


def main() -> None:
    """The handler process (``python -c``, the socket's descriptor as its argument): load
    the app, then run one call at a time until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C stops the worker, which stops us
    _die_with_parent()
    connection = Connection(int(sys.argv[1]))
    start = json.loads(connection.recv_bytes())
    sys.path[:] = start["path"]  # the worker's, so the app imports as it did there
    try:
        target = import_attribute(start["spec"])
        app = target if hasattr(target, "handlers") or not callable(target) else target()
        app.handlers  # noqa: B018 - fails now if it is not an app
    except BaseException as error:
        _send(connection, {"failed": failures.log_text(error)})
        return
    _send(connection, {"ready": True})
    while True:
        try:
            message = json.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        if message.get("stop"):
            return
        reply = _call(app, message, connection)
        reply["rss"] = resident_memory()
        _send(connection, reply)


def _die_with_parent() -> None:
    """On Linux, be killed when the worker dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _call(app: Any, message: dict[str, Any], connection: Connection) -> dict[str, Any]:
    def report(percent: float | None, text: str | None) -> None:
        _send(connection, {"progress": [percent, text]})
        answer = json.loads(connection.recv_bytes())
        if "refused" in answer:
            raise StaleLease(answer["refused"])
        if "failed" in answer:
            raise ConveyorError(answer["failed"])

    fields = message["context"]
    context = JobContext(**{**fields, "tags": tuple(fields["tags"])}, reporter=report)
    try:
        handler = app.handlers.get(message["type"])
        bound = handler.bind(codec.decode(message["payload"]), context)
        value = handler.function(*bound.args, **bound.kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
    except Exception as error:
        return {"error": _describe(error)}
    if value is None or not message["last"]:
        return {"result": None}
    try:
        return {"result": encode_result(value)}
    except (InvalidPayload, PayloadTooLarge) as error:
        return {"unstorable": error.message}


async def _awaited(value: Any) -> Any:
    return await value


def _describe(error: BaseException) -> dict[str, Any]:
    """An exception as JSON: what the worker needs to classify and record it."""
    described: dict[str, Any] = {
        "type": failures.type_name(error),
        "message": str(error),
        "traceback": failures.format_traceback(error),
        "refused_arguments": refused_its_arguments(error),
    }
    if isinstance(error, Waiting):
        described.update(outcome="waiting", delay_ms=error.delay_ms)
    elif isinstance(error, PermanentError):
        described["outcome"] = "permanent"
    elif isinstance(error, TemporaryError):
        described.update(outcome="temporary", retry_after_ms=error.retry_after_ms)
    elif isinstance(error, Die):
        described["outcome"] = "die"
        if error.__cause__ is not None:
            described["cause"] = _describe(error.__cause__)
    return described


def _send(connection: Connection, message: dict[str, Any]) -> None:
    connection.send_bytes(json.dumps(message).encode())


# -- in the worker ------------------------------------------------------------------------


def _rebuilt(described: dict[str, Any]) -> Exception:
    """The exception :func:`_describe` described, as the outcome classes know it."""
    outcome, message = described.get("outcome"), described["message"]
    error: Exception
    if outcome == "waiting":
        error = Waiting(message)
        error.delay_ms = described.get("delay_ms")
    elif outcome == "permanent":
        error = PermanentError(message)
    elif outcome == "temporary":
        error = TemporaryError(message)
        error.retry_after_ms = described.get("retry_after_ms")
    elif outcome == "die":
        error = Die(message)
        cause = described.get("cause")
        error.__cause__ = _rebuilt(cause) if cause is not None else None
    else:
        error = HandlerRaised(message)
    vars(error).update(
        carried_type=described["type"],
        carried_traceback=described.get("traceback"),
        refused_arguments=described.get("refused_arguments", False),
    )
    return error


def _exit_of(process: subprocess.Popen[bytes]) -> str:
    code = process.poll()
    if code is None:
        return "closed its pipe"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


class HandlerProcess:
    """One child process and the worker's end of its pipe."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        ours, theirs = socket.socketpair()
        # A fresh interpreter, not multiprocessing's spawn: that one would import the
        # worker's __main__ module again in every child.
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        self.connection = Connection(ours.detach())
        _send(self.connection, {"spec": spec, "path": sys.path})
        self.ready = False
        self.rss = 0

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.connection.closed

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        try:
            message = self._receive(time.monotonic() + timeout)
        except AttemptTimedOut:
            raise ConfigurationError(
                f"a handler process did not load the app {self.spec} within {timeout:g} s"
            ) from None
        except HandlerProcessDied as error:
            raise ConfigurationError(f"a handler process could not start: {error}") from None
        if "failed" in message:
            self.kill()
            raise ConfigurationError(
                f"a handler process could not load the app {self.spec}: {message['failed']}"
            )
        self.ready = True

    def call(self, call: HandlerCall, deadline: float | None) -> Encoded:
        """Run ``call`` in the child until ``deadline`` (monotonic); progress reports are
        written on the way. AttemptTimedOut once the child was killed at the deadline."""
        context = {
            f.name: getattr(call.context, f.name)
            for f in dataclasses.fields(call.context)
            if f.name not in ("reporter", "cancellation")
        }
        _send(
            self.connection,
            {
                "type": call.context.request_type,
                "payload": call.payload,
                "context": context,
                "last": call.last,
            },
        )
        cancellation = call.context.cancellation
        while True:
            reply = self._receive(deadline, cancellation)
            if "progress" not in reply:
                break
            try:
                call.context.progress(*reply["progress"])
                answer: dict[str, Any] = {"ok": True}
            except Refused as error:
                answer = {"refused": error.message}
            except Exception as error:
                answer = {"failed": failures.log_text(error)}
            _send(self.connection, answer)
        self.rss = int(reply.get("rss") or 0)
        if "error" in reply:
            raise _rebuilt(reply["error"])
        return Encoded(reply.get("result"), reply.get("unstorable"))

    def _receive(
        self, deadline: float | None, cancellation: Cancellation | None = None
    ) -> dict[str, Any]:
        try:
            self._wait_for_reply(deadline, cancellation)
            data = self.connection.recv_bytes()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(KILL_GRACE)
            self.connection.close()
            raise HandlerProcessDied(
                f"the handler process (pid {self.process.pid}) {_exit_of(self.process)} "
                "before the handler returned"
            ) from None
        message: dict[str, Any] = json.loads(data)
        return message

    def _wait_for_reply(self, deadline: float | None, cancellation: Cancellation | None) -> None:
        """Return once the child has written; kill it at ``deadline`` (AttemptTimedOut) or
        on a cancel request (JobCancelled: a handler process is cancelled the hard way)."""
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            step = remaining
            if cancellation is not None:
                step = CANCEL_CHECK if remaining is None else min(remaining, CANCEL_CHECK)
            if step is None or self.connection.poll(step):
                return
            if cancellation is not None and cancellation.requested:
                self.kill()
                raise JobCancelled(f"job {cancellation.job_id} was cancelled while it ran")
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                raise AttemptTimedOut

    def kill(self) -> None:
        """SIGTERM, then SIGKILL after the grace; waits for the end."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        self.connection.close()

    def stop(self) -> None:
        """Ask an idle child to exit; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            _send(self.connection, {"stop": True})
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(KILL_GRACE)
        self.kill()


class HandlerProcesses:
    """A worker's handler processes: one per slot, replaced when killed, dead, or (with
    ``memory_limit``) grown past the limit after a job."""

    def __init__(self, spec: str, size: int, memory_limit: int | None = None) -> None:
        self.spec = spec
        self.size = size
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._idle: list[HandlerProcess] = []
        self._busy: dict[str, HandlerProcess] = {}
        self._closed = False

    def _new(self) -> HandlerProcess:
        return HandlerProcess(self.spec)

    def start(self) -> None:
        """Start every child and wait until each has loaded the app (a ConfigurationError
        when it cannot: the worker does not start)."""
        with self._lock:
            while len(self._idle) + len(self._busy) < self.size:
                self._idle.append(self._new())
            children = list(self._idle)
        try:
            for child in children:
                child.wait_ready(START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def slot(self, job_id: str) -> Iterator[Invoke]:
        with self._lock:
            child = self._idle.pop() if self._idle else self._new()
            self._busy[job_id] = child
        try:
            child.wait_ready(START_TIMEOUT)
            yield child.call
        finally:
            self._give_back(job_id, child)

    def _give_back(self, job_id: str, child: HandlerProcess) -> None:
        over = self.memory_limit is not None and child.rss > self.memory_limit
        healthy = child.alive and not over
        with self._lock:
            self._busy.pop(job_id, None)
            closed = self._closed
            if healthy and not closed:
                self._idle.append(child)
                return
            if not closed:
                self._idle.append(self._new())  # starts loading the app now
        if over:
            log.info(
                "handler process %s uses %d bytes, more than the memory limit of %d; replaced",
                child.process.pid,
                child.rss,
                self.memory_limit,
            )
            child.stop()
        else:
            child.kill()

    def kill(self, job_id: str) -> None:
        with self._lock:
            child = self._busy.get(job_id)
        if child is not None:
            child.kill()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy.values())
        for child in idle:  # asked together, so they exit side by side
            with contextlib.suppress(OSError, ValueError):
                _send(child.connection, {"stop": True})
        for child in idle:
            child.stop()
        for child in busy:
            child.kill()


def app_spec_of(app: object) -> str:
    """``module:attribute`` naming ``app`` in an imported module, for handler processes to
    import it; a ConfigurationError when no module holds it."""
    main_spec = None
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attribute, value in list(namespace.items()):
            if value is not app:
                continue
            if name not in ("__main__", "__mp_main__"):
                return f"{name}:{attribute}"
            path = getattr(module, "__file__", None)
            if main_spec is None and path:
                main_spec = f"{path}:{attribute}"
    if main_spec is not None:
        return main_spec
    raise ConfigurationError(
        'isolation="process" runs handlers in processes that import the app, and no module '
        "holds this app as a global: pass app_spec='module:attribute' naming it"
    )
