"""Handlers: application functions registered under a request type."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .cancellation import Cancellation
from .errors import ConfigurationError, UnknownType
from .retry import RetryPolicy
from .uniqueness import Unique


@dataclass(frozen=True)
class JobContext:
    """Passed to handlers registered with ``pass_context=True``."""

    job_id: str
    request_index: int
    request_type: str
    attempt: int
    queue: str
    priority: int
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    identifier: str | None
    serial_group: str | None
    worker_id: str
    # Writes progress under this attempt's lease (PROGRESS-001); None outside a worker.
    reporter: Callable[[float | None, str | None], None] | None = field(
        default=None, repr=False, compare=False
    )
    # The cancel request of this attempt (CANCEL-002); None outside a worker.
    cancellation: Cancellation | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel the job while it runs: stop, then raise
        :class:`~conveyor.JobCancelled` (or call :meth:`check_cancelled`)."""
        return self.cancellation is not None and self.cancellation.requested

    def check_cancelled(self) -> None:
        """Raise :class:`~conveyor.JobCancelled` when the job's cancel was requested."""
        if self.cancellation is not None:
            self.cancellation.check()

    def wait_for_cancel(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds between steps, returning True as soon as the job's
        cancel is requested (False when the time passed): a pause that a cancel cuts short."""
        if self.cancellation is None:
            return threading.Event().wait(timeout)
        return self.cancellation.wait(timeout)

    def progress(self, percent: float | None = None, message: str | None = None) -> None:
        """Record how far the job got (0 to 100 percent, a short message), shown by
        ``conveyor jobs show`` and the job's ``progress``. One short write to the store;
        StaleLease when this attempt no longer holds the job's lease."""
        if self.reporter is None:
            raise ConfigurationError(
                "this context reports no progress: it was not made by a worker running the job"
            )
        self.reporter(percent, message)

    async def progress_async(
        self, percent: float | None = None, message: str | None = None
    ) -> None:
        """:meth:`progress` for ``async def`` handlers: the write runs in a thread, so the
        event loop keeps running the other jobs."""
        await asyncio.to_thread(self.progress, percent, message)


@dataclass(frozen=True)
class Handler:
    type: str
    function: Callable[..., Any]
    queue: str
    priority: int
    retry_policy: RetryPolicy
    pass_context: bool = False
    timeout_ms: int | None = None  # the default timeout of its jobs (TIMEOUT-001)
    result_ttl_ms: int | None = None  # the default result time to live (RESULT-003)
    # The default concurrency key of its jobs, or a function of the payload giving it, and
    # the limit (CONC-001).
    concurrency_key: str | Callable[[Any], str] | None = None
    concurrency_limit: int | None = None
    # The default rate key (or a function of the payload), limit and period (RATE-001).
    rate_key: str | Callable[[Any], str] | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    # The default unique key of its jobs (UKEY-001).
    uniqueness: Unique | None = None

    @functools.cached_property
    def is_async(self) -> bool:
        """An ``async def`` function (or a callable object whose ``__call__`` is one): its
        jobs run on the app's event loop."""
        function = self.function
        return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004
        )

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """Computed once per handler, not once per job run."""
        return inspect.signature(self.function)

    def bind(self, payload: Any, context: JobContext) -> inspect.BoundArguments:
        """Match the payload to the function's parameters; TypeError when they don't fit.

        A dict payload is passed as keyword arguments, any other value as one argument.
        """
        signature = self.signature
        prefix = (context,) if self.pass_context else ()
        if isinstance(payload, dict):
            return signature.bind(*prefix, **payload)
        if payload is None:
            return self._bound_to_nothing if not prefix else signature.bind(*prefix)
        return signature.bind(*prefix, payload)

    @functools.cached_property
    def _bound_to_nothing(self) -> inspect.BoundArguments:
        """The binding of a job without payload, made once (its ``args`` and ``kwargs`` are
        new objects at each access); a handler that needs arguments raises each time."""
        return self.signature.bind()


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, handler: Handler) -> None:
        if handler.type in self._handlers:
            raise ConfigurationError(
                f"a handler is already registered for {handler.type!r}; pick another name"
            )
        self._handlers[handler.type] = handler

    def get(self, request_type: str) -> Handler:
        try:
            return self._handlers[request_type]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise UnknownType(
                f"no handler is registered for request type {request_type!r} (registered: "
                f"{known}); register it with @app.handler({request_type!r})"
            ) from None

    def __contains__(self, request_type: object) -> bool:
        return request_type in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())
