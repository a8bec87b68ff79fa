"""Partial matching of results against expectations: the one rule set of vectors and model.

An expectation is a JSON value compared with the actual value:

- an object matches when every member it lists matches (members it does not list are ignored);
  an expected ``null`` also matches a missing member;
- an array matches an array of the same length, item by item;
- a scalar matches an equal scalar (``true`` never equals ``1``);
- an object with one member whose name starts with ``$`` is a *matcher*:

  ``{"$any": true}``            anything, including a missing member
  ``{"$job": "a"}``             the id the trace bound to job alias ``a``
  ``{"$batch": "b"}``           the id the trace bound to batch alias ``b``
  ``{"$range": [lo, hi]}``      a number from lo to hi inclusive
  ``{"$time_range": [t1, t2]}`` a timestamp from t1 to t2 inclusive
  ``{"$unordered": [...]}``     an array with the same items in any order
  ``{"$contains": [...]}``      an array holding at least these items, in any order
  ``{"$len": n}``               an array (or string) of length n
  ``{"$nest": [x, n]}``         x inside n arrays of one item each (``[[x]]`` for n = 2)
  ``{"$not": x}``               anything that does not match x
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import timefmt

MISSING: Any = object()

Resolver = Callable[[str, str], Any]


@dataclass(frozen=True)
class Mismatch:
    path: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        actual = "(missing)" if self.actual is MISSING else _short(self.actual)
        return f"{self.path or '(result)'}: expected {_short(self.expected)}, got {actual}"


def _short(value: Any, limit: int = 300) -> str:
    import json

    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


MATCHERS = frozenset(
    {
        "$any",
        "$job",
        "$batch",
        "$range",
        "$time_range",
        "$unordered",
        "$contains",
        "$len",
        "$nest",
        "$not",
    }
)


def is_matcher(value: Any) -> bool:
    """A one-member object naming a matcher; other ``$`` names (typed values) are literal."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in MATCHERS


def _no_alias(kind: str, name: str) -> Any:
    raise KeyError(f"unknown {kind} alias {name!r}")


def match(
    expected: Any, actual: Any, path: str = "", resolve: Resolver = _no_alias
) -> list[Mismatch]:
    """Every way ``actual`` fails ``expected``; an empty list means it matches."""
    if is_matcher(expected):
        return _match_matcher(expected, actual, path, resolve)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [Mismatch(path, expected, actual)]
        found: list[Mismatch] = []
        for key, value in expected.items():
            sub = f"{path}.{key}" if path else key
            if key not in actual:
                if value is None or (is_matcher(value) and "$any" in value):
                    continue
                found.append(Mismatch(sub, value, MISSING))
                continue
            found.extend(match(value, actual[key], sub, resolve))
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [Mismatch(path, expected, actual)]
        found = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found.extend(match(want, got, f"{path}[{index}]", resolve))
        return found
    if _scalar_equal(expected, actual):
        return []
    return [Mismatch(path, expected, actual)]


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and bool(expected == actual)


def _match_matcher(expected: dict[str, Any], actual: Any, path: str, resolve: Resolver) -> list:
    ((name, argument),) = expected.items()
    fail = [Mismatch(path, expected, actual)]
    if name == "$any":
        return []
    if actual is MISSING:
        return fail
    if name == "$job":
        return [] if actual == resolve("job", argument) else fail
    if name == "$batch":
        return [] if actual == resolve("batch", argument) else fail
    if name == "$range":
        low, high = argument
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if ok and low <= actual <= high else fail
    if name == "$time_range":
        if not timefmt.is_strict(actual):
            return fail
        low, high = (timefmt.parse(t) for t in argument)
        return [] if low <= timefmt.parse(actual) <= high else fail
    if name == "$len":
        return [] if isinstance(actual, list | str) and len(actual) == argument else fail
    if name == "$nest":
        inner, depth = argument
        for _ in range(depth):
            if not (isinstance(actual, list) and len(actual) == 1):
                return fail
            actual = actual[0]
        return match(inner, actual, path, resolve)
    if name == "$not":
        return fail if not match(argument, actual, path, resolve) else []
    if name in ("$unordered", "$contains"):
        if not isinstance(actual, list):
            return fail
        if name == "$unordered" and len(actual) != len(argument):
            return fail
        remaining = list(actual)
        for want in argument:
            for index, got in enumerate(remaining):
                if not match(want, got, path, resolve):
                    del remaining[index]
                    break
            else:
                return fail
        return []
    raise ValueError(f"unknown matcher {name} at {path or '(result)'}")
