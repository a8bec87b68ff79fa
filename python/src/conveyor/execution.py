"""Running one claimed job: its requests in order, each outcome recorded through the machine."""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import codec, failures
from .errors import ConveyorError, StaleLease, UnknownType
from .handlers import JobContext
from .model import Job
from .outcomes import Die, PermanentError, TemporaryError, Waiting
from .resilience import retry_while_unavailable

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True)
class Report:
    """The event a request's outcome fires, with its parameters."""

    event: str
    params: dict[str, Any]
    die: bool = False


@dataclass(frozen=True)
class Executed:
    job: Job
    die: bool


@dataclass(frozen=True)
class Performed:
    """A job whose handlers ran, with the report that records its outcome."""

    job: Job
    current: Job  # as last written (a multi-request job records each success on the way)
    event: str
    params: dict[str, Any]
    update: dict[str, Any]
    die: bool


def _error(
    kind: str, error: BaseException, traceback_of: BaseException | None = None
) -> dict[str, Any]:
    """The recorded error: message and type bounded, with the traceback (OUT-009)."""
    return failures.record(kind, error, traceback_of)


def _refused_its_arguments(error: BaseException) -> bool:
    """A TypeError raised by the call of the handler itself, before any of its code ran.

    The arguments were bound to the signature ``inspect`` reports, so the function cannot
    be called the way that signature says (``functools.wraps`` shows the wrapped function's
    signature over a wrapper that takes other arguments). Its traceback then holds the
    caller's frame only; an error raised inside the handler has the handler's frames too.
    """
    tb = error.__traceback__
    return isinstance(error, TypeError) and tb is not None and tb.tb_next is None


def classify(error: BaseException) -> Report:
    """Map a handler's exception to the event it fires (spec.md#outcomes)."""
    if isinstance(error, Waiting):
        return Report("wait", {"delay_ms": error.delay_ms} if error.delay_ms is not None else {})
    if isinstance(error, PermanentError):
        return Report("fail_permanently", {"error": _error("permanent", error)})
    if isinstance(error, Die):
        cause = error.__cause__
        underlying = classify(cause) if cause is not None and not isinstance(cause, Die) else None
        if underlying is None or underlying.event == "wait":
            underlying = Report("fail_permanently", {"error": _error("permanent", error)})
        return Report(underlying.event, underlying.params, die=True)
    params: dict[str, Any] = {"error": _error("temporary", error)}
    if isinstance(error, TemporaryError) and error.retry_after_ms is not None:
        params["retry_after_ms"] = error.retry_after_ms
    return Report("fail_temporarily", params)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM: dict[int, int] = {}  # pid -> descriptor of that process's /proc/self/statm


def resident_memory() -> int:
    """Resident set size in bytes (Linux /proc; falls back to the peak elsewhere).

    Read twice per job, so the file stays open and is re-read in place (pread) rather than
    opened each time; a forked child opens its own, since /proc/self was resolved at open.
    """
    try:
        pid = os.getpid()
        if pid not in _STATM:
            for inherited in _STATM.values():  # a parent's, copied by fork
                os.close(inherited)
            _STATM.clear()
            _STATM[pid] = os.open("/proc/self/statm", os.O_RDONLY)
        return int(os.pread(_STATM[pid], 128, 0).split()[1]) * _PAGE_SIZE
    except OSError:
        return peak_memory()


