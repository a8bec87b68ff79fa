"""Commands as attrs classes and pydantic models (module level, so annotations resolve)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import attrs
from pydantic import BaseModel, ConfigDict, Field

from conveyor.bus import Command


class Line(BaseModel):
    sku: str
    price: Decimal


class PlaceOrder(Command, BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: int = Field(gt=0)
    placed_at: datetime
    lines: list[Line]
    note: str | None = None


@attrs.frozen
class Address:
    city: str


@attrs.frozen
class ShipOrder(Command):
    order_id: int
    address: Address
    _carrier: str = "post"
