"""Running one claimed job: its requests in order, each outcome recorded through the machine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from . import cancellation as cancellations
from . import codec, failures
from .cancellation import Cancellation, Cancellations
from .counting import PendingCounts
from .errors import (
    ConveyorError,
    InvalidPayload,
    JobTimeout,
    PayloadTooLarge,
    StaleLease,
    UnknownType,
)
from .eventloop import LoopThread
from .handlers import HandlerRegistry, JobContext
from .heartbeat import Heartbeat
from .hooks import Attempt, Hooks, around
from .model import Job
from .outcomes import Die, JobCancelled, PermanentError, TemporaryError, Waiting
from .resilience import retry_while_unavailable
from .results import encode_result
from .threads import DaemonThreads

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True)
class Report:
    """The event a request's outcome fires, with its parameters."""

    event: str
    params: dict[str, Any]
    die: bool = False
    result: Any = None  # encoded: the return value of the last request (RESULT-001)


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


def refused_its_arguments(error: BaseException) -> bool:
    """A TypeError raised by the call of the handler itself, before any of its code ran.

    The arguments were bound to the signature ``inspect`` reports, so the function cannot
    be called the way that signature says (``functools.wraps`` shows the wrapped function's
    signature over a wrapper that takes other arguments). Its traceback then holds the
    caller's frame only; an error raised inside the handler has the handler's frames too.
    """
    tb = error.__traceback__
    return isinstance(error, TypeError) and tb is not None and tb.tb_next is None


def _nothing_to_run(job: Job) -> Report:
    """A claimed job whose requests all succeeded: its row was moved out of ``finished`` by
    hand (an UPDATE of its state). Nothing can run; say so on the job instead of crashing."""
    problem = PermanentError(
        f"job {job.id} has no request left to run: every request already succeeded (its state "
        "was probably changed in the database by hand); publish a new job to run the work again"
    )
    return Report("fail_permanently", {"error": _error("permanent", problem)})


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


class RecentReading:
    """A reading of the process (a number) that callers may take from a recent one: each
    call says how old a reading it accepts, so the same reader serves a worker with many
    slots (which reuses readings) and one that wants each job's own."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self._last = (-math.inf, 0)  # (monotonic time, value): one tuple, replaced whole

    def __call__(self, max_age: float = 0.0) -> int:
        now = time.monotonic()
        taken, value = self._last
        if max_age > 0 and now - taken < max_age:
            return value
        value = self._read()
        self._last = (now, value)
        return value


def _read_resident_memory() -> int:
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
        return _read_peak_memory()


def _read_peak_memory() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# The process's resident and peak memory in bytes; ``max_age`` seconds: a reading that
# recent is reused. Reading /proc releases the interpreter lock, and with many jobs at once
# each job would wait to take it back; getrusage sums over every thread of the process; and a
# reading per job says little when many jobs share the process.
resident_memory = RecentReading(_read_resident_memory)
peak_memory = RecentReading(_read_peak_memory)


class RunnerHost(Protocol):
    """What running a job needs from the app: its handlers, hooks and a way to report."""

    @property
    def handlers(self) -> HandlerRegistry: ...

    @property
    def hooks(self) -> Hooks: ...

    def report(
        self,
        job_id: str,
        event: str,
        params: dict[str, Any],
        update: dict[str, Any] | None = None,
        known: Job | None = None,
    ) -> Job: ...

    def get(self, job_id: str) -> Job: ...

    def report_progress(
        self, job_id: str, lease_token: int, percent: float | None, message: str | None
    ) -> Job: ...

    @property
    def event_counts(self) -> PendingCounts:
        """Where failed attempts are counted for the metrics (counting.py)."""
        ...

    def release_thread(self) -> None:
        """Return the calling thread's database connections (the thread is ending)."""
        ...


@dataclass
class _Progress:
    """The job as last written while its requests run (a multi-request job records each
    success on the way); read when the attempt is cut short by its timeout."""

    current: Job


@dataclass(frozen=True)
class HandlerCall:
    """One call of a request's handler, with what a handler process needs to make it itself:
    the stored (encoded) payload and the context."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_async: bool
    payload: Any
    context: JobContext
    last: bool  # the job's last request: its value is the job's result


@dataclass(frozen=True)
class Encoded:
    """A handler's value already encoded where it ran (a handler process): the stored result,
    or why it cannot be stored."""

    result: Any = None
    problem: str | None = None


class AttemptTimedOut(BaseException):
    """Raised by an :data:`Invoke` at the attempt's deadline, once the handler was stopped."""


