#!/usr/bin/env python3
"""Check that the Conveyor spec files agree with each other.

Usage (from the repository root)::

    python spec/tools/spec_check.py            # checks ./spec
    python spec/tools/spec_check.py path/to/spec

Exit status 0 prints a one-line summary; exit status 1 lists every problem found.
Needs only the standard library, ``jsonschema`` and ``referencing``; it never goes online.

What is checked:

* every schema is valid against the JSON Schema 2020-12 metaschema, has a unique ``$id`` under
  the spec version, and every ``$ref`` resolves within the spec (offline registry);
* machine files validate against ``schemas/machine.schema.json`` and ``retry-presets.json``
  against ``schemas/retry-presets.schema.json``; the default preset exists;
* ``examples/valid`` instances validate and ``examples/invalid`` instances do not;
* each machine: every referenced state, event, guard, effect and request event exists, every
  definition is used, every state is reachable from the initial state, guard operands name
  known fields and event parameters, refusal codes are error codes;
* the state enums of the job, request and batch schemas equal the machines' states;
* ``spec.md``: every state and event name appears in backticks, every requirement cited by a
  machine is an anchor, requirement IDs are unique, every paragraph using an upper-case BCP 14
  key word starts with a ``**[ID]**`` marker and ends with its ``{: #ID }`` anchor, lower-case
  "must"/"should" does not appear in normative prose, and internal links resolve;
* versions are kept honestly (``releases.py``): a released requirement whose text changed has a
  new ID or is named in ``CHANGELOG.md``, and every release's changelog accounts for each
  requirement it added, changed or removed.

``--release`` records the digest of the version in ``VERSION`` as ``releases/<version>.json``
(run it when a version is released, after moving its changelog entries under its heading).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

import releases

MACHINES = ("job", "request", "batch")
STATE_ENUM_SCHEMAS = {
    "job": "job.schema.json",
    "request": "request.schema.json",
    "batch": "batch.schema.json",
}
# The record schema whose properties `job.<field>` / `batch.<field>` operands may name.
RECORD_SCHEMAS = {
    "job": "job.schema.json",
    "request": "request.schema.json",
    "batch": "batch.schema.json",
}
OPERAND = re.compile(r"^(now|(job|event|ctx|batch)\.([a-z_][a-z_.]*))$")
REQ_ID = re.compile(r"^[A-Z]+-[0-9]{3}$")
MARKER = re.compile(r"^\*\*\[([A-Z]+-[0-9]{3})\]\*\*\s")
ANCHOR_LINE = re.compile(r"^\{:\s*#([A-Za-z0-9_-]+)\s*\}$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*(?:\{#([A-Za-z0-9_-]+)\})?\s*$")
KEYWORD = re.compile(r"\b(MUST|SHOULD|MAY|SHALL|REQUIRED|RECOMMENDED|OPTIONAL)\b")
LOWER_KEYWORD = re.compile(r"\b(must|should)\b")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK_TARGET = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-[0-9A-Za-z.-]+)?$")


@dataclass
class Result:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    version: str = "?"

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def load_json(path: Path, result: Result) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        result.add(f"{path}: file is missing")
    except json.JSONDecodeError as error:
        result.add(f"{path}: not valid JSON ({error})")
    return None


def error_text(error: Any) -> str:
    location = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"at {location}: {error.message}"


# -- schemas -------------------------------------------------------------------------------


def check_schemas(spec: Path, version: str, result: Result) -> tuple[dict[str, Any], Registry]:
    """Metaschema-validate every schema and build the offline registry keyed by $id."""
    schemas: dict[str, Any] = {}
    resources = []
    seen_ids: dict[str, str] = {}
    major_minor = ".".join(version.split(".")[:2])
    files = sorted((spec / "schemas").glob("*.schema.json"))
    if not files:
        result.add(f"{spec / 'schemas'}: no *.schema.json files")
    for path in files:
        schema = load_json(path, result)
        if schema is None:
            continue
        name = path.name
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            result.add(f"schemas/{name}: not a valid 2020-12 schema {error_text(error)}")
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            result.add(f"schemas/{name}: $schema is not the 2020-12 metaschema")
        schema_id = schema.get("$id")
        expected = f"https://conveyor.dev/spec/{major_minor}/schemas/{name}"
        if schema_id != expected:
            result.add(f"schemas/{name}: $id is {schema_id!r}, expected {expected!r}")
        if schema_id in seen_ids:
            result.add(f"schemas/{name}: $id {schema_id!r} already used by {seen_ids[schema_id]}")
        if isinstance(schema_id, str):
            seen_ids[schema_id] = name
            resources.append(
                (schema_id, Resource.from_contents(schema, default_specification=DRAFT202012))
            )
        schemas[name] = schema
    registry: Registry = Registry().with_resources(resources)
    for name, schema in schemas.items():
        for ref in iter_refs(schema):
            try:
                resolver = registry.resolver(base_uri=schema.get("$id", ""))
                resolver.lookup(ref)
            except Unresolvable as error:
                result.add(f"schemas/{name}: $ref {ref!r} does not resolve offline ({error})")
    result.counts["schemas"] = len(schemas)
    return schemas, registry


def iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def validator_for(target: str, registry: Registry, base: str) -> Draft202012Validator:
    """A validator for ``file.schema.json`` or ``file.schema.json#/json/pointer``."""
    return Draft202012Validator({"$ref": base + target}, registry=registry)


