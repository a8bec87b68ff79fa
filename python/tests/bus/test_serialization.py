"""The message serialiser: round trips through the Conveyor codec, versions, refusals."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor import codec
from conveyor.bus import (
    Command,
    InvalidMessage,
    MessageNotRegistered,
    MessageSerializer,
    UnknownMessageVersion,
)

from .messages import CancelTicket, Channel, Money, RecalculateSales, Rich


def through_the_wire(serializer: MessageSerializer, message: Any) -> Any:
    """Encode, carry as JSON text like a store would, decode."""
    envelope = serializer.encode(message)
    text = codec.dumps(codec.encode({"version": envelope.version, "data": envelope.data}))
    payload = codec.decode(json.loads(text))
    return serializer.decode(envelope.name, payload["version"], payload["data"])


def rich_serializer() -> MessageSerializer:
    serializer = MessageSerializer()
    serializer.register(Rich, "tests.rich")
    return serializer


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
money = st.builds(
    Money,
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=2),
    currency=st.sampled_from(["EUR", "GBP"]),
)
aware = st.datetimes(
    min_value=datetime(1900, 1, 1), timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))])
)
rich = st.builds(
    Rich,
    flag=st.booleans(),
    count=st.integers(),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    name=texts,
    blob=st.binary(),
    day=st.dates(),
    moment=aware,
    price=money,
    ident=st.uuids(),
    channel=st.sampled_from(Channel),
    tags=st.lists(texts, max_size=3).map(tuple),
    pair=st.tuples(st.integers(), texts),
    scores=st.dictionaries(texts, st.integers(), max_size=3),
    history=st.lists(money, max_size=3),
    note=st.none() | texts,
    mode=st.sampled_from(["fast", "slow"]),
    extra=st.lists(st.integers(), max_size=3),
)


@given(rich)
def test_every_supported_field_survives_the_round_trip(message: Rich) -> None:
    assert through_the_wire(rich_serializer(), message) == message


def test_the_envelope_names_the_type_and_version() -> None:
    serializer = MessageSerializer()
    serializer.register(CancelTicket, "tickets.cancel", version=3)
    envelope = serializer.encode(CancelTicket(7, "duplicate"))
    assert (envelope.name, envelope.version) == ("tickets.cancel", 3)
    assert envelope.data == {"ticket_id": 7, "reason": "duplicate"}


def test_older_versions_are_upgraded_step_by_step() -> None:
    serializer = MessageSerializer()
    serializer.register(
        CancelTicket,
        "tickets.cancel",
        version=3,
        upgrades={
            1: lambda data: {"ticket_id": data.pop("ticket")},  # v1 called it "ticket"
            # 2 -> 3 added "reason", which has a default: no upgrade needed
        },
    )
    assert serializer.decode("tickets.cancel", 1, {"ticket": 5}) == CancelTicket(5)
    assert serializer.decode("tickets.cancel", 2, {"ticket_id": 5}) == CancelTicket(5)
    with pytest.raises(UnknownMessageVersion, match="version 4 is newer than this release"):
        serializer.decode("tickets.cancel", 4, {"ticket_id": 5})


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"event_id": "7"}, r"sales.recalculate.event_id should be an integer, not '7'"),
        ({"event_id": True}, r"should be an integer, not True"),
        ({}, r"lacks the fields event_id"),
        ({"event_id": 1, "evil": 2}, r"fields RecalculateSales does not know: evil"),
        (["event_id"], r"the data is list, not an object"),
    ],
)
def test_payloads_that_do_not_fit_are_refused_naming_the_field(data: Any, problem: str) -> None:
    serializer = MessageSerializer()
    serializer.register(RecalculateSales, "sales.recalculate")
    with pytest.raises(InvalidMessage, match=problem):
        serializer.decode("sales.recalculate", 1, data)


def test_nested_values_are_checked_too() -> None:
    serializer = rich_serializer()
    message = Rich(
        flag=True,
        count=1,
        ratio=1,  # an int where a float is declared: accepted and widened
        name="n",
        blob=b"",
        day=date(2026, 1, 1),
        moment=datetime(2026, 1, 1, tzinfo=UTC),
        price=Money(Decimal("1.50"), "EUR"),
        ident=uuid.UUID(int=1),
        channel=Channel.WEB,
        tags=(),
        pair=(1, "a"),
        scores={},
        history=[],
    )
    data = serializer.encode(message).data
    assert serializer.decode("tests.rich", 1, data).ratio == 1.0
    for field, value, problem in [
        ("channel", "fax", r"channel should be a Channel value \(one of \['web', 'box_office'\]\)"),
        ("history", [{"amount": "1", "currency": 3}], r"history\[0\].currency should be a string"),
        ("pair", [1, 2, 3], r"pair should be a list of 2 items"),
        ("mode", "medium", r"mode should be one of \['fast', 'slow'\]"),
        ("note", 5, r"note fits none of"),
        ("moment", datetime(2026, 1, 1), r"moment should be a timezone-aware datetime"),
        ("day", "yesterday", r"day should be an ISO date"),
    ]:
        with pytest.raises(InvalidMessage, match=problem):
            serializer.decode("tests.rich", 1, {**data, field: value})


def test_values_a_message_cannot_carry_are_refused_when_encoding() -> None:
    @dataclass(frozen=True)
    class Holder(Command):
        value: Any

    serializer = MessageSerializer()
    serializer.register(Holder, "tests.holder")
    with pytest.raises(InvalidMessage, match=r"tests.holder.value is a set"):
        serializer.encode(Holder({1, 2}))
    with pytest.raises(InvalidMessage, match=r"tests.holder.value has the key 1"):
        serializer.encode(Holder({1: "x"}))


def test_registration_refuses_what_cannot_work() -> None:
    serializer = MessageSerializer()
    with pytest.raises(InvalidMessage, match="not a dataclass"):
        serializer.register(int, "tests.int")
    with pytest.raises(InvalidMessage, match="not valid"):
        serializer.register(RecalculateSales, "sales recalculate")
    with pytest.raises(InvalidMessage, match="does not lead to a version"):
        serializer.register(RecalculateSales, "sales.recalculate", version=2, upgrades={2: dict})
    serializer.register(RecalculateSales, "sales.recalculate")
    with pytest.raises(InvalidMessage, match="already registered for RecalculateSales"):
        serializer.register(CancelTicket, "sales.recalculate")
    with pytest.raises(MessageNotRegistered, match=r"register it first, e.g. queue.register"):
        serializer.encode(CancelTicket(1))
    with pytest.raises(MessageNotRegistered, match=r"registered: sales.recalculate"):
        serializer.decode("tickets.cancel", 1, {})


def test_annotations_that_do_not_resolve_are_refused_at_registration() -> None:
    @dataclass(frozen=True)
    class Local(Command):
        when: NotImported  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidMessage, match="cannot be resolved"):
        MessageSerializer().register(Local, "tests.local")
