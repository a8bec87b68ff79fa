"""The machine engine: loads a machine file and decides which transition an event fires.

The engine knows no state or event by name. Guards are evaluated from the file's closed
expression language; effects are looked up by name in the implementation's registry, and a
machine naming an effect the implementation lacks is refused at load time.
"""

from __future__ import annotations

import operator
import re
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


Guard = Callable[[Environment], bool]
Chooser = Callable[[Mapping[str, Any]], Any]
_NOTHING: Mapping[str, Any] = {}


def evaluate(expr: Expr, env: Environment) -> bool:
    """Evaluate a guard expression (spec.md#machines)."""
    return compile_guard(expr)(env)


def compile_guard(expr: Expr) -> Guard:
    """A guard expression turned into one Python function, once per machine file."""
    chooser = _compile_chooser([(expr, True)])
    return lambda env: chooser(env.roots) is True


def _compile_chooser(cases: list[tuple[Expr, Any]]) -> Callable[[Mapping[str, Any]], Any]:
    """One function that tests the expressions of ``cases`` in order and returns the result
    paired with the first that holds (None if none does).

    The claim and every report select a transition by several guards. Nested closures cost a
    call per operand and per comparison, and selection was a third of a worker's Python per
    job; the generated source makes the same tests with the calls inlined. The source comes
    from the machine file's closed expression language alone (paths are checked to be
    identifiers, constants go in by reference), so nothing outside the file is executed.
    """
    writer = _SourceWriter()
    lines = [
        f"    if {writer.guard(expr)}:\n        return _r{index}\n"
        for index, (expr, _) in enumerate(cases)
    ]
    namespace: dict[str, Any] = {
        "_step": _step,
        "_same": _same,
        "_ordered": _ordered,
        "_truthy": _truthy,
        **{name: _COMPARISONS[op] for op, name in _OPERATORS.items()},
        **{f"_r{index}": result for index, (_, result) in enumerate(cases)},
        **writer.constants,
    }
    roots = "".join(f"    {name} = roots.get({root!r})\n" for root, name in writer.roots.items())
    source = f"def choose(roots):\n{roots}{''.join(lines)}    return None\n"
    exec(compile(source, f"<machine guards {len(cases)}>", "exec"), namespace)
    chooser: Callable[[Mapping[str, Any]], Any] = namespace["choose"]
    return chooser


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _SourceWriter:
    """Writes guard expressions as Python expressions over the roots (locals of the
    generated function) and the helpers below, with the semantics of MACH-004."""

    def __init__(self) -> None:
        self.roots: dict[str, str] = {}
        self.constants: dict[str, Any] = {}

    def guard(self, expr: Expr) -> str:
        if expr is True:  # a transition without a guard
            return "True"
        if isinstance(expr, dict) and "const" not in expr:
            ((op, argument),) = expr.items()
            if op in ("and", "or"):
                if not argument:
                    return "True" if op == "and" else "False"
                return "(" + f" {op} ".join(self.guard(item) for item in argument) + ")"
            if op == "not":
                return f"(not {self.guard(argument)})"
            left, right = (self.operand(item) for item in argument)
            if op in ("eq", "ne"):
                negate = "" if op == "eq" else "not "
                constant = _constant(argument[1])
                if constant is not None and constant[0] is None:
                    return f"({left} is {'' if op == 'eq' else 'not '}None)"
                return f"({negate}_same({left}, {right}))"
            return f"_ordered({_OPERATORS[op]}, {left}, {right})"
        return f"_truthy({self.operand(expr)})"

    def operand(self, operand: Any) -> str:
        if isinstance(operand, dict):
            return self.constant(operand["const"])
        if not isinstance(operand, str):
            return self.constant(operand)
        if operand == "now":
            return 'roots["now"]'
        root, *path = operand.split(".")
        for part in (root, *path):
            if not _IDENTIFIER.match(part):
                raise SpecError(f"guard operand {operand!r} is not a dotted path of names")
        code = self.roots.setdefault(root, f"_root_{root}")
        for part in path:
            code = f"(_v.get({part!r}) if type(_v := {code}) is dict else _step(_v, {part!r}))"
        return code

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name


_OPERATORS = {"lt": "_lt", "le": "_le", "gt": "_gt", "ge": "_ge"}


def _same(a: Any, b: Any) -> bool:
    """Equal in kind and value (eq); a value of another kind is never equal."""
    if type(a) is type(b):
        return bool(a == b)
    return _kind(a) == _kind(b) and bool(a == b)


def _ordered(compare: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    """lt/le/gt/ge: numbers and timestamps only, of the same kind; anything else is false."""
    kind = _kind(a)
    return kind == _kind(b) and kind in ("number", "timestamp") and bool(compare(a, b))


def _truthy(value: Any) -> bool:
    """A bare operand holds when it is true or a non-zero number."""
    return value is True or (_kind(value) == "number" and value != 0)


def _constant(operand: Any) -> tuple[Any] | None:
    """``(value,)`` when the operand is a constant (``{"const": ...}`` or a non-path literal
    such as null or a number), else None."""
    if isinstance(operand, dict):
        return (operand["const"],)
    if not isinstance(operand, str):
        return (operand,)
    return None


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
        # For each (state, event): one generated function that tests the refusals, then the
        # guards of the transitions the event may fire from that state, in file order, and
        # returns the first refusal or transition that holds. Selecting is a lookup and a call.
        refusals = [(refusal.when, refusal) for refusal in self.refusals]
        self._choosers: dict[tuple[str, str], Chooser] = {
            (state, event): _compile_chooser(
                refusals
                + [
                    (True if t.guard is None else self.guards[t.guard], t)
                    for t in transitions
                    if state in t.sources
                ]
            )
            for event, transitions in self._by_event.items()
            for state in self.states
        }
        self._refusals_only = _compile_chooser(refusals)
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
        choose = self._choosers.get((state, event))
        if choose is None:
            if event not in self.events:
                raise InvalidTransition(f"{self.name} machine has no event {event!r}")
            choose = self._refusals_only  # a state this file does not name
        chosen = choose(_NOTHING if env is None else env.roots)
        if type(chosen) is Transition:
            return chosen
        if type(chosen) is Refusal:
            raise REFUSALS[chosen.code](
                f"{event} refused: {chosen.code} ({chosen.req}); the lease this report "
                "belongs to is no longer current, so its result is discarded"
            )
        raise InvalidTransition(
            f"event {event!r} is not allowed for a {self.name} in state {state!r} "
            f"(spec machines/{self.name}.json)"
        )

    def allows(self, state: str, event: str) -> bool:
        """Whether some transition leaves ``state`` on ``event`` (ignoring guards)."""
        return any(state in t.sources for t in self._by_event.get(event, ()))