def validation_errors(instance: Any, target: str, registry: Registry, base: str) -> list[str]:
    try:
        errors = sorted(
            validator_for(target, registry, base).iter_errors(instance),
            key=lambda e: list(e.absolute_path),
        )
    except Unresolvable as error:
        return [f"schema {target!r} does not resolve ({error})"]
    except Exception as error:  # an invalid schema (reported separately) cannot be applied
        return [f"schema {target!r} cannot be applied ({type(error).__name__}: {error})"]
    return [error_text(error) for error in errors]


# -- examples ------------------------------------------------------------------------------


def check_examples(spec: Path, registry: Registry, base: str, result: Result) -> None:
    for kind in ("valid", "invalid"):
        folder = spec / "examples" / kind
        files = sorted(folder.glob("*.json"))
        result.counts[f"{kind} examples"] = len(files)
        if not files:
            result.add(f"examples/{kind}: no examples")
        for path in files:
            label = f"examples/{kind}/{path.name}"
            example = load_json(path, result)
            if example is None:
                continue
            if not isinstance(example, dict) or set(example) != {
                "schema",
                "description",
                "instance",
            }:
                result.add(f"{label}: must be an object with exactly schema, description, instance")
                continue
            target = example["schema"]
            if not isinstance(target, str) or not re.match(
                r"^[a-z-]+\.schema\.json(#/.*)?$", target
            ):
                result.add(
                    f"{label}: schema {target!r} is not a schema file name (optionally #/pointer)"
                )
                continue
            if not isinstance(example["description"], str) or not example["description"].strip():
                result.add(f"{label}: description is empty")
            errors = validation_errors(example["instance"], target, registry, base)
            if errors and errors[0].startswith(f"schema {target!r} "):
                result.add(f"{label}: {errors[0]}")
            elif kind == "valid" and errors:
                result.add(f"{label}: valid example fails {target}: " + "; ".join(errors[:3]))
            elif kind == "invalid" and not errors:
                result.add(f"{label}: invalid example passes {target} (it should fail)")


# -- machines ------------------------------------------------------------------------------


def operands(expr: Any) -> Iterator[Any]:
    """Every operand in a guard expression."""
    if isinstance(expr, dict) and "const" not in expr:
        for op, argument in expr.items():
            if op in ("and", "or"):
                for item in argument:
                    yield from operands(item)
            elif op == "not":
                yield from operands(argument)
            else:
                yield from argument
    else:
        yield expr


