"""Exceptions a handler raises to steer its job (spec.md#outcomes).

Any other exception is a temporary error, retried by the job's retry policy.
"""

from __future__ import annotations

from datetime import timedelta

from .clock import duration_ms


def _ms(value: timedelta | float | None) -> int | None:
    if value is None:
        return None
    return max(duration_ms(value), 0)


class PermanentError(Exception):
    """The job cannot succeed by retrying: it ends ``permanently_failed``."""


class TemporaryError(Exception):
    """Retry later; ``retry_after`` (seconds or timedelta) replaces the policy's delay."""

    def __init__(self, message: str = "", *, retry_after: timedelta | float | None = None):
        super().__init__(message)
        self.retry_after_ms = _ms(retry_after)


class Waiting(Exception):
    """Not ready yet: try again after ``delay`` without counting an attempt."""

    def __init__(self, message: str = "", *, delay: timedelta | float | None = None):
        super().__init__(message)
        self.delay_ms = _ms(delay)


class Die(Exception):
    """Record the outcome of the underlying error, then stop this worker process.

    Raise it ``from`` the error that caused it; without a cause the outcome is permanent.
    A ``TemporaryError`` cause, or any exception that is not a ``PermanentError``, is temporary.
    """


class JobCancelled(Exception):
    """The job's cancel was requested while it ran (spec.md#cancel-running): raised by
    :func:`conveyor.check_cancelled`, or by a handler itself, it ends the job ``cancelled``
    without a retry. Raised when no cancel was requested, it is a temporary error."""
