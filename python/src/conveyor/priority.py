"""Priority ranges a worker may be restricted to: ``10``, ``20-40``, ``25-``, ``-20``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigurationError

MAX_PRIORITY = 32767
_RANGE = re.compile(r"(?P<low>[0-9]+)?(?P<dash>-)?(?P<high>[0-9]+)?")


@dataclass(frozen=True)
class PriorityRange:
    low: int | None = None
    high: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> PriorityRange:
        """Parse the CLI form; ``None`` or an empty string means every priority.

        spec.md#ORDER-006: ASCII digits only, no spaces; leading zeros are allowed (``05``
        is 5), and a bound of any length above 32767 is refused, never handed to int()."""
        if text is None or text == "":
            return cls()
        match = _RANGE.fullmatch(text)
        if not match or (match["low"] is None and match["high"] is None):
            raise ConfigurationError(
                f"priority range {text[:40]!r} is not one of N, A-B, A- or -B "
                "(e.g. 10, 20-40, 25-, -20)"
            )
        low, high = _bound(match["low"]), _bound(match["high"])
        if match["dash"] is None:
            high = low
        if any(bound is not None and bound > MAX_PRIORITY for bound in (low, high)):
            raise ConfigurationError(
                f"priority range {text[:40]!r} goes beyond {MAX_PRIORITY}, the highest priority"
            )
        if low is not None and high is not None and low > high:
            raise ConfigurationError(f"priority range {text[:40]!r} is empty: {low} > {high}")
        return cls(low, high)

    def __contains__(self, priority: object) -> bool:
        if not isinstance(priority, int):
            return False
        return (self.low is None or priority >= self.low) and (
            self.high is None or priority <= self.high
        )

    def __str__(self) -> str:
        if self.low is not None and self.low == self.high:
            return str(self.low)
        return f"{'' if self.low is None else self.low}-{'' if self.high is None else self.high}"


def _bound(digits: str | None) -> int | None:
    """The value of a bound; one longer than any priority reads as just above the highest."""
    if digits is None:
        return None
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 5 else MAX_PRIORITY + 1