@dataclass
class MachineCheck:
    """The checks of one machine file; each method reports into ``result``."""

    name: str
    machine: dict[str, Any]
    schemas: dict[str, Any]
    request_machine: dict[str, Any] | None
    error_codes: set[str]
    spec_text: str
    result: Result
    events_by_guard: dict[str, set[str]] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=dict)
    incoming: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"machines/{self.name}.json"

    def part(self, key: str) -> Any:
        return self.machine.get(key, [] if key in ("transitions", "refusals") else {})

    def run(self) -> None:
        self.check_initial()
        self.check_transitions()
        self.check_unused()
        self.check_reachability()
        self.check_operands()
        self.check_effects()
        self.check_state_enum()
        self.check_names_in_spec()

    def check_initial(self) -> None:
        initial = self.part("initial")
        if self.machine.get("machine") != self.name:
            self.result.add(
                f"{self.where}: machine is {self.machine.get('machine')!r}, expected {self.name!r}"
            )
        if initial.get("event") not in self.part("events"):
            self.result.add(
                f"{self.where}: initial event {initial.get('event')!r} is not defined in events"
            )
        if initial.get("to") not in self.part("states"):
            self.result.add(
                f"{self.where}: initial state {initial.get('to')!r} is not defined in states"
            )

    def check_transitions(self) -> None:
        states, seen_ids = self.part("states"), set()
        for transition in self.part("transitions"):
            tid = transition.get("id", "?")
            label = f"{self.where}: transition {tid}"
            if tid in seen_ids:
                self.result.add(f"{label}: duplicate transition id")
            seen_ids.add(tid)
            sources = transition.get("from", [])
            for source in sources:
                if source not in states:
                    self.result.add(f"{label}: from-state {source!r} is not defined")
            target = transition.get("to")
            if target not in states:
                self.result.add(f"{label}: to-state {target!r} is not defined")
            else:
                self.incoming.add(target)
                for source in sources:
                    self.edges.setdefault(source, set()).add(target)
            event = transition.get("event")
            if event not in self.part("events"):
                self.result.add(f"{label}: event {event!r} is not defined")
            guard = transition.get("guard")
            if guard is not None:
                self.events_by_guard.setdefault(guard, set()).add(event)
                if guard not in self.part("guards"):
                    self.result.add(f"{label}: guard {guard!r} is not defined")
            for effect in transition.get("effects", []):
                if effect not in self.part("effects"):
                    self.result.add(f"{label}: effect {effect!r} is not defined")

    def check_unused(self) -> None:
        transitions = self.part("transitions")
        used = {
            "event": {t.get("event") for t in transitions} | {self.part("initial").get("event")},
            "guard": {t.get("guard") for t in transitions},
            "effect": {e for t in transitions for e in t.get("effects", [])},
        }
        for kind, key in (("event", "events"), ("guard", "guards"), ("effect", "effects")):
            for item in sorted(set(self.part(key)) - used[kind]):
                self.result.add(f"{self.where}: {kind} {item!r} is defined but never used")

    def check_reachability(self) -> None:
        states = self.part("states")
        start = self.part("initial").get("to")
        reached = {start} if start in states else set()
        frontier = list(reached)
        while frontier:
            for target in self.edges.get(frontier.pop(), ()):
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        for state in states:
            if state != start and state not in self.incoming:
                self.result.add(
                    f"{self.where}: state {state!r} has no incoming transition "
                    "and is not the initial state"
                )
            elif state not in reached:
                self.result.add(
                    f"{self.where}: state {state!r} is unreachable from the initial state {start!r}"
                )

    def check_operands(self) -> None:
        events = self.part("events")
        for guard_name, guard in self.part("guards").items():
            guard_events = self.events_by_guard.get(guard_name, set())
            params: set[str] = (
                set.intersection(*(set(events.get(e, {}).get("params", [])) for e in guard_events))
                if guard_events
                else set()
            )
            self.check_expr(guard.get("expr"), f"{self.where}: guard {guard_name!r}", params)
        all_params = {param for event in events.values() for param in event.get("params", [])}
        for index, refusal in enumerate(self.part("refusals")):
            label = f"{self.where}: refusal {index}"
            if refusal.get("code") not in self.error_codes:
                self.result.add(
                    f"{label}: code {refusal.get('code')!r} is not in error.schema.json error_code"
                )
            self.check_expr(refusal.get("when"), label, all_params)

    def check_expr(self, expr: Any, label: str, params: set[str]) -> None:
        record = RECORD_SCHEMAS[self.name]
        record_fields = set(self.schemas.get(record, {}).get("properties", {}))
        expected_root = "batch" if self.name == "batch" else "job"
        for operand in operands(expr):
            if not isinstance(operand, str) or operand == "now":
                continue
            match = OPERAND.match(operand)
            if not match:
                self.result.add(f"{label}: operand {operand!r} is not now, job.*, event.*, ctx.*")
                continue
            root, first = match.group(2), match.group(3).split(".")[0]
            if root == "event" and first not in params:
                self.result.add(f"{label}: operand {operand!r} names a parameter its event lacks")
            elif root in ("job", "batch") and root != expected_root:
                self.result.add(f"{label}: operand {operand!r} does not belong to this machine")
            elif root in ("job", "batch") and first not in record_fields:
                if f"`{root}.{first}`" not in self.spec_text:
                    self.result.add(
                        f"{label}: operand {operand!r} is neither a field of {record} "
                        "nor a derived field defined in spec.md"
                    )
            elif root == "ctx" and f"`ctx.{first}`" not in self.spec_text:
                self.result.add(f"{label}: context fact {operand!r} is not defined in spec.md")

    def check_effects(self) -> None:
        request_events = set((self.request_machine or {}).get("events", {}))
        for effect_name, effect in self.part("effects").items():
            label = f"{self.where}: effect {effect_name!r}"
            request_event = effect.get("request_event")
            if effect.get("scope", "job") == "all_unfinished" and request_event is None:
                self.result.add(f"{label} has scope all_unfinished but no request_event")
            if request_event is None:
                continue
            if self.name != "job":
                self.result.add(f"{label} fires a request event outside the job machine")
            elif request_event not in request_events:
                self.result.add(
                    f"{label} fires request event {request_event!r}, "
                    "which machines/request.json does not define"
                )

    def check_state_enum(self) -> None:
        schema_name = STATE_ENUM_SCHEMAS[self.name]
        states = set(self.part("states"))
        schema = self.schemas.get(schema_name, {})
        enum = schema.get("properties", {}).get("state", {}).get("enum")
        if enum is None:
            self.result.add(f"schemas/{schema_name}: has no properties.state.enum")
        elif set(enum) != states or len(enum) != len(set(enum)):
            self.result.add(
                f"schemas/{schema_name}: state enum differs from {self.where} states "
                f"(missing {sorted(states - set(enum))}, extra {sorted(set(enum) - states)})"
            )

    def check_names_in_spec(self) -> None:
        for kind, key in (("state", "states"), ("event", "events")):
            for item in self.part(key):
                if f"`{item}`" not in self.spec_text:
                    self.result.add(
                        f"spec.md: {self.name} {kind} `{item}` is never mentioned in backticks"
                    )


