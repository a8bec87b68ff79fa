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
  ``{"$new": "c"}``             an id no alias names yet (a job the implementation created by
                                itself); the vector runner then binds ``c`` to it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import timefmt
from .naming import IdNames, short

MISSING: Any = object()

Resolver = Callable[[str, str], Any]


@dataclass(frozen=True)
class Mismatch:
    path: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return self.describe()

    def describe(self, names: IdNames | None = None) -> str:
        """The mismatch in one line; with ``names``, ids as the trace names its jobs."""
        expected, actual = self.expected, _brief_jobs(self.actual)
        if names is not None:
            expected = names.show_at(expected, self.path)
            actual = actual if actual is MISSING else names.show_at(actual, self.path)
        shown = "(missing)" if actual is MISSING else short(actual)
        where = self.path or "(result)"
        if isinstance(expected, list) and isinstance(actual, list) and len(expected) != len(actual):
            return (
                f"{where}: expected {len(expected)} items {short(expected)}, "
                f"got {len(actual)} {shown}"
            )
        return f"{where}: expected {short(expected)}, got {shown}"


def _brief_jobs(value: Any) -> Any:
    """Whole job documents in a mismatch cut to their id and state: the rest is noise there."""
    if isinstance(value, list):
        return [_brief_jobs(v) for v in value]
    if isinstance(value, dict) and {"id", "state", "requests"} <= set(value):
        return {"id": value["id"], "state": value["state"]}
    return value


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
        "$new",
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
    if name == "$new":
        # The resolver answers the id bound to the name, or the ids every alias names.
        taken = resolve("new", argument)
        if isinstance(taken, str):
            return [] if actual == taken else fail
        return [] if isinstance(actual, str) and actual not in taken else fail
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


def bindings(expected: Any, actual: Any, resolve: Resolver = _no_alias) -> dict[str, Any]:
    """The ids ``{"$new": name}`` matchers met in a matching ``actual``: name -> id."""
    if is_matcher(expected):
        ((name, argument),) = expected.items()
        if name == "$new":
            return {argument: actual} if isinstance(actual, str) else {}
        if name in ("$unordered", "$contains") and isinstance(actual, list):
            found: dict[str, Any] = {}
            remaining = list(actual)
            for want in argument:  # the same pairing as _match_matcher
                for index, got in enumerate(remaining):
                    if not match(want, got, "", resolve):
                        found.update(bindings(want, got, resolve))
                        del remaining[index]
                        break
            return found
        return {}
    found = {}
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key in actual:
                found.update(bindings(value, actual[key], resolve))
    elif isinstance(expected, list) and isinstance(actual, list):
        for want, got in zip(expected, actual, strict=False):
            found.update(bindings(want, got, resolve))
    return found
