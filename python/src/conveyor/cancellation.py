"""Cancel requests of running jobs, as this process learns of them (spec.md#cancel-running).

The store records a cancel request on the job (CANCEL-001) and the answer to a heartbeat
tells the worker (CANCEL-002), which turns it into a :class:`Cancellation` the handler can
see: a sync handler polls it (:func:`cancel_requested`, :func:`check_cancelled`, or its
:class:`~conveyor.JobContext`); an async handler's task is cancelled on the event loop.
Nothing here is the source of truth: a request the worker has not seen yet still decides the
job when the attempt ends (CANCEL-004), through the machine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .outcomes import JobCancelled


class Cancellation:
    """The cancel request of one attempt (a job under one lease token)."""

    def __init__(self, job_id: str, token: int) -> None:
        self.job_id = job_id
        self.token = token
        self._requested = False
        self._event: threading.Event | None = None  # made for the first wait: most never do
        self._lock = threading.Lock()
        self._tasks: list[asyncio.Task[object]] = []  # running the handler now
        self._delivered: list[asyncio.Task[object]] = []  # of those, cancelled by the request

    @property
    def requested(self) -> bool:
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a cancel is requested or ``timeout`` seconds passed; True when it
        was: a handler that waits between steps waits here instead of sleeping."""
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
                if self._requested:
                    self._event.set()
            event = self._event
        return event.wait(timeout)

    def check(self) -> None:
        """Raise :class:`JobCancelled` when a cancel was requested."""
        if self._requested:
            raise JobCancelled(f"job {self.job_id} was cancelled while it ran")

    def request(self) -> None:
        """Mark the attempt cancelled (from any thread) and cancel its async handler's task."""
        with self._lock:
            if self._requested:
                return
            self._requested = True
            if self._event is not None:
                self._event.set()
            tasks = list(self._tasks)
        for task in tasks:
            task.get_loop().call_soon_threadsafe(self._deliver, task)

    def _deliver(self, task: asyncio.Task[object]) -> None:
        """Cancel ``task`` (on its loop) if it still runs the handler: the task goes on to
        other work once the handler's block ended, and that must not be cancelled."""
        with self._lock:
            if task not in self._tasks or task in self._delivered:
                return
            self._delivered.append(task)
        task.cancel()

    def delivered(self, task: asyncio.Task[object]) -> bool:
        """Whether the request cancelled ``task`` (within :meth:`cancelling`)."""
        with self._lock:
            return task in self._delivered

    @contextmanager
    def cancelling(self, task: asyncio.Task[object]) -> Iterator[None]:
        """While the block runs, a request cancels ``task`` (called on ``task``'s loop)."""
        with self._lock:
            self._tasks.append(task)
            already = self._requested
        if already:
            self._deliver(task)
        try:
            yield
        finally:
            with self._lock:
                self._tasks.remove(task)
                if task in self._delivered:
                    self._delivered.remove(task)


class Cancellations:
    """The attempts this app's workers run, by job id, for the heartbeat to signal."""

    def __init__(self) -> None:
        self._running: dict[str, Cancellation] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str, token: int) -> Cancellation:
        cancellation = Cancellation(job_id, token)
        with self._lock:
            self._running[job_id] = cancellation
        return cancellation

    def end(self, cancellation: Cancellation) -> None:
        with self._lock:
            if self._running.get(cancellation.job_id) is cancellation:
                del self._running[cancellation.job_id]

    def request(self, job_id: str, token: int) -> bool:
        """Signal the attempt of ``job_id`` under ``token``, if this process runs it."""
        with self._lock:
            cancellation = self._running.get(job_id)
        if cancellation is None or cancellation.token != token:
            return False
        cancellation.request()
        return True


_current: ContextVar[Cancellation | None] = ContextVar("conveyor_cancellation", default=None)


@contextmanager
def running(cancellation: Cancellation) -> Iterator[None]:
    """Make ``cancellation`` the current one for the handler called in the block."""
    reset = _current.set(cancellation)
    try:
        yield
    finally:
        _current.reset(reset)


def current() -> Cancellation | None:
    """The cancel request of the attempt this code runs in; None outside a handler."""
    return _current.get()


def cancel_requested() -> bool:
    """Whether the job whose handler calls this was asked to cancel while it runs
    (CANCEL-002); False outside a handler run by a worker."""
    cancellation = _current.get()
    return cancellation is not None and cancellation.requested


def check_cancelled() -> None:
    """Raise :class:`~conveyor.JobCancelled` when the running job's cancel was requested.

    Call it between steps of a long handler; the worker then reports the outcome
    ``cancelled`` and the job ends ``cancelled`` without a retry (CANCEL-003)."""
    cancellation = _current.get()
    if cancellation is not None:
        cancellation.check()