# Runs a sync handler call elsewhere (a handler process) until the monotonic deadline.
Invoke = Callable[[HandlerCall, float | None], Any]


class Isolation(Protocol):
    """Where a worker's sync handlers run when not in its own threads (isolation.py)."""

    def slot(self, job_id: str) -> AbstractContextManager[Invoke]:
        """A handler process for the attempt of ``job_id``, ready to take calls."""
        ...

    def kill(self, job_id: str) -> None:
        """Stop the handler of ``job_id`` now (the worker gave up on it)."""
        ...

    def close(self) -> None: ...


SUCCEEDED = Report("succeed", {})
# CANCEL-003: the handler stopped at its job's cancel request.
CANCELLED = Report("confirm_cancel", {})


class JobRunner:
    """Runs claimed jobs of an app: hooks, handlers (sync or async), outcome recording.

    Sync handlers run in the calling thread; ``async def`` handlers run on the app's event
    loop (:class:`~conveyor.eventloop.LoopThread`), awaited by :meth:`perform_async` or, from
    a thread, by :meth:`perform`. Leases are kept alive by the app's one heartbeat.
    """

    def __init__(
        self,
        host: RunnerHost,
        worker_id: str,
        lease_ms: int,
        heartbeat: Heartbeat,
        loop: LoopThread,
        cancellations: Cancellations | None = None,
    ) -> None:
        self.host = host
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.heartbeat = heartbeat
        self.loop = loop
        # Sync handlers run in handler processes instead of the calling thread (workers only).
        self.isolation: Isolation | None = None
        self.cancellations = cancellations or Cancellations()
        # Seconds a memory reading of the process may be reused (see resident_memory); a
        # worker with many slots sets it, so each job's reading costs no system call.
        self.memory_age = 0.0

    def run(self, job: Job) -> Executed:
        """Run the job in this thread and record its outcome (direct execution). A sync
        handler with a timeout runs in a thread of its own, so that the attempt ends at its
        timeout (TIMEOUT-002) even though that thread cannot be stopped (TIMEOUT-003)."""
        timeout = timeout_of(job)
        if timeout is None or self.is_async(job):
            return self.record(self.perform(job))
        pool = DaemonThreads(1, "conveyor-timed", on_exit=self.host.release_thread)
        future = pool.submit(self.perform, job)
        pool.shutdown()
        try:
            performed = future.result(timeout)
        except concurrent.futures.TimeoutError:
            self.heartbeat.release(job.id)
            performed = self.abandoned(job, timed_out(timeout))
        return self.record(performed)

    def is_async(self, job: Job) -> bool:
        """Whether a request still to run has an ``async def`` handler (the job then runs on
        the event loop; its sync handlers, if any, in a thread of the loop's executor)."""
        index = job.current_index or 0
        handlers = self.host.handlers
        return any(
            request.type in handlers and handlers.get(request.type).is_async
            for request in job.requests[index:]
        )

    def perform(self, job: Job) -> Performed:
        """Run the job's handlers; its outcome is returned, not yet recorded. An async job's
        timeout is enforced here (its task is cancelled); a sync one's by the caller."""
        if self.is_async(job):
            return self.loop.run(self.perform_async(job, timeout_of(job)))
        if self.isolation is None:
            return self._perform_sync(job, None)
        with self.isolation.slot(job.id) as invoke:
            return self._perform_sync(job, invoke)

    def _perform_sync(self, job: Job, invoke: Invoke | None) -> Performed:
        """A sync attempt; with ``invoke`` (a handler process) its timeout is enforced here,
        since that handler can be killed."""
        token, started, memory_before = self._start(job)
        timeout = timeout_of(job) if invoke is not None else None
        deadline = None if timeout is None else started + timeout
        progress = _Progress(job)
        cancellation = self.cancellations.start(job.id, token)
        try:
            with (
                cancellations.running(cancellation),
                around(self.host.hooks.around_attempt, Attempt(job)) as attempt,
            ):
                try:
                    report, current = self._run_requests(
                        job, token, cancellation, progress, invoke, deadline
                    )
                except AttemptTimedOut:
                    report, current = timed_out(timeout or 0), progress.current
                attempt.event, attempt.error = report.event, report.params.get("error")
        except BaseException:
            self.heartbeat.release(job.id)
            raise
        finally:
            self.cancellations.end(cancellation)
        return self._performed(job, current, report, started, memory_before)

    async def perform_async(self, job: Job, timeout: float | None = None) -> Performed:
        """:meth:`perform` on the event loop; ``timeout`` seconds cut the attempt short (the
        handler is cancelled and the outcome is a temporary error of kind ``timeout``)."""
        token, started, memory_before = self._start(job)
        progress = _Progress(job)
        cancellation = self.cancellations.start(job.id, token)
        try:
            with (
                cancellations.running(cancellation),
                around(self.host.hooks.around_attempt, Attempt(job)) as attempt,
            ):
                try:
                    report, current = await asyncio.wait_for(
                        self._run_requests_async(job, token, progress, cancellation), timeout
                    )
                except TimeoutError:
                    report, current = timed_out(timeout or 0), progress.current
                attempt.event, attempt.error = report.event, report.params.get("error")
        except BaseException:
            self.heartbeat.release(job.id)
            raise
        finally:
            self.cancellations.end(cancellation)
        return self._performed(job, current, report, started, memory_before)

    def _start(self, job: Job) -> tuple[int, float, int]:
        assert job.lease is not None, "only claimed jobs run"
        # Held until its outcome is recorded (release): a worker may record it later, with
        # the rest of its batch, and the lease must not lapse meanwhile.
        self.heartbeat.hold(job.id, job.lease.token, self.lease_ms)
        return job.lease.token, time.monotonic(), resident_memory(self.memory_age)

    def _performed(
        self, job: Job, current: Job, report: Report, started: float, memory_before: int
    ) -> Performed:
        assert job.lease is not None
        execution = {
            "pid": os.getpid(),
            "worker_id": self.worker_id,
            "memory_before": memory_before,
            "memory_after": resident_memory(self.memory_age),
            "memory_peak": peak_memory(self.memory_age),
            "duration_ms": int((time.monotonic() - started) * 1000),
            "start_delay_ms": start_delay_ms(job),
        }
        metadata = job.metadata  # the same object when unchanged: its column is not rewritten
        if self.host.hooks.metadata:
            metadata = dict(metadata)
            for provider in self.host.hooks.metadata:
                metadata.update(codec.encode(provider(job) or {}, "job metadata"))
        update = {"execution": execution, "metadata": metadata}
        if report.result is not None:
            update["result"] = report.result
        return Performed(
            job=job,
            current=current,
            event=report.event,
            params={**report.params, "lease_token": job.lease.token},
            update=update,
            die=report.die,
        )

    def abandoned(self, job: Job, report: Report) -> Performed:
        """The outcome of an attempt the worker gave up waiting for (a timed-out thread, or a
        job still running at the end of a stop's grace period)."""
        assert job.lease is not None
        return Performed(
            job=job,
            current=job,
            event=report.event,
            params={**report.params, "lease_token": job.lease.token},
            update={},
            die=False,
        )

    def release(self, performed: Sequence[Performed]) -> None:
        """Stop heart-beating jobs whose outcomes are about to be written."""
        for each in performed:
            self.heartbeat.release(each.job.id)

    def hold(self, performed: Sequence[Performed]) -> None:
        """Heart-beat again jobs whose outcomes could not be written (written later)."""
        for each in performed:
            assert each.job.lease is not None
            self.heartbeat.hold(each.job.id, each.job.lease.token, self.lease_ms)

    def record(self, performed: Performed) -> Executed:
        """Record the outcome on its own (retrying while the database is away), then hooks."""
        self.release([performed])
        try:
            # The work is done: keep trying to record it while the lease can still be valid.
            final = retry_while_unavailable(
                lambda: self.host.report(
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
            final = self.host.get(performed.job.id)
        return self.finish(performed, final)

    def finish(self, performed: Performed, final: Job) -> Executed:
        """After the outcome is recorded: the metrics' count of failures, the after-job
        hooks."""
        self.host.event_counts.attempted(
            performed.job, performed.event, performed.params.get("error")
        )
        for hook in self.host.hooks.after:
            self._call_hook(hook, final)
        return Executed(final, performed.die)

    def _before(self, job: Job) -> Report | None:
        try:
            for hook in self.host.hooks.before:
                hook(job)
        except Exception as error:
            log.warning("job %s: a before_job hook raised %s", job.id, failures.log_text(error))
            return classify(error)
        return None

    def _run_requests(
        self,
        job: Job,
        token: int,
        cancellation: Cancellation,
        progress: _Progress,
        invoke: Invoke | None = None,
        deadline: float | None = None,
    ) -> tuple[Report, Job]:
        """Run requests until one does not succeed or none remain; the last report is
        returned unrecorded, with the job as last written. ``invoke`` runs each handler
        elsewhere (a handler process), until ``deadline``. A cancel request stops it at the
        next request (CANCEL-004: the success is recorded, the rest is cancelled)."""
        failed = self._before(job)
        if failed is not None:
            return failed, job
        current = job
        if current.current_index is None:
            return _nothing_to_run(job), current
        while True:
            index = current.current_index
            assert index is not None
            call = self._prepare(current, index, cancellation)
            if isinstance(call, Report):
                report = call
            else:
                try:
                    if invoke is not None:
                        value = invoke(call, deadline)
                    else:
                        value = call.function(*call.args, **call.kwargs)
                    if inspect.isawaitable(value):  # a callable returning a coroutine
                        value = self.loop.run(_awaited(value))
                    report = succeeded(current, value)
                except Exception as error:
                    report = self._failure(current, index, error, cancellation)
            if report.event != "succeed" or current.requests_remaining == 1:
                return report, current
            if cancellation.requested:
                return report, current
            current = self.host.report(current.id, "succeed", {"lease_token": token}, known=current)
            progress.current = current
            if current.lease is None:  # a cancel request this worker had not seen: it ended
                return _ended_meanwhile(current), current

    async def _run_requests_async(
        self, job: Job, token: int, progress: _Progress, cancellation: Cancellation
    ) -> tuple[Report, Job]:
        """:meth:`_run_requests` on the event loop: async handlers are awaited, sync ones
        (and the database writes between requests) run in the loop's thread pool."""
        failed = self._before(job)
        if failed is not None:
            return failed, job
        current = job
        if current.current_index is None:
            return _nothing_to_run(job), current
        while True:
            index = current.current_index
            assert index is not None
            call = self._prepare(current, index, cancellation)
            if isinstance(call, Report):
                report = call
            else:
                try:
                    if call.is_async:
                        value = await _cancellable(call, cancellation)
                    else:
                        value = await asyncio.to_thread(call.function, *call.args, **call.kwargs)
                        if inspect.isawaitable(value):
                            value = await value
                    report = succeeded(current, value)
                except _Stopped:
                    report = CANCELLED
                except Exception as error:
                    report = self._failure(current, index, error, cancellation)
            if report.event != "succeed" or current.requests_remaining == 1:
                return report, current
            if cancellation.requested:
                return report, current
            current = await asyncio.to_thread(
                self.host.report, current.id, "succeed", {"lease_token": token}, None, current
            )
            progress.current = current
            if current.lease is None:
                return _ended_meanwhile(current), current

    def _prepare(self, job: Job, index: int, cancellation: Cancellation) -> HandlerCall | Report:
        """The handler call for request ``index``, or the report of why it cannot be made."""
        request = job.requests[index]
        try:
            handler = self.host.handlers.get(request.type)
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
            reporter=self._reporter(job),
            cancellation=cancellation,
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
        return HandlerCall(
            handler.function,
            bound.args,
            bound.kwargs,
            handler.is_async,
            request.payload,
            context,
            job.requests_remaining == 1,
        )

    def _reporter(self, job: Job) -> Callable[[float | None, str | None], None]:
        assert job.lease is not None
        job_id, token = job.id, job.lease.token

        def report(percent: float | None, message: str | None) -> None:
            self.host.report_progress(job_id, token, percent, message)

        return report

    def _failure(
        self, job: Job, index: int, error: Exception, cancellation: Cancellation
    ) -> Report:
        """The report of a handler that raised ``error``, after the on_error hooks."""
        if isinstance(error, JobCancelled) and cancellation.requested:
            return CANCELLED  # CANCEL-003; raised without a request, it is temporary
        request_type = job.requests[index].type
        if refused_its_arguments(error) or getattr(error, "refused_arguments", False):
            return self._unfit(
                job,
                request_type,
                f"handler {request_type!r} refused the arguments its signature accepts: "
                f"{failures.cut(str(error), 500)}; a decorator that hides the signature must "
                "pass every argument on (use functools.wraps and *args, **kwargs)",
                error,
            )
        report = classify(error)
        if report.event != "wait":
            for hook in self.host.hooks.error:
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
                request_type,
                job.attempts,
                (recorded.get("traceback") or failures.log_text(error)).rstrip("\n"),
                extra={"job_id": job.id, "type": request_type, "attempt": job.attempts},
            )
        return report

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


def succeeded(job: Job, value: Any) -> Report:
    """The report of a request whose handler returned ``value``. The last request's value is
    the job's result (RESULT-001); one that cannot be stored makes the outcome a permanent
    error naming the limit it broke (RESULT-002). Earlier requests' values are not kept."""
    if isinstance(value, Encoded):  # encoded in a handler process
        if value.problem is not None:
            return _unstorable(job, value.problem)
        value = value.result
        encode: Callable[[Any], Any] = lambda encoded: encoded  # noqa: E731
    else:
        encode = encode_result
    if value is None or job.requests_remaining != 1:
        return SUCCEEDED
    try:
        return Report("succeed", {}, result=encode(value))
    except (InvalidPayload, PayloadTooLarge) as error:
        return _unstorable(job, error.message)


def _unstorable(job: Job, why: str) -> Report:
    problem = PermanentError(f"the handler's result cannot be stored: {why}")
    log.warning("job %s: %s", job.id, problem)
    return Report("fail_permanently", {"error": _error("permanent", problem)})


def _ended_meanwhile(job: Job) -> Report:
    """The report after a success between requests ended the job (CANCEL-004: a cancel was
    requested): nothing is left to record, and the report is refused as stale."""
    log.info(
        "job %s ended %s between its requests; its next request does not run", job.id, job.state
    )
    return CANCELLED


def start_delay_ms(job: Job) -> int:
    """How long the claimed ``job`` waited for its first attempt: from when it was due (its
    publish, or the later time it was published for) to the claim, which wrote
    ``updated_at``. Kept from the first attempt's record on later attempts."""
    earlier = (job.execution or {}).get("start_delay_ms")
    if job.attempts > 1 and isinstance(earlier, int):
        return earlier
    due = max(job.created_at, job.available_at)
    return max(0, round((job.updated_at - due).total_seconds() * 1000))


def timeout_of(job: Job) -> float | None:
    """The job's timeout in seconds (TIMEOUT-001), or None."""
    return None if job.timeout_ms is None else job.timeout_ms / 1000


def timed_out(seconds: float) -> Report:
    """The report of an attempt cut short by its timeout: a temporary error (TIMEOUT-001)."""
    error = JobTimeout(f"the attempt ran longer than its timeout of {seconds:g} s")
    return Report("fail_temporarily", {"error": _error("timeout", error)})


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Stopped(Exception):
    """An async handler's task was cancelled by its job's cancel request (CANCEL-002)."""


async def _cancellable(call: HandlerCall, cancellation: Cancellation) -> Any:
    """Await an async handler in the running task, which a cancel request cancels.

    The handler sees ``asyncio.CancelledError`` at its next suspension point; if it lets it
    out, the attempt ends :class:`_Stopped`. A cancellation of the task by anything else (the
    worker stopping, a timeout) is passed on unchanged, as is a handler that swallows the
    error and returns (its outcome then stands, CANCEL-004). The handler runs in the caller's
    task, not a task of its own: that would cost each job two more turns of the loop."""
    task = asyncio.current_task()
    assert task is not None
    with cancellation.cancelling(task):
        taken_back = False  # the request's cancel, once delivered, is taken back exactly once
        try:
            return await call.function(*call.args, **call.kwargs)
        except asyncio.CancelledError:
            if cancellation.delivered(task):
                taken_back = True
                if task.uncancel() == 0:
                    raise _Stopped from None  # the request's cancel alone
            raise
        finally:
            # A handler that swallowed the request's cancel (returned, or raised something
            # else) leaves it pending on the task, which goes on to other work.
            if not taken_back and cancellation.requested and cancellation.delivered(task):
                task.uncancel()
