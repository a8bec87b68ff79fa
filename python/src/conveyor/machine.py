"""The machine engine: loads a machine file and decides which transition an event fires.

The engine knows no state or event by name. Guards are evaluated from the file's closed
expression language; effects are looked up by name in the implementation's registry, and a
machine naming an effect the implementation lacks is refused at load time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import REFUSALS, InvalidTransition, SpecError

Expr = Any

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


@dataclass(frozen=True)
class Transition:
    id: str
    sources: frozenset[str]
    event: str
    guard: str | None
    target: str
    effects: tuple[str, ...]
    req: str


@dataclass(frozen=True)
class Effect:
    name: str
    scope: str
    request_event: str | None


@dataclass(frozen=True)
class Refusal:
    code: str
    when: Expr
    req: str


class Environment:
    """Resolves operands: ``now``, ``job.a.b``, ``event.x``, ``ctx.x``, ``batch.x``."""

    def __init__(self, roots: Mapping[str, Any]) -> None:
        self.roots = roots

    def resolve(self, operand: Any) -> Any:
        return _compile_operand(operand)(self)


Guard = Callable[[Environment], bool]
_NOTHING = Environment({})
Operand = Callable[[Environment], Any]


def evaluate(expr: Expr, env: Environment) -> bool:
    """Evaluate a guard expression (spec.md#machines)."""
    return compile_guard(expr)(env)


def compile_guard(expr: Expr) -> Guard:
    """A guard expression turned into nested closures, once per machine file: the claim and
    every report evaluate several guards, and walking the expression each time cost more than
    the rest of the machine."""
    if isinstance(expr, dict) and "const" not in expr:
        ((op, argument),) = expr.items()
        if op in ("and", "or"):
            return _chain(op, [compile_guard(item) for item in argument])
        if op == "not":
            inner = compile_guard(argument)
            return lambda env: not inner(env)
        left, right = (_compile_operand(item) for item in argument)
        if op in ("eq", "ne"):
            wanted = op == "eq"
            constant = _constant(argument[1])
            if constant is not None:  # ``x == null`` and the like: the constant's kind is known
                value, value_kind = constant[0], _kind(constant[0])

                def equality_to_constant(env: Environment) -> bool:
                    a = left(env)
                    return (a == value and _kind(a) == value_kind) is wanted

                return equality_to_constant

            def equality(env: Environment) -> bool:
                a, b = left(env), right(env)
                return (_kind(a) == _kind(b) and a == b) is wanted

            return equality
        compare = _COMPARISONS[op]

        def ordering(env: Environment) -> bool:
            a, b = left(env), right(env)
            kind = _kind(a)
            return kind == _kind(b) and kind in ("number", "timestamp") and bool(compare(a, b))

        return ordering
    operand = _compile_operand(expr)

    def truthy(env: Environment) -> bool:
        value = operand(env)
        return value is True or (_kind(value) == "number" and value != 0)

    return truthy


def _chain(op: str, parts: list[Guard]) -> Guard:
    """``and``/``or`` of parts as nested two-part closures (no generator per evaluation),
    still short-circuiting left to right."""
    if not parts:
        return (lambda env: True) if op == "and" else (lambda env: False)
    first = parts[0]
    if len(parts) == 1:
        return lambda env: bool(first(env))
    rest = _chain(op, parts[1:])
    if op == "and":
        return lambda env: bool(first(env)) and rest(env)
    return lambda env: bool(first(env)) or rest(env)


def _constant(operand: Any) -> tuple[Any] | None:
    """``(value,)`` when the operand is a constant (``{"const": ...}`` or a non-path literal
    such as null or a number), else None."""
    if isinstance(operand, dict):
        return (operand["const"],)
    if not isinstance(operand, str):
        return (operand,)
    return None


def _compile_operand(operand: Any) -> Operand:
    """The resolver of one operand: a constant, ``now``, or a dotted path from a root."""
    if isinstance(operand, dict):
        constant = operand["const"]
        return lambda env: constant
    if not isinstance(operand, str):
        return lambda env: operand
    if operand == "now":
        return lambda env: env.roots["now"]
    root, *path = operand.split(".")

    if len(path) == 1:  # ``ctx.x``, ``event.x``, ``job.x``: the common case, unrolled
        (name,) = path

        def resolve_one(env: Environment) -> Any:
            value = env.roots.get(root)
            if type(value) is dict:  # ``event`` and ``ctx``: no call to _step
                return value.get(name)
            return _step(value, name)

        return resolve_one

    if len(path) == 2:  # ``job.lease.token``: unrolled too
        first, second = path

        def resolve_two(env: Environment) -> Any:
            return _step(_step(env.roots.get(root), first), second)

        return resolve_two

    def resolve(env: Environment) -> Any:
        value = env.roots.get(root)
        for part in path:
            value = _step(value, part)
        return value

    return resolve


_MAPPING_TYPES: dict[type, bool] = {dict: True}


def _step(value: Any, part: str) -> Any:
    """``value.part``: a key of a mapping, else an attribute; None stays None."""
    if value is None:
        return None
    kind = type(value)
    mapping = _MAPPING_TYPES.get(kind)
    if mapping is None:  # the ABC check costs more than the rest: once per type
        mapping = _MAPPING_TYPES[kind] = isinstance(value, Mapping)
    return value.get(part) if mapping else getattr(value, part, None)


_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    datetime: "timestamp",
}


