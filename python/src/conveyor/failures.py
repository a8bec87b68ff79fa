"""A handler's exception as a bounded error record and a bounded log text.

An exception's message can be any size (a 100 kB response body quoted in it), and it is
stored with every attempt and logged at every failure. Everything here has a bound: the
message and the class name are cut to the lengths of ``schemas/error.schema.json``, the
traceback to its ``traceback`` length keeping the end (where the error was raised, OUT-009),
and log texts to :data:`LOG_LIMIT` per message. A cut text says how much was cut.
"""

from __future__ import annotations

import functools
import traceback
from typing import Any

from .specfiles import load_json

LOG_LIMIT = 2000  # characters of one message in a log line
LINE_LIMIT = 1000  # characters of one line of a stored or logged traceback


@functools.cache
def _limits() -> dict[str, int]:
    properties = load_json("schemas/error.schema.json")["$defs"]["job_error"]["properties"]
    return {name: int(properties[name]["maxLength"]) for name in ("message", "type", "traceback")}


def cut(text: str, limit: int) -> str:
    """``text`` if it fits, else its start and ``… (N more characters)``, ``limit`` long at most."""
    if len(text) <= limit:
        return text
    keep = limit - len(f"… ({len(text)} more characters)")
    return f"{text[:keep]}… ({len(text) - keep} more characters)"


def cut_start(text: str, limit: int) -> str:
    """``text`` if it fits, else ``… (N characters cut)`` and its end, ``limit`` long at most."""
    if len(text) <= limit:
        return text
    keep = limit - len(f"… ({len(text)} characters cut)\n")
    return f"… ({len(text) - keep} characters cut)\n{text[-keep:]}"


def message_of(error: BaseException) -> str:
    return str(error) or type(error).__name__


def type_name(error: BaseException) -> str:
    """The class name to record: an exception rebuilt from a handler process carries the
    name of the one raised there (``carried_type``)."""
    carried = getattr(error, "carried_type", None)
    return carried if isinstance(carried, str) else type(error).__qualname__


# Their frames (the call of the handler) are left out.
_RUNNER = ("conveyor.execution", "conveyor.isolation")


def format_traceback(error: BaseException) -> str | None:
    """The traceback of ``error`` (with its causes) from the handler down, every line
    bounded, the whole cut to the schema's length keeping the end; None for an exception
    that was never raised. An exception rebuilt from a handler process carries the traceback
    formatted there (``carried_traceback``; None: none to show)."""
    if hasattr(error, "carried_traceback"):
        carried = error.carried_traceback
        return cut_start(carried, _limits()["traceback"]) if isinstance(carried, str) else None
    tb = error.__traceback__
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_globals.get("__name__") in _RUNNER
    ):
        tb = tb.tb_next
    if tb is None:
        return None
    formatted = traceback.TracebackException(type(error), error, tb, compact=True).format()
    lines = (
        cut(line.rstrip("\n"), LINE_LIMIT)
        for chunk in formatted
        for line in chunk.rstrip("\n").split("\n")
    )
    return cut_start("\n".join(lines) + "\n", _limits()["traceback"])


def record(
    kind: str, error: BaseException, traceback_of: BaseException | None = None
) -> dict[str, Any]:
    """The recorded error (``job_error`` of the schema) of ``error``; the traceback is that of
    ``traceback_of`` (default: the error itself) as raised in a handler."""
    limits = _limits()
    data: dict[str, Any] = {
        "kind": kind,
        "message": cut(message_of(error), limits["message"]),
        "type": cut(type_name(error), limits["type"]),
    }
    trace = format_traceback(traceback_of or error)
    if trace is not None:
        data["traceback"] = trace
    return data


def log_text(error: BaseException) -> str:
    """``Type: message`` for a log line, the message cut to :data:`LOG_LIMIT`."""
    return f"{type_name(error)}: {cut(message_of(error), LOG_LIMIT)}"
