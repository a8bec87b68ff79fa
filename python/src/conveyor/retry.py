"""Retry policies: a pure function from attempt number to delay (spec.md#retry)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from .errors import ConfigurationError
from .specfiles import retry_presets_document

Backoff = Literal["constant", "linear", "exponential"]


@dataclass(frozen=True)
class RetryPolicy:
    backoff: Backoff
    initial_delay_ms: int
    max_delay_ms: int
    multiplier: float = 2
    increment_ms: int = 0
    max_attempts: int | None = None
    notify_after: int | None = None
    jitter: float = 0

    def __post_init__(self) -> None:
        if _decimal_places(self.multiplier) > 3:
            raise ConfigurationError(
                f"retry policy multiplier {self.multiplier!r} has more than three digits after "
                "the decimal point; round it (spec.md#RETRY-008)"
            )

    def base_delay_ms(self, attempt: int) -> int:
        """The capped delay after failed attempt ``attempt`` (1-based), before jitter."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        if self.backoff == "constant":
            raw: float = self.initial_delay_ms
        elif self.backoff == "linear":
            raw = self.initial_delay_ms + self.increment_ms * (attempt - 1)
        # Compare exponents instead of computing huge powers at high attempt numbers.
        elif self.initial_delay_ms == 0 or self.max_delay_ms == 0:
            raw = 0
        elif (attempt - 1) * math.log(self.multiplier) > (
            math.log(self.max_delay_ms / self.initial_delay_ms) + 1
        ):
            raw = self.max_delay_ms
        else:
            return _exact_exponential(
                self.initial_delay_ms, self.multiplier, attempt, self.max_delay_ms
            )
        return math.floor(min(raw, self.max_delay_ms))

    def delay_bounds_ms(self, attempt: int) -> tuple[int, int]:
        """Inclusive bounds any conforming delay falls in."""
        capped = self.base_delay_ms(attempt)
        if not self.jitter:
            return capped, capped
        jitter = Fraction(repr(float(self.jitter)))  # exact, as RETRY-008 asks
        return math.floor(capped * (1 - jitter)), math.floor(capped * (1 + jitter))

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        low, high = self.delay_bounds_ms(attempt)
        if low == high:
            return low
        return (rng or random).randint(low, high)

    def exhausted(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(**data)


def _decimal_places(number: float) -> int:
    """Digits after the point of the shortest decimal that reads back as ``number``, which
    is the number as a policy's JSON wrote it."""
    if isinstance(number, int) or not math.isfinite(number):
        return 0
    exponent = Decimal(repr(number)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _exact_exponential(initial: int, multiplier: float, attempt: int, cap: int) -> int:
    """floor(min(initial * multiplier^(attempt-1), cap)) with the multiplier's decimal value
    (spec.md#RETRY-008): 1000 * 1.7^2 is 2890, where binary floating point gives 2889.99...

    The multiplier has at most three decimals, so it is the integer ``scaled`` / 10^3 and
    the power is one integer power; the caller's logarithm check has bounded the exponent."""
    scaled = int(Decimal(repr(float(multiplier))) * 1000)
    exponent = attempt - 1
    value: int = initial * scaled**exponent // 1000**exponent
    return min(value, cap)


_FIELDS = tuple(field.name for field in fields(RetryPolicy))
_REQUIRED = frozenset({"backoff", "initial_delay_ms", "max_delay_ms"})


def presets() -> dict[str, RetryPolicy]:
    document = retry_presets_document()
    return {name: RetryPolicy.from_dict(data) for name, data in document["presets"].items()}


def default_preset_name() -> str:
    return str(retry_presets_document()["default"])


def resolve(policy: str | RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
    """A policy from a preset name, a dict in the schema's shape, or a policy."""
    if isinstance(policy, RetryPolicy):
        return policy
    if isinstance(policy, dict):
        unknown = sorted(map(repr, set(policy) - set(_FIELDS)))
        missing = sorted(_REQUIRED - set(policy))
        if unknown or missing:
            raise ConfigurationError(
                f"a retry policy given as a dict has the fields {', '.join(_FIELDS)} "
                f"({', '.join(sorted(_REQUIRED))} required); "
                + (
                    f"unknown: {', '.join(unknown)}"
                    if unknown
                    else f"missing: {', '.join(missing)}"
                )
            )
        return RetryPolicy.from_dict(policy)
    name = policy or default_preset_name()
    known = presets()
    if name not in known:
        raise ConfigurationError(
            f"unknown retry preset {name!r}; use one of {sorted(known)} or pass a RetryPolicy"
        )
    return known[name]
