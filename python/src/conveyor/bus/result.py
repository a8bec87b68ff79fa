"""Results: what a handler answers, success with a value or failure with coded errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Generic, Never, TypeAlias, TypeVar, cast, overload

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Error:
    """One reason a result failed.

    ``code`` is an enum member the caller can test for (``errors.contains(Code.X)``);
    ``key`` names what the error is about (a field, an entity); ``retry_after`` is a hint
    that trying again later may work, read by :class:`~conveyor.bus.OutcomePolicy`.
    """

    message: str = ""
    code: Enum | None = None
    key: str | None = None
    retry_after: timedelta | None = None

    def __str__(self) -> str:
        code = f"[{type(self.code).__name__}.{self.code.name}]" if self.code is not None else ""
        key = f"{self.key}: " if self.key else ""
        text = f"{key}{self.message}" if self.message else key.rstrip(": ")
        return " ".join(part for part in (code, text) if part) or "failed"


ErrorLike: TypeAlias = Error | Enum | str


def as_error(value: ErrorLike) -> Error:
    """An :class:`Error` from an error, a code or a message."""
    if isinstance(value, Error):
        return value
    if isinstance(value, Enum):
        return Error(code=value)
    if isinstance(value, str):
        return Error(message=value)
    raise TypeError(
        f"{value!r} is not an error: pass an Error, an enum member (a code) or a message"
    )


class ErrorList(Sequence[Error]):
    """An immutable, ordered list of errors with look-ups by code."""

    __slots__ = ("_errors",)

    def __init__(self, errors: Iterable[ErrorLike] = ()) -> None:
        self._errors: tuple[Error, ...] = tuple(as_error(e) for e in errors)

    @overload
    def __getitem__(self, index: int) -> Error: ...

    @overload
    def __getitem__(self, index: slice) -> ErrorList: ...

    def __getitem__(self, index: int | slice) -> Error | ErrorList:
        if isinstance(index, slice):
            return ErrorList(self._errors[index])
        return self._errors[index]

    def __len__(self) -> int:
        return len(self._errors)

    def __iter__(self) -> Iterator[Error]:
        return iter(self._errors)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ErrorList):
            return self._errors == other._errors
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._errors)

    def __repr__(self) -> str:
        return f"ErrorList({list(self._errors)!r})"

    def __str__(self) -> str:
        return "; ".join(str(error) for error in self._errors)

    def __add__(self, other: Iterable[ErrorLike]) -> ErrorList:
        return ErrorList((*self._errors, *(as_error(e) for e in other)))

    def contains(self, code: Enum) -> bool:
        """True when any error carries ``code``."""
        return any(error.code == code for error in self._errors)

    def codes(self) -> tuple[Enum, ...]:
        """The distinct codes, in the order they first appear."""
        return tuple(dict.fromkeys(e.code for e in self._errors if e.code is not None))

    def first(self, code: Enum | None = None) -> Error | None:
        """The first error (with ``code``, when given), or None."""
        return next((e for e in self._errors if code is None or e.code == code), None)

    def messages(self) -> tuple[str, ...]:
        return tuple(e.message for e in self._errors if e.message)


@dataclass(frozen=True)
class Result(Generic[T_co]):
    """The answer of a handler: ``Result.ok(value)`` or ``Result.fail(errors)``.

    Build results with :meth:`ok` and :meth:`fail`. ``value`` raises :class:`ResultFailed`
    on a failed result, so a caller never mistakes a failure for a missing value.
    """

    succeeded: bool
    errors: ErrorList
    _value: T_co | None = None

    def __post_init__(self) -> None:
        if self.succeeded and self.errors:
            raise ValueError("a successful result cannot carry errors")
        if not self.succeeded and not self.errors:
            raise ValueError("a failed result needs at least one error")

    @overload
    @staticmethod
    def ok() -> Result[None]: ...

    @overload
    @staticmethod
    def ok(value: T) -> Result[T]: ...

    @staticmethod
    def ok(value: Any = None) -> Result[Any]:
        """A successful result carrying ``value`` (None when omitted)."""
        return Result(True, ErrorList(), value)

    @staticmethod
    def fail(errors: ErrorLike | Iterable[ErrorLike]) -> Result[Never]:
        """A failed result: pass an Error, a code, a message, or an iterable of them."""
        if isinstance(errors, Error | Enum | str):
            return Result(False, ErrorList([errors]))
        return Result(False, ErrorList(errors))

    @property
    def failed(self) -> bool:
        return not self.succeeded

    @property
    def value(self) -> T_co:
        """The value of a successful result; raises :class:`ResultFailed` on a failure."""
        if not self.succeeded:
            raise ResultFailed(self)
        return cast(T_co, self._value)

    def value_or(self, default: T) -> T_co | T:
        """The value when the result succeeded, else ``default``."""
        return cast(T_co, self._value) if self.succeeded else default

    def raise_if_failed(self) -> Result[T_co]:
        """Raise :class:`ResultFailed` when the result failed; return it otherwise."""
        if not self.succeeded:
            raise ResultFailed(self)
        return self

    def __bool__(self) -> bool:
        return self.succeeded

    def __repr__(self) -> str:
        if self.succeeded:
            return f"Result.ok({self._value!r})"
        return f"Result.fail({list(self.errors)!r})"


class ResultFailed(Exception):
    """A failed result raised as an exception; ``.result`` is the result.

    A handler may raise it instead of returning the failure: the bus turns it back into
    the result, so middleware and callers see the same thing either way.
    """

    def __init__(self, result: Result[Any]) -> None:
        super().__init__(f"the result failed: {result.errors}")
        self.result = result

    @property
    def errors(self) -> ErrorList:
        return self.result.errors