def peak_memory() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Heartbeat:
    """One long-lived thread per runner that extends the leases of the jobs it holds.

    A handler may block for minutes; its lease is renewed every ``interval`` seconds.
    Holding a job costs a dict entry, not a thread start and join per job.
    """

    def __init__(self, beat: Callable[[str, int], None], interval: float) -> None:
        self._beat = beat
        self._interval = interval
        self._held: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, token: int) -> None:
        """Keep the job's lease alive until :meth:`release`."""
        with self._lock:
            self._held[job_id] = (token, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="conveyor-heartbeat", daemon=True
                )
                self._thread.start()

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval / 4)
            now = time.monotonic()
            with self._lock:
                due = [
                    (job_id, token)
                    for job_id, (token, last) in self._held.items()
                    if now - last >= self._interval
                ]
            for job_id, token in due:
                self._beat_one(job_id, token, now)

    def _beat_one(self, job_id: str, token: int, now: float) -> None:
        with self._lock:
            if self._held.get(job_id, (None,))[0] != token:
                return  # the job was released meanwhile
            self._held[job_id] = (token, now)
        try:
            self._beat(job_id, token)
        except StaleLease:
            log.warning(
                "job %s: lease lost while its handler runs; the result will be discarded", job_id
            )
            with self._lock:
                self._held.pop(job_id, None)
        except Exception:
            log.exception("heartbeat for job %s failed; retrying at the next interval", job_id)


