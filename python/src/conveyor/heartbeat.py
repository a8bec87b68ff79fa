"""One heartbeat thread per app: it extends the lease of every job the app's workers hold."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import StaleLease
from .resilience import describe, is_transient

log = logging.getLogger("conveyor.worker")

# Leases are renewed when a third of them has passed (LEASE-008), never more often than this.
SHORTEST_INTERVAL = 0.05


@dataclass
class _Held:
    token: int
    lease_ms: int
    last_beat: float  # monotonic

    @property
    def interval(self) -> float:
        return max(self.lease_ms / 3000, SHORTEST_INTERVAL)


class Heartbeat:
    """Renews the leases of held jobs from one thread, however many jobs or workers run.

    A handler may block for minutes; its lease is renewed every third of its length. Holding
    a job costs a dict entry, not a thread. The thread starts with the first hold and is
    stopped and joined by :meth:`close`, so ``run_now()`` in a loop leaves no threads behind.
    """

    def __init__(
        self,
        beat: Callable[[str, int, int], object],
        on_cancel: Callable[[str, int], object] | None = None,
    ) -> None:
        self._beat = beat
        # Told of a job whose heartbeat answer carries a cancel request (CANCEL-002).
        self._on_cancel = on_cancel
        self._held: dict[str, _Held] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wakes_at = float("inf")  # monotonic time the thread sleeps until

    def hold(self, job_id: str, token: int, lease_ms: int) -> None:
        """Keep the job's lease (of ``lease_ms``) alive until :meth:`release`."""
        with self._changed:
            held = self._held[job_id] = _Held(token, lease_ms, time.monotonic())
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="conveyor-heartbeat", daemon=True
                )
                self._thread.start()
            # Wake the thread only if this lease is due before it would wake anyway: holding
            # a job must not cost a thread switch (jobs of one lease length never do).
            if held.last_beat + held.interval < self._wakes_at:
                self._changed.notify()

    def release(self, job_id: str) -> None:
        with self._changed:
            self._held.pop(job_id, None)

    def holds(self, job_id: str) -> bool:
        with self._changed:
            return job_id in self._held

    @property
    def held(self) -> frozenset[str]:
        with self._changed:
            return frozenset(self._held)

    def close(self) -> None:
        """Stop renewing (leases then lapse) and join the thread."""
        with self._changed:
            self._closed = True
            self._held.clear()
            thread, self._thread = self._thread, None
            self._changed.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                now = time.monotonic()
                due = [
                    (job_id, held.token, held.lease_ms)
                    for job_id, held in self._held.items()
                    if now - held.last_beat >= held.interval
                ]
                for job_id, _, _ in due:
                    self._held[job_id].last_beat = now
                if not due:
                    self._wakes_at = min(
                        (held.last_beat + held.interval for held in self._held.values()),
                        default=now + 3600,
                    )
                    self._changed.wait(max(self._wakes_at - now, 0.001))
                    self._wakes_at = float("inf")
                    continue
            for job_id, token, lease_ms in due:
                self._beat_one(job_id, token, lease_ms)

    def _beat_one(self, job_id: str, token: int, lease_ms: int) -> None:
        with self._changed:
            held = self._held.get(job_id)
            if held is None or held.token != token:
                return  # released meanwhile
        try:
            answer = self._beat(job_id, token, lease_ms)
            if self._on_cancel is not None and getattr(answer, "cancel_requested", False):
                self._on_cancel(job_id, token)
        except StaleLease:
            log.warning(
                "job %s: lease lost while its handler runs; the result will be discarded", job_id
            )
            with self._changed:
                if (held := self._held.get(job_id)) is not None and held.token == token:
                    del self._held[job_id]
        except Exception as error:
            if is_transient(error):  # the database is away: one line, as the worker logs it
                log.warning(
                    "heartbeat for job %s: %s; retrying at the next interval",
                    job_id,
                    describe(error),
                )
            else:
                log.exception("heartbeat for job %s failed; retrying at the next interval", job_id)
