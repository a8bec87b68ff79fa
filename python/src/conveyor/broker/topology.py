"""Where envelopes go: one AMQP queue per (queue, priority band), and a control queue per queue.

With ``priorities`` configured on the app, every allowed priority is its own band and queue.
Without, the bands start at the default priority and at every handler's priority; a job at
another priority travels in the band that starts at or below it (the lowest band takes
everything below it). Consumers subscribe to the bands their priority range overlaps.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from ..priority import PriorityRange


class Bands:
    """Priority bands, each named by the lowest priority it starts at."""

    def __init__(self, starts: Iterable[int]) -> None:
        self.starts = sorted(set(starts)) or [0]

    def band(self, priority: int) -> int:
        index = bisect.bisect_right(self.starts, priority) - 1
        return self.starts[max(index, 0)]

    def low(self, band: int) -> int | None:
        """The lowest priority travelling in ``band`` (None: no bound below)."""
        return None if band == self.starts[0] else band

    def high(self, band: int) -> int | None:
        """The highest priority travelling in ``band`` (None: no bound above)."""
        index = self.starts.index(band)
        return self.starts[index + 1] - 1 if index + 1 < len(self.starts) else None

    def overlapping(self, span: PriorityRange) -> list[int]:
        """The bands holding at least one priority of ``span``."""
        found = []
        for band in self.starts:
            low, high = self.low(band), self.high(band)
            if span.high is not None and low is not None and low > span.high:
                continue
            if span.low is not None and high is not None and high < span.low:
                continue
            found.append(band)
        return found

    def claim_span(self, band: int, span: PriorityRange) -> PriorityRange:
        """What a message of ``band`` lets a consumer restricted to ``span`` claim: its
        priorities, and every better one (spec.md#BROKER-007)."""
        high = self.high(band)
        if span.high is not None:
            high = span.high if high is None else min(high, span.high)
        return PriorityRange(span.low, high)


@dataclass(frozen=True)
class Topology:
    prefix: str = "conveyor."

    def queue_name(self, queue: str, band: int) -> str:
        return f"{self.prefix}{queue}.p{band}"

    def control_name(self, queue: str) -> str:
        return f"{self.prefix}{queue}.control"