class JobRunner:
    """Runs claimed jobs for an app, with hooks, heartbeats and outcome recording."""

    def __init__(self, app: Conveyor, worker_id: str, lease_ms: int) -> None:
        self.app = app
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.heartbeat = Heartbeat(self._beat, max(lease_ms / 3000, 0.05))

    def _beat(self, job_id: str, token: int) -> None:
        self.app.heartbeat(job_id, token, self.lease_ms)

    def run(self, job: Job) -> Executed:
        return self.record(self.perform(job))

    def perform(self, job: Job) -> Performed:
        """Run the job's handlers; its outcome is returned, not yet recorded."""
        assert job.lease is not None, "only claimed jobs run"
        token = job.lease.token
        started = time.monotonic()
        memory_before = resident_memory()
        # Held until its outcome is recorded (release): a worker may record it later, with
        # the rest of its batch, and the lease must not lapse meanwhile.
        self.heartbeat.hold(job.id, token)
        try:
            report, current = self._run_requests(job, token)
        except BaseException:
            self.heartbeat.release(job.id)
            raise
        execution = {
            "pid": os.getpid(),
            "worker_id": self.worker_id,
            "memory_before": memory_before,
            "memory_after": resident_memory(),
            "memory_peak": peak_memory(),
            "duration_ms": int((time.monotonic() - started) * 1000),
        }
        metadata = job.metadata  # the same object when unchanged: its column is not rewritten
        if self.app.hooks.metadata:
            metadata = dict(metadata)
            for provider in self.app.hooks.metadata:
                metadata.update(codec.encode(provider(job) or {}, "job metadata"))
        return Performed(
            job=job,
            current=current,
            event=report.event,
            params={**report.params, "lease_token": token},
            update={"execution": execution, "metadata": metadata},
            die=report.die,
        )

    def release(self, performed: Sequence[Performed]) -> None:
        """Stop heart-beating jobs whose outcomes are about to be written."""
        for each in performed:
            self.heartbeat.release(each.job.id)

    def hold(self, performed: Sequence[Performed]) -> None:
        """Heart-beat again jobs whose outcomes could not be written (written later)."""
        for each in performed:
            assert each.job.lease is not None
            self.heartbeat.hold(each.job.id, each.job.lease.token)

    def record(self, performed: Performed) -> Executed:
        """Record the outcome on its own (retrying while the database is away), then hooks."""
        self.release([performed])
        try:
            # The work is done: keep trying to record it while the lease can still be valid.
            final = retry_while_unavailable(
                lambda: self.app.report(
                    performed.job.id,
                    performed.event,
                    performed.params,
                    update=performed.update,
                    known=performed.current,
                ),
                give_up_after=self.lease_ms / 1000,
            )
        except StaleLease as error:
            log.warning("job %s: %s", performed.job.id, error)
            final = self.app.get(performed.job.id)
        return self.finish(performed, final)

    def finish(self, performed: Performed, final: Job) -> Executed:
        """After the outcome is recorded: the after-job hooks."""
        for hook in self.app.hooks.after:
            self._call_hook(hook, final)
        return Executed(final, performed.die)

    def _run_requests(self, job: Job, token: int) -> tuple[Report, Job]:
        """Run requests until one does not succeed or none remain; the last report is
        returned unrecorded, with the job as last written."""
        try:
            for hook in self.app.hooks.before:
                hook(job)
        except Exception as error:
            log.warning("job %s: a before_job hook raised %s", job.id, failures.log_text(error))
            return classify(error), job
        current = job
        while True:
            index = current.current_index
            assert index is not None
            report = self._run_one(current, index)
            if report.event != "succeed" or current.requests_remaining == 1:
                return report, current
            current = self.app.report(current.id, "succeed", {"lease_token": token}, known=current)

    def _run_one(self, job: Job, index: int) -> Report:
        request = job.requests[index]
        try:
            handler = self.app.handlers.get(request.type)
        except UnknownType as error:
            return Report("fail_permanently", {"error": _error("permanent", error)})
        context = JobContext(
            job_id=job.id,
            request_index=index,
            request_type=request.type,
            attempt=job.attempts,
            queue=job.queue,
            priority=job.priority,
            tags=job.tags,
            metadata=job.metadata,
            identifier=job.identifier,
            serial_group=job.serial_group,
            worker_id=self.worker_id,
        )
        # OUT-003: a payload that cannot be decoded, or does not fit the handler, is a
        # programming error: permanent, never retried.
        try:
            payload = codec.decode(request.payload)
        except Exception as error:
            return self._unfit(
                job,
                request.type,
                f"the payload cannot be decoded ({failures.log_text(error)}): a typed value in "
                "it is malformed (spec.md#codec); publish it again with a valid one",
            )
        try:
            bound = handler.bind(payload, context)
        except (TypeError, ValueError) as error:  # ValueError: no signature inspect can read
            return self._unfit(
                job,
                request.type,
                f"payload does not fit handler {request.type!r}: {failures.cut(str(error), 500)}; "
                "publish a payload whose keys match the handler's parameters (a dict is passed "
                "as keyword arguments, any other value as the one positional argument)",
            )
        try:
            handler.function(*bound.args, **bound.kwargs)
        except Exception as error:
            if _refused_its_arguments(error):
                return self._unfit(
                    job,
                    request.type,
                    f"handler {request.type!r} refused the arguments its signature accepts: "
                    f"{failures.cut(str(error), 500)}; a decorator that hides the signature must "
                    "pass every argument on (use functools.wraps and *args, **kwargs)",
                    error,
                )
            report = classify(error)
            if report.event != "wait":
                for hook in self.app.hooks.error:
                    try:
                        hook(job, error)
                    except Die as die:
                        if die.__cause__ is None:
                            die.__cause__ = error
                        report = classify(die)
                    except Exception:
                        log.exception("on_error hook %r raised; ignored", hook)
            if not isinstance(error, PermanentError | TemporaryError | Waiting | Die):
                recorded = report.params.get("error") or {}
                log.warning(
                    "job %s request %s failed at attempt %s:\n%s",
                    job.id,
                    request.type,
                    job.attempts,
                    (recorded.get("traceback") or failures.log_text(error)).rstrip("\n"),
                )
            return report
        return Report("succeed", {})

    @staticmethod
    def _unfit(
        job: Job, request_type: str, message: str, cause: BaseException | None = None
    ) -> Report:
        """A permanent error for a request that cannot run as published (OUT-003), logged
        once; ``cause``'s traceback is recorded with it."""
        problem = PermanentError(message)
        log.warning("job %s request %s cannot run: %s", job.id, request_type, message)
        return Report("fail_permanently", {"error": _error("permanent", problem, cause)})

    @staticmethod
    def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except ConveyorError:
            raise
        except Exception:
            log.exception("hook %r raised; ignored", hook)
