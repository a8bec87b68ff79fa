"""A shrunk trace on the console: one short line per step, one per expectation.

The saved vector file holds the whole trace; the console shows enough to follow it. Jobs appear
by their aliases (``j1``, ``~1`` for one the implementation should have created), members are
written ``key=value`` in compact JSON, and every line is cut to the width of the terminal (100
columns when there is none, as in CI logs), so that a long payload or retry policy never wraps.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

MIN_WIDTH = 60
MAX_WIDTH = 160
MAX_STEPS = 40  # a shrunk trace is short; longer ones show their start and end
ELLIPSIS = "…"


def width() -> int:
    """The console's width (``COLUMNS`` or the terminal), within sensible bounds."""
    columns = shutil.get_terminal_size((100, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def compact(value: Any) -> str:
    """Compact JSON for the eye: id references as bare names (``j1``, ``new ~1``), member names
    unquoted, and a request of a type and a payload as ``work`` or ``work({"n":1})``."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key in ("$job", "$batch") and isinstance(argument, str):
                return argument
            if key == "$new" and isinstance(argument, str):
                return f"new {argument}"
        kind = value.get("type")
        if set(value) <= {"type", "payload"} and isinstance(kind, str):
            payload = value.get("payload")
            return kind + (f"({compact(payload)})" if payload is not None else "")
        inner = ",".join(f"{_key(k)}:{compact(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    return name if name.isidentifier() else json.dumps(name, ensure_ascii=False)


def cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1] + ELLIPSIS


def step_lines(index: int, step: dict[str, Any], limit: int, indent: str = "") -> list[str]:
    """One line for the command and, when the step expects something, one for that."""
    members = " ".join(
        f"{key}={compact(value)}"
        for key, value in step.items()
        if key not in ("cmd", "expect", "bind", "note", "req", "should")
    )
    line = f"{indent}{index:>3}. {step['cmd']}" + (f" {members}" if members else "")
    bind = step.get("bind")
    if bind is not None:
        names = bind if isinstance(bind, str) else ", ".join(bind)
        line += f" -> {names}"
    lines = [cut(line, limit)]
    expect = step.get("expect")
    if expect:
        if "error" in expect:
            shown = f"error {expect['error']}"
        elif "result" in expect:
            shown = compact(expect["result"])
        else:
            shown = compact(expect)
        lines.append(cut(f"{indent}     = {shown}", limit))
    return lines


def format_trace(
    steps: list[dict[str, Any]], limit: int | None = None, indent: str = "  "
) -> list[str]:
    """The lines of a trace, each at most ``limit`` characters (the console's width)."""
    limit = limit or width()
    shown = list(enumerate(steps))
    skipped = 0
    if len(shown) > MAX_STEPS:
        skipped = len(shown) - MAX_STEPS
        shown = shown[: MAX_STEPS // 2] + shown[-MAX_STEPS // 2 :]
    lines: list[str] = []
    for position, (index, step) in enumerate(shown):
        if skipped and position == MAX_STEPS // 2:
            lines.append(f"{indent}  ... {skipped} more steps in the saved file")
        lines.extend(step_lines(index, step, limit, indent))
    return lines
