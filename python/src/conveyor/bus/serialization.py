"""Messages to JSON and back: registered types, stable names, versions; never pickle.

A message type is registered under a stable name (``"sales.recalculate_at_event"``) and
a version. Messages are dataclasses, attrs classes or pydantic v2 models
(``conveyor.structured``). :meth:`MessageSerializer.encode` turns one into plain values the
Conveyor codec carries (JSON plus bytes, dates, datetimes, decimals and UUIDs);
:meth:`MessageSerializer.decode` rebuilds the message from its field annotations and
refuses anything that does not fit, naming the field. Only registered classes are ever
built, so a payload can never make a worker construct arbitrary objects.

Supported field types: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``date``, ``datetime`` (timezone-aware), ``Decimal``, ``UUID``, enums (by value), nested
dataclasses, attrs classes and pydantic models, ``list[X]``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``dict[str, X]``, ``X | None``, unions, ``Literal[...]`` and ``Any``.

Versions: bump the version whenever the fields change. A payload of an older version is
decoded after the ``upgrades`` registered for each step (``{1: fn}`` turns version-1 data
into version-2 data); without an upgrade for a step the data passes unchanged, which is
right for added fields with defaults. A payload of a newer version raises
:class:`~conveyor.bus.UnknownMessageVersion` (a newer release produced it).
"""

from __future__ import annotations

import re
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

from .. import structured as models
from ..errors import InvalidPayload
from .containers import describe
from .errors import InvalidMessage, MessageNotRegistered, UnknownMessageVersion

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Registration:
    """A message type's stable name, current version and upgrades of older versions."""

    message_type: type
    name: str
    version: int
    upgrades: Mapping[int, Upgrade]
    hints: Mapping[str, Any]


@dataclass(frozen=True)
class Envelope:
    """An encoded message: its name, the version of its shape, and its fields."""

    name: str
    version: int
    data: dict[str, Any]


class MessageSerializer:
    """Message types by stable name; encodes dataclasses and rebuilds them, validated."""

    def __init__(self) -> None:
        self._by_type: dict[type, Registration] = {}
        self._by_name: dict[str, Registration] = {}

    def register(
        self,
        message_type: type,
        name: str,
        *,
        version: int = 1,
        upgrades: Mapping[int, Upgrade] | None = None,
    ) -> Registration:
        """Register a message class under ``name`` at ``version``; returns the registration."""
        if models.kind(message_type) is None:
            raise InvalidMessage(
                f"{message_type!r} is not a dataclass, an attrs class or a pydantic model; "
                "messages are one of those (e.g. @dataclass(frozen=True)), so their fields "
                "can be encoded and checked"
            )
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise InvalidMessage(
                f"message name {name!r} is not valid: use letters, digits, '_', '-', '.', ':' "
                "(1 to 128 characters, starting with a letter or '_'), e.g. 'sales.recalculate'"
            )
        if version < 1:
            raise InvalidMessage(f"version of {name!r} must be 1 or more, not {version}")
        steps = dict(upgrades or {})
        for step in steps:
            if not 1 <= step < version:
                raise InvalidMessage(
                    f"upgrade {step} of {name!r} does not lead to a version up to {version}; "
                    "key each upgrade by the version it upgrades from"
                )
        existing = self._by_name.get(name)
        if existing is not None and existing.message_type is not message_type:
            raise InvalidMessage(
                f"the name {name!r} is already registered for "
                f"{describe(existing.message_type)}; every message type needs its own name"
            )
        if message_type in self._by_type and self._by_type[message_type].name != name:
            raise InvalidMessage(
                f"{describe(message_type)} is already registered as "
                f"{self._by_type[message_type].name!r}"
            )
        registration = Registration(message_type, name, version, steps, _hints(message_type))
        self._by_type[message_type] = registration
        self._by_name[name] = registration
        return registration

    def unregister(self, message_type: type) -> None:
        """Forget ``message_type`` (a no-op when it is not registered)."""
        registration = self._by_type.pop(message_type, None)
        if registration is not None:
            del self._by_name[registration.name]

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._by_type

    def registration(self, message_type: type) -> Registration:
        try:
            return self._by_type[message_type]
        except KeyError:
            raise MessageNotRegistered(
                f"{describe(message_type)} has no message name, so it cannot be queued; "
                f"register it first, e.g. queue.register({message_type.__name__}, "
                f"'{_suggest(message_type)}')"
            ) from None

    def by_name(self, name: str) -> Registration:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise MessageNotRegistered(
                f"no message type is registered as {name!r} (registered: {known})"
            ) from None

    def encode(self, message: object) -> Envelope:
        """The envelope of ``message``; raises InvalidMessage naming a field it cannot carry."""
        registration = self.registration(type(message))
        data = _encode(message, registration.name)
        assert isinstance(data, dict)
        return Envelope(registration.name, registration.version, data)

    def decode(self, name: str, version: int, data: Any) -> Any:
        """Rebuild the message from an envelope's parts, upgrading older versions."""
        registration = self.by_name(name)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidMessage(f"{name}: version {version!r} is not a positive integer")
        if version > registration.version:
            raise UnknownMessageVersion(
                f"{name} version {version} is newer than this release knows "
                f"(up to {registration.version}); deploy the release that produced it"
            )
        if not isinstance(data, dict):
            raise InvalidMessage(f"{name}: the data is {type(data).__name__}, not an object")
        for step in range(version, registration.version):
            upgrade = registration.upgrades.get(step)
            if upgrade is not None:
                data = upgrade(dict(data))
        return _decode_dataclass(registration.message_type, registration.hints, data, name)


