"""Messages shared by the bus tests (module level, so their annotations resolve)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Literal

from conveyor.bus import Command, QueueJob


class SalesError(Enum):
    REPORT_LOCKED = "report_locked"
    EVENT_NOT_FOUND = "event_not_found"
    INVALID = "invalid"


class Channel(Enum):
    WEB = "web"
    BOX_OFFICE = "box_office"


@dataclass(frozen=True)
class RecalculateSales(Command):
    event_id: int


@dataclass(frozen=True)
class CancelTicket(Command):
    ticket_id: int
    reason: str = ""


@dataclass(frozen=True)
class RecalculateSalesJob(QueueJob):
    event_id: int


@dataclass(frozen=True)
class Unbound(Command):
    n: int


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Rich(Command):
    """A message with every supported kind of field."""

    flag: bool
    count: int
    ratio: float
    name: str
    blob: bytes
    day: date
    moment: datetime
    price: Money
    ident: uuid.UUID
    channel: Channel
    tags: tuple[str, ...]
    pair: tuple[int, str]
    scores: dict[str, int]
    history: list[Money]
    note: str | None = None
    mode: Literal["fast", "slow"] = "fast"
    extra: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Notify(QueueJob):
    """A queue job a command handler queues (transactional queueing)."""

    user_id: int