def machine_reqs(machine: dict[str, Any]) -> Iterator[tuple[str, str]]:
    initial = machine.get("initial", {})
    if "req" in initial:
        yield "initial", initial["req"]
    for transition in machine.get("transitions", []):
        yield f"transition {transition.get('id')}", transition.get("req", "")
    for name, effect in machine.get("effects", {}).items():
        if "req" in effect:
            yield f"effect {name}", effect["req"]
    for index, refusal in enumerate(machine.get("refusals", [])):
        yield f"refusal {index}", refusal.get("req", "")


def check_request_events_fired(
    job: dict[str, Any], request: dict[str, Any], result: Result
) -> None:
    fired = {effect.get("request_event") for effect in job.get("effects", {}).values()}
    fired.add(request.get("initial", {}).get("event"))
    for event in request.get("events", {}):
        if event not in fired:
            result.add(f"machines/request.json: event {event!r} is never fired by a job effect")


# -- spec.md -------------------------------------------------------------------------------


@dataclass
class Block:
    line: int
    lines: list[str]
    section: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def blocks(text: str) -> tuple[list[Block], set[str]]:
    """Paragraph-like blocks outside fenced code, and the explicit heading ids."""
    found: list[Block] = []
    heading_ids: set[str] = set()
    current: list[str] = []
    start = 0
    section = ""
    fenced = False

    def flush() -> None:
        nonlocal current
        if current:
            found.append(Block(start, current, section))
        current = []

    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = HEADING.match(line)
        if heading:
            flush()
            section = heading.group(2)
            if heading.group(3):
                heading_ids.add(heading.group(3))
            continue
        if not line.strip():
            flush()
            continue
        if not current:
            start = number
        current.append(line)
    flush()
    return found, heading_ids