def _suggest(message_type: type) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", message_type.__name__).lower()
    return f"{message_type.__module__.rsplit('.', 1)[-1]}.{snake}"


def _hints(message_type: type) -> dict[str, Any]:
    try:
        return {field.name: field.hint for field in models.fields(message_type)}
    except InvalidPayload as error:
        raise InvalidMessage(str(error)) from None


_PLAIN = (bool, int, float, str, bytes, datetime, date, Decimal, uuid.UUID)


def _encode(value: Any, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, Enum):
        return _encode(value.value, path)
    if isinstance(value, _PLAIN):
        return value
    if models.is_model(value):
        return {
            name: _encode(item, f"{path}.{name}") for name, item in models.values(value).items()
        }
    if isinstance(value, list | tuple):
        return [_encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        encoded: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(f"{path} has the key {key!r}; only string keys travel")
            encoded[key] = _encode(item, f"{path}.{key}")
        return encoded
    raise InvalidMessage(
        f"{path} is a {type(value).__name__}, which a message cannot carry; use plain "
        "JSON types, bytes, date/datetime, Decimal, UUID, enums, lists, tuples, dicts or "
        "nested dataclasses"
    )


def _fail(path: str, expected: str, value: Any) -> InvalidMessage:
    return InvalidMessage(f"{path} should be {expected}, not {value!r}")


def _decode_dataclass(cls: type, hints: Mapping[str, Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(path, f"an object for {cls.__name__}", data)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise InvalidMessage(
            f"{path} has fields {cls.__name__} does not know: {', '.join(unknown)}; bump the "
            "message version and register an upgrade when fields are renamed or removed"
        )
    required = {field.name for field in models.fields(cls) if field.required}
    missing = sorted(required - set(data))
    if missing:
        raise InvalidMessage(f"{path} lacks the fields {', '.join(missing)} of {cls.__name__}")
    values = {key: _decode(item, hints[key], f"{path}.{key}") for key, item in data.items()}
    try:
        return models.build(cls, values)
    except (TypeError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        raise InvalidMessage(f"{path}: {cls.__name__} refused the data: {error}") from None


def _decode(value: Any, hint: Any, path: str) -> Any:
    if hint is Any or hint is object:
        return value
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        problems = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _decode(value, option, path)
            except InvalidMessage as error:
                problems.append(str(error))
        raise InvalidMessage(f"{path} fits none of {hint}: " + "; ".join(problems))
    if origin is Literal:
        if value in args:
            return value
        raise _fail(path, f"one of {list(args)}", value)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _fail(path, "a list", value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _fail(path, f"a list of {len(args)} items", value)
            return tuple(
                _decode(item, arg, f"{path}[{i}]")
                for i, (item, arg) in enumerate(zip(value, args, strict=True))
            )
        item_hint = args[0] if args else Any
        items = [_decode(item, item_hint, f"{path}[{i}]") for i, item in enumerate(value)]
        if origin is tuple or hint is tuple:
            return tuple(items)
        return items
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        item_hint = args[1] if len(args) == 2 else Any
        return {key: _decode(item, item_hint, f"{path}.{key}") for key, item in value.items()}
    if origin is not None:
        return value  # other generics (Annotated and the like): taken as they come
    if not isinstance(hint, type):
        return value
    if models.kind(hint) is not None:
        return _decode_dataclass(hint, _hints(hint), value, path)
    if issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            values = [member.value for member in hint]
            raise _fail(path, f"a {hint.__name__} value (one of {values})", value) from None
    return _decode_scalar(value, hint, path)


def _decode_scalar(value: Any, hint: type, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, "an integer", value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _fail(path, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(path, "a string", value)
    if hint is bytes:
        if isinstance(value, bytes):
            return value
        raise _fail(path, "bytes", value)
    if hint is datetime:
        moment = _parse(datetime, value, path) if isinstance(value, str) else value
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            return moment
        raise _fail(path, "a timezone-aware datetime", value)
    if hint is date:
        day = _parse(date, value, path) if isinstance(value, str) else value
        if isinstance(day, date) and not isinstance(day, datetime):
            return day
        raise _fail(path, "a date", value)
    if hint is Decimal:
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                return Decimal(value)
            except ArithmeticError:
                pass
        raise _fail(path, "a decimal", value)
    if hint is uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        raise _fail(path, "a UUID", value)
    if isinstance(value, hint):
        return value
    raise _fail(path, f"a {hint.__name__}", value)


def _parse(kind: type[date], text: str, path: str) -> date:
    try:
        return kind.fromisoformat(text)
    except ValueError:
        raise _fail(path, f"an ISO {kind.__name__}", text) from None
