"""MkDocs hook: generate the spec's diagrams and tables from the machine-readable spec files.

The state machines (spec/machines/*.json) and retry presets (spec/retry-presets.json) are the
normative source. Drawing their diagrams or copying their tables by hand would let the docs drift
from the spec, so every page that shows them carries a marker comment that this hook replaces at
build time:

- ``<!-- machines -->``: for each machine a placeholder for its state diagram (drawn as SVG by
  the machine_diagrams hook), the state, event, guard, effect and transition tables, and the
  event x state validity matrix.
- ``<!-- retry-delays -->``: each preset's parameters and its first delays.

A missing or malformed spec file fails the build with a message naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MACHINES_MARKER = "<!-- machines -->"
RETRY_MARKER = "<!-- retry-delays -->"

# Machines appear in this order; any other machine file follows alphabetically.
MACHINE_ORDER = ("job", "request", "batch")

# How many delays the retry table shows per preset.
RETRY_ATTEMPTS_SHOWN = 8

# Page (relative to the machines page) that holds the requirement anchors.
SPEC_PAGE = "spec.md"

TRANSITIONS_NOTE = (
    "Tried in this order; the first whose `from` holds the current state, whose event "
    "matches and whose guard holds fires."
)
MATRIX_NOTE = (
    "Where each event can lead from each state. `-` means the event is refused with "
    "`invalid_transition` and nothing changes; where a cell names several targets, the "
    "guards decide in transition order."
)
DELAYS_NOTE = (
    "The delay before the retry that follows failed attempt *n*, for *n* = 1 to {shown}, "
    "before jitter. An attempt that reaches the attempt limit is not retried: the job ends "
    "`permanently_failed`."
)

# Where a machine's diagram goes; the machine_diagrams hook replaces it with an SVG drawn by
# Graphviz once the page is HTML (the placeholder must match that hook's PLACEHOLDER_RE).
DIAGRAM_PLACEHOLDER = '<div class="machine-diagram" data-machine="{name}"></div>'


def _spec_dir(config: Any) -> Path:
    """The spec/ directory next to mkdocs.yml, so the build works from any working directory."""
    return Path(config["config_file_path"]).resolve().parent / "spec"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginError(f"spec_pages hook: {path} is missing; the spec pages need it.") from None
    except json.JSONDecodeError as exc:
        raise PluginError(f"spec_pages hook: {path} is not valid JSON: {exc}") from None


# --- shared formatting --------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(name: str) -> str:
    return f"`{name}`"


def _codes(names: list[str], sep: str = ", ") -> str:
    return sep.join(_code(n) for n in names) if names else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _req_link(req: str | None) -> str:
    return f"[{req}]({SPEC_PAGE}#{req})" if req else "-"


# --- guard expressions --------------------------------------------------------------------------

_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _operand(value: Any) -> str:
    if isinstance(value, dict) and "const" in value:
        return json.dumps(value["const"])
    if isinstance(value, str):
        return value
    return json.dumps(value)


def render_expr(expr: Any, nested: bool = False) -> str:
    """Render a guard expression of machine.schema.json as a one-line readable formula."""
    if isinstance(expr, dict) and ("and" in expr or "or" in expr):
        op = "and" if "and" in expr else "or"
        text = f" {op} ".join(render_expr(e, nested=True) for e in expr[op])
        return f"({text})" if nested and len(expr[op]) > 1 else text
    if isinstance(expr, dict) and "not" in expr:
        return f"not {render_expr(expr['not'], nested=True)}"
    if isinstance(expr, dict) and len(expr) == 1 and next(iter(expr)) in _COMPARISONS:
        (op, (left, right)) = next(iter(expr.items()))
        return f"{_operand(left)} {_COMPARISONS[op]} {_operand(right)}"
    return _operand(expr)


# --- machines -----------------------------------------------------------------------------------


def _state_table(machine: dict[str, Any]) -> str:
    rows = [
        [
            _code(name),
            _codes(state.get("tags", [])),
            state.get("description", ""),
            "<br>".join(state.get("moved_by", [])) or "nothing (final)",
        ]
        for name, state in machine["states"].items()
    ]
    return _table(["state", "tags", "description", "moved by"], rows)


def _event_table(machine: dict[str, Any]) -> str:
    initial = machine["initial"]
    rows = []
    for name, event in machine["events"].items():
        description = event.get("description", "")
        if name == initial["event"]:
            description += f" Creates the record in `{initial['to']}`."
        rows.append(
            [
                _code(name),
                event.get("fired_by", ""),
                _codes(event.get("params", [])),
                description,
            ]
        )
    return _table(["event", "fired by", "params", "description"], rows)


def _guard_table(machine: dict[str, Any]) -> str:
    rows = [
        [_code(name), guard.get("description", ""), _code(render_expr(guard["expr"]))]
        for name, guard in machine.get("guards", {}).items()
    ]
    return _table(["guard", "description", "expression"], rows)


def _effect_table(machine: dict[str, Any]) -> str:
    rows = []
    for name, effect in machine.get("effects", {}).items():
        scope = effect.get("scope", "job")
        if effect.get("request_event"):
            scope += f" (request event `{effect['request_event']}`)"
        rows.append(
            [
                _code(name),
                scope,
                effect.get("description", ""),
                _req_link(effect.get("req")),
            ]
        )
    return _table(["effect", "scope", "description", "requirement"], rows)


def _refusal_table(machine: dict[str, Any]) -> str:
    rows = [
        [
            _code(r["code"]),
            r.get("description", ""),
            _code(render_expr(r["when"])),
            _req_link(r.get("req")),
        ]
        for r in machine.get("refusals", [])
    ]
    return _table(["error code", "description", "refused when", "requirement"], rows)


def _transition_table(machine: dict[str, Any]) -> str:
    initial = machine["initial"]
    rows = [
        [
            "-",
            "(none)",
            _code(initial["event"]),
            "-",
            _code(initial["to"]),
            "-",
            _req_link(initial.get("req")),
        ]
    ]
    rows += [
        [
            t["id"],
            _codes(t["from"]),
            _code(t["event"]),
            _code(t["guard"]) if t.get("guard") else "-",
            _code(t["to"]),
            _codes(t.get("effects", [])),
            _req_link(t.get("req")),
        ]
        for t in machine["transitions"]
    ]
    return _table(["id", "from", "event", "guard", "to", "effects", "requirement"], rows)


def _validity_matrix(machine: dict[str, Any]) -> str:
    """Rows are events, columns states; a cell names where the event can lead, `-` if nowhere."""
    states = list(machine["states"])
    rows = []
    for event in machine["events"]:
        row = [_code(event)]
        for state in states:
            hits = [t for t in machine["transitions"] if t["event"] == event and state in t["from"]]
            if not hits:
                row.append("-")
            elif len(hits) == 1:
                row.append(hits[0]["to"])
            else:
                row.append("<br>".join(f"{t['to']} ({t['id']})" for t in hits))
        rows.append(row)
    return _table(["event \\ state", *states], rows)


def render_machine(machine: dict[str, Any], source: str) -> str:
    name = machine["machine"]
    parts = [
        f"## The {name} machine {{#machine-{name}}}",
        f"Generated from `{source}` (spec version {machine.get('specversion', '?')}).",
        machine.get("description", ""),
        DIAGRAM_PLACEHOLDER.format(name=name),
        "### States",
        _state_table(machine),
        "### Events",
        _event_table(machine),
    ]
    if machine.get("guards"):
        parts += ["### Guards", _guard_table(machine)]
    if machine.get("effects"):
        parts += ["### Effects", _effect_table(machine)]
    if machine.get("refusals"):
        parts += [
            "### Refusals",
            "Checked before the transitions, in order; the first that holds refuses the event.",
            _refusal_table(machine),
        ]
    parts += [
        "### Transitions",
        TRANSITIONS_NOTE,
        _transition_table(machine),
        "### Validity matrix",
        MATRIX_NOTE,
        _validity_matrix(machine),
    ]
    return "\n\n".join(p for p in parts if p)


def render_machines(spec_dir: Path) -> str:
    machines_dir = spec_dir / "machines"
    paths = sorted(machines_dir.glob("*.json"))
    if not paths:
        raise PluginError(f"spec_pages hook: no machine files found in {machines_dir}.")
    loaded = [(path, _load_json(path)) for path in paths]

    def order(item: tuple[Path, Any]) -> tuple[int, str]:
        stem = item[0].stem
        rank = MACHINE_ORDER.index(stem) if stem in MACHINE_ORDER else len(MACHINE_ORDER)
        return rank, stem

    sections = []
    for path, machine in sorted(loaded, key=order):
        try:
            sections.append(render_machine(machine, f"spec/machines/{path.name}"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PluginError(f"spec_pages hook: cannot render {path}: {exc!r}") from exc
    return "\n\n".join(sections)


# --- retry presets ------------------------------------------------------------------------------

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000), ("ms", 1))


def human_duration(ms: int, zero: str = "0 s") -> str:
    """Format milliseconds as the largest exact units, e.g. 5_400_000 -> '1 h 30 min'."""
    if ms == 0:
        return zero
    parts = []
    rest = ms
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts)


def base_delay_ms(policy: dict[str, Any], attempt: int) -> int:
    """The capped delay after failed attempt `attempt` (1-based), before jitter."""
    initial: int = policy["initial_delay_ms"]
    cap: int = policy["max_delay_ms"]
    backoff = policy["backoff"]
    if backoff == "constant":
        raw: float = initial
    elif backoff == "linear":
        raw = initial + policy.get("increment_ms", 0) * (attempt - 1)
    elif backoff == "exponential":
        raw = initial * policy.get("multiplier", 2) ** (attempt - 1)
    else:
        raise PluginError(f"spec_pages hook: unknown backoff {backoff!r} in retry presets.")
    return math.floor(min(cap, raw))


def render_retry(spec_dir: Path) -> str:
    path = spec_dir / "retry-presets.json"
    document = _load_json(path)
    presets: dict[str, Any] = document["presets"]
    default = document.get("default")
    version = document.get("specversion", "?")

    def limit(value: Any) -> str:
        return "unlimited" if value is None else str(value)

    summary = [
        [
            _code(name) + (" (default)" if name == default else ""),
            p["backoff"],
            human_duration(p["initial_delay_ms"]),
            str(p.get("multiplier", 2)) if p["backoff"] == "exponential" else "-",
            human_duration(p.get("increment_ms", 0)) if p["backoff"] == "linear" else "-",
            human_duration(p["max_delay_ms"]),
            limit(p.get("max_attempts")),
            "never" if p.get("notify_after") is None else f"at attempt {p['notify_after']}",
            str(p.get("jitter", 0)),
        ]
        for name, p in presets.items()
    ]
    attempts = range(1, RETRY_ATTEMPTS_SHOWN + 1)
    delays = []
    for name, p in presets.items():
        row = [_code(name)]
        for n in attempts:
            limited = p.get("max_attempts") is not None and n >= p["max_attempts"]
            row.append(
                "(fails for good)"
                if limited
                else human_duration(base_delay_ms(p, n), "immediately")
            )
        delays.append(row)
    return "\n\n".join(
        [
            f"Generated from `spec/retry-presets.json` (spec version {version}).",
            "### Presets",
            _table(
                [
                    "preset",
                    "backoff",
                    "initial delay",
                    "multiplier",
                    "increment",
                    "cap",
                    "max attempts",
                    "notify",
                    "jitter",
                ],
                summary,
            ),
            "### First delays",
            DELAYS_NOTE.format(shown=RETRY_ATTEMPTS_SHOWN),
            _table(["preset", *(f"n = {n}" for n in attempts)], delays),
        ]
    )


# --- MkDocs events ------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker comments with content generated from the spec files."""
    if MACHINES_MARKER in markdown:
        markdown = markdown.replace(MACHINES_MARKER, render_machines(_spec_dir(config)))
    if RETRY_MARKER in markdown:
        markdown = markdown.replace(RETRY_MARKER, render_retry(_spec_dir(config)))
    return markdown


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """Rebuild on `mkdocs serve` when a spec file changes, not only when docs/ does."""
    server.watch(str(_spec_dir(config)))
    return server