def _kind(value: Any) -> str:
    """The spec's kind of an operand value: values of different kinds never compare."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime):
        return "timestamp"
    return type(value).__name__


class Machine:
    """One machine file, ready to select transitions."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.name: str = document["machine"]
        self.states: dict[str, dict[str, Any]] = dict(document["states"])
        self.events: dict[str, dict[str, Any]] = dict(document["events"])
        self.guards: dict[str, Expr] = {
            name: guard["expr"] for name, guard in document["guards"].items()
        }
        self._guards: dict[str, Guard] = {
            name: compile_guard(expr) for name, expr in self.guards.items()
        }
        self.effects: dict[str, Effect] = {
            name: Effect(name, effect.get("scope", "job"), effect.get("request_event"))
            for name, effect in document["effects"].items()
        }
        self.initial_event: str = document["initial"]["event"]
        self.initial_state: str = document["initial"]["to"]
        self.refusals = tuple(
            Refusal(item["code"], item["when"], item["req"])
            for item in document.get("refusals", [])
        )
        self.transitions = tuple(
            Transition(
                id=item["id"],
                sources=frozenset(item["from"]),
                event=item["event"],
                guard=item.get("guard"),
                target=item["to"],
                effects=tuple(item.get("effects", ())),
                req=item["req"],
            )
            for item in document["transitions"]
        )
        self._by_event: dict[str, tuple[Transition, ...]] = {
            event: tuple(t for t in self.transitions if t.event == event) for event in self.events
        }
        # The transitions an event may fire from each state, in file order, with their guards:
        # selecting one is a lookup and the guards of that state alone.
        self._candidates: dict[tuple[str, str], tuple[tuple[Transition, Guard | None], ...]] = {
            (state, event): tuple(
                (t, None if t.guard is None else self._guards[t.guard])
                for t in transitions
                if state in t.sources
            )
            for event, transitions in self._by_event.items()
            for state in self.states
        }
        self._refusal_guards = tuple(compile_guard(refusal.when) for refusal in self.refusals)
        self._refusal_checks = tuple(zip(self.refusals, self._refusal_guards, strict=True))
        for refusal in self.refusals:
            if refusal.code not in REFUSALS:
                raise SpecError(f"machine {self.name} refuses with unknown code {refusal.code!r}")

    def tagged(self, tag: str) -> frozenset[str]:
        """States carrying ``tag`` (e.g. ``claimable``, ``terminal``)."""
        return frozenset(name for name, state in self.states.items() if tag in state["tags"])

    def require_effects(self, implemented: set[str]) -> None:
        missing = set(self.effects) - implemented
        if missing:
            raise SpecError(
                f"the {self.name} machine names effects this implementation lacks: "
                f"{sorted(missing)}; upgrade conveyor to a version that supports this spec"
            )

    def select(self, state: str, event: str, env: Environment | None) -> Transition:
        """The transition ``event`` fires from ``state``, or the refusal the spec demands.

        ``env`` may be None for a machine with no refusals and no guards (nothing to read).
        """
        if env is None:
            env = _NOTHING
        candidates = self._candidates.get((state, event))
        if candidates is None and event not in self.events:
            raise InvalidTransition(f"{self.name} machine has no event {event!r}")
        for refusal, refused in self._refusal_checks:
            if refused(env):
                raise REFUSALS[refusal.code](
                    f"{event} refused: {refusal.code} ({refusal.req}); the lease this report "
                    "belongs to is no longer current, so its result is discarded"
                )
        for transition, guard in candidates or ():
            if guard is None or guard(env):
                return transition
        raise InvalidTransition(
            f"event {event!r} is not allowed for a {self.name} in state {state!r} "
            f"(spec machines/{self.name}.json)"
        )

    def allows(self, state: str, event: str) -> bool:
        """Whether some transition leaves ``state`` on ``event`` (ignoring guards)."""
        return any(state in t.sources for t in self._by_event.get(event, ()))