def strip_code(text: str) -> str:
    return CODE_SPAN.sub(" ", text)


def check_spec_md(spec: Path, result: Result) -> tuple[str, set[str]]:
    path = spec / "spec.md"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        result.add(f"{path}: file is missing")
        return "", set()
    found, heading_ids = blocks(text)
    requirement_ids: list[str] = []
    anchors: set[str] = set()
    for block in found:
        where = f"spec.md:{block.line}"
        first = block.lines[0]
        marker = MARKER.match(first)
        last_anchor = ANCHOR_LINE.match(block.lines[-1].strip())
        prose = strip_code(block.text)
        for extra in block.lines[:-1]:
            if ANCHOR_LINE.match(extra.strip()):
                result.add(
                    f"{where}: anchor line {extra.strip()!r} is not the last line of its paragraph"
                )
        if last_anchor:
            anchors.add(last_anchor.group(1))
        if marker:
            rid = marker.group(1)
            requirement_ids.append(rid)
            if not last_anchor:
                result.add(
                    f"{where}: requirement [{rid}] does not end with the anchor line {{: #{rid} }}"
                )
            elif last_anchor.group(1) != rid:
                result.add(f"{where}: requirement [{rid}] ends with anchor #{last_anchor.group(1)}")
            if not KEYWORD.search(prose):
                result.add(f"{where}: requirement [{rid}] contains no upper-case key word")
        elif KEYWORD.search(prose):
            keyword = KEYWORD.search(prose).group(1)  # type: ignore[union-attr]
            result.add(
                f"{where}: paragraph uses {keyword} but does not start with a **[ID]** marker"
            )
        elif "**[" in first:
            result.add(f"{where}: malformed requirement marker in {first[:40]!r}")
        if "(informative)" not in block.section:
            lower = LOWER_KEYWORD.search(prose)
            if lower:
                result.add(
                    f"{where}: lower-case {lower.group(1)!r} in normative prose; use an "
                    "upper-case key word with a requirement ID, or other words"
                )
    seen: set[str] = set()
    for rid in requirement_ids:
        if rid in seen:
            result.add(f"spec.md: requirement ID {rid} is used more than once")
        seen.add(rid)
    for target in LINK_TARGET.findall(text):
        if target not in anchors and target not in heading_ids:
            result.add(f"spec.md: link to #{target}, which is neither a heading id nor an anchor")
    result.counts["requirements"] = len(requirement_ids)
    return text, {a for a in anchors if REQ_ID.match(a)}


# -- main ----------------------------------------------------------------------------------


