"""MkDocs hook: the conformance pages generated from the protocol schemas and the reports.

- ``<!-- conformance-protocol -->``: the command reference of the harness protocol, from
  ``conformance-tests/protocol/commands/*.schema.json`` (members, types, what each one does).
- ``<!-- conformance-matrix -->``: the compliance matrix of the reference backends, from the
  reports ``just conformance`` writes to ``docs/conformance/reports/<backend>.json``, followed by
  the requirements the harness cannot test (with the reports' reasons), those it observes in part
  and the departures from a SHOULD. A backend without a report shows "not run"; the build never
  fails for a missing report.
- ``<!-- conformance-vectors -->``: the vector files and how many vectors each holds.

The schemas are the source: the reference cannot drift from what the suite validates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

PROTOCOL_MARKER = "<!-- conformance-protocol -->"
MATRIX_MARKER = "<!-- conformance-matrix -->"
VECTORS_MARKER = "<!-- conformance-vectors -->"

# The columns of the matrix, in this order; other report files follow alphabetically.
BACKENDS = ("memory", "sqlite", "postgresql", "mariadb", "postgresql+rabbitmq", "sqlite+rabbitmq")
ORDER = (
    "start",
    "reset",
    "stop",
    "clock_set",
    "clock_advance",
    "barrier",
    "publish",
    "publish_bulk",
    "claim",
    "report",
    "heartbeat",
    "rescue",
    "script_handlers",
    "run_worker",
    "cancel",
    "requeue",
    "retry",
    "clear_finished",
    "fire",
    "get",
    "list",
    "unfinished_identifiers",
    "retry_delay",
    "notifications",
    "batch_open",
    "batch_seal",
    "batch_get",
)
GROUPS = (
    ("session", "Session"),
    ("clock", "Clock and barrier"),
    ("publishing", "Publishing"),
    ("workers", "Workers"),
    ("worker", "Worker mode commands"),
    ("operations", "Operations"),
    ("reading", "Reading"),
    ("batches", "Batches"),
)
MARKS = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "error": "⚠️ error",
    "skip": "skipped",
    "untested": "· untested",
    "not_testable": "n/t",
    "not_claimed": "n/a",
}
SPEC_PAGE = "../spec/spec.md"


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginError(f"conformance_pages hook: {path} is missing.") from None
    except json.JSONDecodeError as exc:
        raise PluginError(f"conformance_pages hook: {path} is not valid JSON: {exc}") from None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- protocol reference ---------------------------------------------------------------------------


def describe_type(schema: Any) -> str:
    """A short, readable type for a schema: `integer ≥ 0`, `array of job`, ..."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        ref = schema["$ref"]
        name = ref.rsplit("/", 1)[-1].replace(".schema.json", "")
        if "#/$defs/" in ref:
            name = ref.rsplit("/", 1)[-1]
        elif "#/properties/" in ref:
            name = ref.split("#/properties/")[1]
        return f"`{name}`"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {describe_type(schema.get('items', {}))}"
    bounds = []
    if "minimum" in schema:
        bounds.append(f"≥ {schema['minimum']}")
    if "maximum" in schema:
        bounds.append(f"≤ {schema['maximum']}")
    if "minLength" in schema:
        bounds.append(f"{schema['minLength']} to {schema.get('maxLength', '…')} characters")
    return " ".join([str(kind), *bounds])


