"""The Broker seam: hands envelopes of committed jobs to a message broker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .envelope import Envelope


@dataclass(frozen=True)
class Failed:
    """An envelope the broker did not confirm, and why (credentials never appear)."""

    envelope: Envelope
    reason: str


class Broker(Protocol):
    """Carries job ids; the store stays the source of truth (spec.md#BROKER-001)."""

    def publish(self, envelopes: Sequence[Envelope]) -> list[Failed]:
        """Hand ``envelopes`` over, durably and confirmed; return those that were not.

        Never raises for a broker problem: a broker that is down, refuses or does not confirm
        in time fails the envelopes concerned, and the caller records that on the jobs.
        """
        ...

    def close(self) -> None: ...