def check(spec: Path) -> Result:
    result = Result()
    version_file = spec / "VERSION"
    try:
        version = version_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        result.add(f"{version_file}: file is missing")
        return result
    if not SEMVER.match(version):
        result.add(f"VERSION: {version!r} is not a SemVer version")
    major_minor = ".".join(version.split(".")[:2])
    base = f"https://conveyor.dev/spec/{major_minor}/schemas/"

    schemas, registry = check_schemas(spec, version, result)
    spec_text, req_anchors = check_spec_md(spec, result)
    result.counts["releases"] = releases.check_releases(spec, version, spec_text, result.problems)
    error_codes = set(
        schemas.get("error.schema.json", {}).get("$defs", {}).get("error_code", {}).get("enum", [])
    )

    machines: dict[str, dict[str, Any]] = {}
    for name in MACHINES:
        path = spec / "machines" / f"{name}.json"
        machine = load_json(path, result)
        if machine is None:
            continue
        for problem in validation_errors(machine, "machine.schema.json", registry, base):
            result.add(f"machines/{name}.json: does not match machine.schema.json {problem}")
        if machine.get("specversion") != major_minor:
            result.add(
                f"machines/{name}.json: specversion is {machine.get('specversion')!r}, "
                f"expected {major_minor!r}"
            )
        if machine.get("$schema") != base + "machine.schema.json":
            result.add(f"machines/{name}.json: $schema is not {base}machine.schema.json")
        machines[name] = machine
    for name, machine in machines.items():
        try:
            MachineCheck(
                name, machine, schemas, machines.get("request"), error_codes, spec_text, result
            ).run()
        except (AttributeError, TypeError) as error:  # shape problems already reported above
            result.add(f"machines/{name}.json: cannot be checked further ({error})")
        for where, req in machine_reqs(machine):
            if req not in req_anchors:
                result.add(
                    f"machines/{name}.json: {where} cites {req!r}, "
                    "which is not an anchor in spec.md"
                )
    if "job" in machines and "request" in machines:
        check_request_events_fired(machines["job"], machines["request"], result)
    result.counts["machines"] = len(machines)
    result.counts["states"] = sum(len(m.get("states", {})) for m in machines.values())
    result.counts["transitions"] = sum(len(m.get("transitions", [])) for m in machines.values())

    presets = load_json(spec / "retry-presets.json", result)
    if presets is not None:
        for problem in validation_errors(presets, "retry-presets.schema.json", registry, base):
            result.add(f"retry-presets.json: does not match retry-presets.schema.json {problem}")
        if presets.get("default") not in presets.get("presets", {}):
            result.add(
                f"retry-presets.json: default preset {presets.get('default')!r} is not defined"
            )
        if presets.get("specversion") != major_minor:
            result.add(
                f"retry-presets.json: specversion {presets.get('specversion')!r} != {major_minor!r}"
            )
        result.counts["retry presets"] = len(presets.get("presets", {}))

    check_examples(spec, registry, base, result)
    result.problems = list(dict.fromkeys(result.problems))
    result.version = version
    return result


def summary(result: Result) -> str:
    c = result.counts
    return (
        f"spec-check: OK - spec {result.version}: {c.get('schemas', 0)} schemas, "
        f"{c.get('machines', 0)} machines ({c.get('states', 0)} states, "
        f"{c.get('transitions', 0)} transitions), {c.get('retry presets', 0)} retry presets, "
        f"{c.get('valid examples', 0)} valid + {c.get('invalid examples', 0)} invalid examples, "
        f"{c.get('requirements', 0)} requirements, {c.get('releases', 0)} release digests"
    )


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    release = "--release" in args
    args = [arg for arg in args if arg != "--release"]
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    spec = Path(args[0]) if args else Path("spec")
    if not (spec / "VERSION").is_file():
        print(
            f"spec-check: {spec} is not a spec directory (no VERSION file); "
            "run from the repository root or pass the spec directory",
            file=sys.stderr,
        )
        return 1
    if release:
        version = (spec / "VERSION").read_text(encoding="utf-8").strip()
        problems = releases.write_release(spec, version, (spec / "spec.md").read_text("utf-8"))
        if problems:
            print(f"spec-check: cannot record release {version}:")
            for problem in problems:
                print(f"  - {problem}")
            return 1
        print(f"spec-check: recorded releases/{version}.json")
    result = check(spec)
    if result.problems:
        print(f"spec-check: {len(result.problems)} problem(s) in {spec}:")
        for problem in result.problems:
            print(f"  - {problem}")
        print(f"({result.counts.get('requirements', 0)} requirements)")
        return 1
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