def _members(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    properties = {k: v for k, v in schema.get("properties", {}).items() if k not in skip}
    if not properties:
        return "No members.\n"
    required = set(schema.get("required", []))
    rows = [
        [
            f"`{name}`",
            describe_type(value),
            "yes" if name in required else "no",
            value.get("description", "") if isinstance(value, dict) else "",
        ]
        for name, value in properties.items()
    ]
    return _table(["member", "type", "required", "notes"], rows) + "\n"


def render_protocol(directory: Path) -> str:
    commands = {}
    index = _load(directory / "commands.json")["commands"]
    for path in sorted((directory / "commands").glob("*.schema.json")):
        schema = _load(path)
        # What a command needs is kept in commands.json (the schemas stay strict-clean).
        schema = {
            **{f"x-{key}": value for key, value in index.get(schema["title"], {}).items()},
            **schema,
        }
        commands[schema["title"]] = (schema, path.name)
    rank = {name: index for index, name in enumerate(ORDER)}
    commands = dict(sorted(commands.items(), key=lambda item: (rank.get(item[0], 99), item[0])))
    if not commands:
        raise PluginError(f"conformance_pages hook: no command schemas in {directory}")
    out = []
    index_rows = []
    for group, title in GROUPS:
        names = [n for n, (s, _) in commands.items() if s.get("x-group") == group]
        for name in names:
            schema = commands[name][0]
            needs = schema.get("x-capability") or schema.get("x-feature") or "required"
            index_rows.append(
                [f"[`{name}`](#{name})", title, f"`{needs}`" if needs != "required" else needs]
            )
    out.append(_table(["command", "group", "needs"], index_rows) + "\n")
    for group, title in GROUPS:
        names = [n for n, (s, _) in commands.items() if s.get("x-group") == group]
        if not names:
            continue
        out.append(f"## {title}\n")
        for name in names:
            schema, filename = commands[name]
            defs = schema["$defs"]
            out.append(f"### `{name}` {{#{name}}}\n")
            out.append(schema["description"] + "\n")
            if "x-capability" in schema:
                capability = schema["x-capability"]
                out.append(
                    f"Optional: only for adapters that declare the capability `{capability}`.\n"
                )
            if "x-feature" in schema:
                out.append(f"Part of the feature `{schema['x-feature']}`.\n")
            out.append("**Request** (besides `seq` and `cmd`)\n")
            out.append(_members(defs["request"], skip=("seq", "cmd")))
            out.append("**Result**\n")
            out.append(_members(defs["result"]))
            body = json.dumps(schema, indent=2)
            out.append(
                f'??? note "Schema: `protocol/commands/{filename}`"\n\n'
                + "    ```json\n"
                + "\n".join(f"    {line}" for line in body.splitlines())
                + "\n    ```\n"
            )
    envelope = json.dumps(_load(directory / "envelope.schema.json"), indent=2)
    out.append("## Envelope\n")
    out.append(
        "Every request and response, whatever the command (`protocol/envelope.schema.json`).\n\n"
        "```json\n" + envelope + "\n```\n"
    )
    return "\n".join(out)


# --- compliance matrix ----------------------------------------------------------------------------


def _reports(directory: Path) -> dict[str, dict[str, Any] | None]:
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(BACKENDS)
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            found[path.stem] = _load(path)
    return found


def _mark(status: str | None) -> str:
    if status is None:
        return "not run"
    return MARKS.get(status, status)


def _render_coverage(
    reports: dict[str, dict[str, Any] | None], requirements: list[str]
) -> list[str]:
    """The requirements the harness cannot observe, those it sees in part, and departures."""
    out: list[str] = []
    notes: dict[str, str] = {}
    for report in reports.values():
        for req, note in (report or {}).get("notes", {}).items():
            notes.setdefault(req, note)
    untestable = [
        req
        for req in requirements
        if any(r and r["requirements"].get(req) == "not_testable" for r in reports.values())
    ]
    if untestable:
        out.append("## Not testable through the harness\n")
        out.append(
            "The suite reaches an implementation only through the protocol, one request at a "
            "time, with the harness in place of handlers. These requirements govern what never "
            "crosses it; an implementation covers them with its own tests.\n"
        )
        rows = [[f"[{req}]({SPEC_PAGE}#{req})", notes.get(req, "")] for req in untestable]
        out.append(_table(["requirement", "why"], rows) + "\n")
    partly = [req for req in requirements if req in notes and req not in untestable]
    if partly:
        out.append("## Observed in part\n")
        out.append("What the checks of these requirements cannot see through the protocol.\n")
        rows = [
            [f"[{req}]({SPEC_PAGE}#{req})" if not req.startswith("PROTO-") else req, notes[req]]
            for req in partly
        ]
        out.append(_table(["requirement", "what the checks leave out"], rows) + "\n")
    departing = [(name, r) for name, r in reports.items() if r and r.get("departures")]
    if departing:
        out.append("## Departures from a SHOULD\n")
        out.append(
            "Checks that passed with an outcome the spec allows but does not recommend "
            "(see [Reading the report](report.md#departures-from-a-should)).\n"
        )
        for name, report in departing:
            seen: dict[str, list[str]] = {}
            for departure in report["departures"]:
                seen.setdefault(departure["id"], departure["requirements"])
            items = ", ".join(f"`{check}` ({', '.join(reqs)})" for check, reqs in seen.items())
            out.append(f"- `{name}`: {items}")
        out.append("")
    return out


def render_matrix(root: Path) -> str:
    reports = _reports(root / "docs" / "conformance" / "reports")
    names = list(reports)
    header = ["", *[f"`{n}`" for n in names]]
    out = []

    rows = []
    verdicts = {
        "conforms": "✅ conforms",
        "does_not_conform": "❌ does not conform",
        "inconclusive": "⚠️ inconclusive",
    }
    rows.append(
        ["**verdict**"]
        + [verdicts.get(r["verdict"], r["verdict"]) if r else "not run" for r in reports.values()]
    )
    rows.append(
        ["checks passed / failed / skipped"]
        + [
            f"{r['totals']['pass']} / {r['totals']['fail']} / {r['totals']['skip']}" if r else "-"
            for r in reports.values()
        ]
    )
    rows.append(
        ["stateful examples, steps each (seed)"]
        + [
            f"{r['stateful']['max_examples']}, {r['stateful']['steps']} ({r['stateful']['seed']})"
            if r and r["stateful"].get("max_examples")
            else "-"
            for r in reports.values()
        ]
    )
    out.append(_table(header, rows) + "\n")

    features: list[str] = []
    for report in reports.values():
        if report:
            features += [f for f in report["features"] if f not in features]
    out.append("## Features\n")
    rows = [
        [f"`{feature}`"]
        + [
            _mark(r["features"][feature]["status"]) if r and feature in r["features"] else "not run"
            for r in reports.values()
        ]
        for feature in features
    ]
    out.append(_table(header, rows) + "\n" if rows else "No report yet: run `just conformance`.\n")

    requirements: list[str] = []
    for report in reports.values():
        if report:
            requirements += [r for r in report["requirements"] if r not in requirements]
    out.append("## Requirements\n")
    out.append(
        "Each requirement of the [spec](../spec/spec.md) and each rule of the "
        "[protocol](protocol.md), as the suite checked it on each backend.\n"
    )
    rows = []
    for req in requirements:
        link = f"[{req}]({SPEC_PAGE}#{req})" if not req.startswith("PROTO-") else f"{req}"
        rows.append(
            [link]
            + [_mark(r["requirements"].get(req)) if r else "not run" for r in reports.values()]
        )
    out.append(_table(header, rows) + "\n" if rows else "No report yet: run `just conformance`.\n")
    out += _render_coverage(reports, requirements)
    failing = [(name, r) for name, r in reports.items() if r and r["failures"]]
    if failing:
        out.append("## Failing checks\n")
        for name, report in failing:
            items = ", ".join(
                f"`{f['id']}` ({', '.join(f['requirements'])})" for f in report["failures"]
            )
            out.append(f"- `{name}`: {items}")
        out.append("")
    return "\n".join(out)


def render_vectors(root: Path) -> str:
    directory = root / "conformance-tests" / "vectors"
    rows = []
    total = 0
    for path in sorted(directory.glob("*.json")):
        if path.name == "vector.schema.json":
            continue
        document = _load(path)
        count = len(document["vectors"])
        total += count
        rows.append(
            [
                f"`{path.name}`",
                document["title"],
                document.get("origin", "hand-written"),
                str(count),
            ]
        )
    rows.append(["", "**total**", "", f"**{total}**"])
    return _table(["file", "title", "origin", "vectors"], rows) + "\n"


# --- MkDocs events --------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = _root(config)
    if PROTOCOL_MARKER in markdown:
        markdown = markdown.replace(
            PROTOCOL_MARKER, render_protocol(root / "conformance-tests" / "protocol")
        )
    if MATRIX_MARKER in markdown:
        markdown = markdown.replace(MATRIX_MARKER, render_matrix(root))
    if VECTORS_MARKER in markdown:
        markdown = markdown.replace(VECTORS_MARKER, render_vectors(root))
    return markdown


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    root = _root(config)
    server.watch(str(root / "conformance-tests" / "protocol"))
    server.watch(str(root / "conformance-tests" / "vectors"))
    return server
