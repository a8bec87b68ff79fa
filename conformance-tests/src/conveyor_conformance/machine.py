"""The suite's own reading of the machine files and their guard language (spec.md#machines).

Written from the spec prose, independently of any implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .timefmt import Instant


class Refusal(Exception):
    """An operation the spec refuses: ``code`` is its error code, ``req`` the rule that says so."""

    def __init__(
        self, code: str, req: str, message: str = "", alternatives: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(message or f"{code} ({req})")
        self.code = code
        self.req = req
        self.message = message or f"{code} ({req})"
        #: other codes a conforming implementation may answer (ERR-001's order is a SHOULD)
        self.alternatives = alternatives | {code}


def kind(value: Any) -> str:
    """MACH-004: values of different kinds are never equal and never ordered."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Instant):
        return "timestamp"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Env:
    """Operand roots: ``now``, ``job``, ``event``, ``ctx`` and ``batch`` (MACH-003)."""

    def __init__(self, **roots: Any) -> None:
        self.roots = roots

    def resolve(self, operand: Any) -> Any:
        if isinstance(operand, dict):
            return operand["const"]
        if not isinstance(operand, str):
            return operand
        if operand == "now":
            return self.roots["now"]
        root, *path = operand.split(".")
        value = self.roots.get(root)
        for part in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value


_ORDER = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def holds(expr: Any, env: Env) -> bool:
    if isinstance(expr, dict) and "const" not in expr:
        ((op, argument),) = expr.items()
        if op == "and":
            return all(holds(item, env) for item in argument)
        if op == "or":
            return any(holds(item, env) for item in argument)
        if op == "not":
            return not holds(argument, env)
        left, right = env.resolve(argument[0]), env.resolve(argument[1])
        if op in ("eq", "ne"):
            equal = kind(left) == kind(right) and left == right
            return equal if op == "eq" else not equal
        if kind(left) != kind(right) or kind(left) not in ("number", "timestamp"):
            return False
        return bool(_ORDER[op](left, right))
    value = env.resolve(expr)
    if value is True:
        return True
    return kind(value) == "number" and value != 0


@dataclass(frozen=True)
class Transition:
    id: str
    sources: tuple[str, ...]
    event: str
    guard: str | None
    target: str
    effects: tuple[str, ...]
    req: str


@dataclass(frozen=True)
class EffectInfo:
    name: str
    scope: str
    request_event: str | None
    req: str | None


class MachineModel:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.name = document["machine"]
        self.states: dict[str, Any] = dict(document["states"])
        self.events: dict[str, Any] = dict(document["events"])
        self.guards = {name: guard["expr"] for name, guard in document.get("guards", {}).items()}
        self.effects = {
            name: EffectInfo(
                name, info.get("scope", "job"), info.get("request_event"), info.get("req")
            )
            for name, info in document.get("effects", {}).items()
        }
        self.initial_event = document["initial"]["event"]
        self.initial_state = document["initial"]["to"]
        self.refusals = [
            (item["code"], item["when"], item["req"]) for item in document.get("refusals", [])
        ]
        self.transitions = [
            Transition(
                item["id"],
                tuple(item["from"]),
                item["event"],
                item.get("guard"),
                item["to"],
                tuple(item.get("effects", ())),
                item["req"],
            )
            for item in document["transitions"]
        ]

    def tagged(self, tag: str) -> frozenset[str]:
        return frozenset(name for name, info in self.states.items() if tag in info["tags"])

    def has_transition(self, state: str, event: str) -> bool:
        return any(state in t.sources and t.event == event for t in self.transitions)

    def decide(self, state: str, event: str, env: Env) -> Transition:
        """MACH-005/006: refusals first, then the first matching transition, else refused."""
        for code, when, req in self.refusals:
            if holds(when, env):
                raise Refusal(code, req, f"{event} refused with {code} ({req})")
        for transition in self.transitions:
            if transition.event != event or state not in transition.sources:
                continue
            if transition.guard is None or holds(self.guards[transition.guard], env):
                return transition
        raise Refusal(
            "invalid_transition", "MACH-006", f"{self.name}: no transition for {event} in {state}"
        )
