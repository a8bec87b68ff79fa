"""How the result of a queued message decides its job's outcome.

When a worker pulls a queued command or queue job, it dispatches it and hands the
:class:`~conveyor.bus.Result` to an :class:`OutcomePolicy`:

1. a successful result: the job succeeds;
2. any error whose code is in ``permanent``: the job fails permanently (no retry);
3. any error whose code is in ``temporary``, or that carries ``retry_after``: the job
   fails temporarily and is retried after the longest delay among those errors (an
   error's own ``retry_after``, else the delay given for its code), or, when none is
   given, after the delay of the job's retry policy;
4. any other failure: ``default``, which is ``"permanent"`` unless configured.

Why permanent by default: a failed result is the application's considered answer
(validation failed, the event does not exist), which retrying will not change. Trouble
that does go away (a database or a service that is down) surfaces as an exception,
which Conveyor already retries. Declare the codes that mean "try again later".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any, Literal

from ..outcomes import PermanentError, TemporaryError
from .result import Error, Result

Delay = timedelta | float | None


def _seconds(delay: Delay) -> float | None:
    if delay is None:
        return None
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


@dataclass(frozen=True)
class OutcomePolicy:
    """Maps failed results to Conveyor outcomes (see the module documentation).

    ``temporary`` is a collection of codes, or a mapping of codes to a retry delay
    (seconds or timedelta; None for the retry policy's delay).
    """

    temporary: Mapping[Enum, Delay] | Collection[Enum] = field(default_factory=dict)
    permanent: Collection[Enum] = frozenset()
    default: Literal["permanent", "temporary"] = "permanent"

    def __post_init__(self) -> None:
        if not isinstance(self.temporary, Mapping):
            object.__setattr__(self, "temporary", dict.fromkeys(self.temporary))
        object.__setattr__(self, "permanent", frozenset(self.permanent))
        if self.default not in ("permanent", "temporary"):
            raise ValueError(f"default must be 'permanent' or 'temporary', not {self.default!r}")
        overlap = set(self.delays) & set(self.permanent)
        if overlap:
            raise ValueError(f"codes cannot be both temporary and permanent: {overlap}")

    @property
    def delays(self) -> Mapping[Enum, Delay]:
        assert isinstance(self.temporary, Mapping)
        return self.temporary

    def outcome(self, result: Result[Any]) -> Exception | None:
        """None for success, else the TemporaryError or PermanentError the job ends with."""
        if result.succeeded:
            return None
        errors = result.errors
        text = f"the result failed: {errors}"
        if any(e.code in self.permanent for e in errors if e.code is not None):
            return PermanentError(text)
        retrying = [
            e
            for e in errors
            if e.retry_after is not None or (e.code is not None and e.code in self.delays)
        ]
        if retrying:
            delays = [self._delay(e) for e in retrying]
            known = [d for d in delays if d is not None]
            return TemporaryError(text, retry_after=max(known) if known else None)
        if self.default == "temporary":
            return TemporaryError(text)
        return PermanentError(text)

    def _delay(self, error: Error) -> float | None:
        if error.retry_after is not None:
            return _seconds(error.retry_after)
        return _seconds(self.delays.get(error.code)) if error.code is not None else None

    def apply(self, result: Result[Any]) -> None:
        """Return on success; raise the outcome exception otherwise."""
        outcome = self.outcome(result)
        if outcome is not None:
            raise outcome
