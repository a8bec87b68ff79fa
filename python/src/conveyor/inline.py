"""Running sync handlers in the worker's own thread, interrupted by SIGALRM when they must end.

At concurrency 1 a worker in the main thread runs a sync handler itself instead of handing it
to a thread: that saves two thread switches per job, most of a short job's cost. A handler
running there can still be ended at its timeout (TIMEOUT-002) or at the end of a stop's grace
period, as Celery's soft time limits are: a timer raises :class:`Interrupted` inside it. The
exception unwinds the handler's ``finally`` blocks and context managers; a handler that
catches ``BaseException`` and carries on defeats it, and then simply runs to its end.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from .execution import Report


class Interrupted(BaseException):
    """Raised inside a handler whose attempt must end now; carries the outcome to record.

    A BaseException, like KeyboardInterrupt, so that handlers' ``except Exception`` clauses
    do not swallow it."""

    def __init__(self, report: Report) -> None:
        super().__init__(report.event)
        self.report = report


class Alarm:
    """A one-shot timer that raises :class:`Interrupted` in the main thread (POSIX only)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the signal handler may run while it is held
        self._deadline = float("inf")
        self._report: Report | None = None
        self._previous: Any = None
        self._armed = False

    @staticmethod
    def available() -> bool:
        return (
            hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        )

    def install(self) -> Callable[[], None]:
        """Take SIGALRM for the worker's lifetime; returns the function that gives it back."""
        self._previous = signal.signal(signal.SIGALRM, self._ring)

        def restore() -> None:
            self.disarm()
            signal.signal(signal.SIGALRM, self._previous)

        return restore

    def arm(self, seconds: float, report: Report) -> None:
        """Ring in ``seconds`` with ``report``, unless it is armed to ring earlier."""
        with self._lock:
            deadline = time.monotonic() + seconds
            if self._armed and deadline >= self._deadline:
                return
            self._armed, self._deadline, self._report = True, deadline, report
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self) -> None:
        with self._lock:
            if not self._armed:  # never armed, or it rang: no timer is running
                return
            self._armed, self._deadline, self._report = False, float("inf"), None
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _ring(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            report, armed = self._report, self._armed
            self._armed, self._deadline, self._report = False, float("inf"), None
        if armed and report is not None:
            raise Interrupted(report)
