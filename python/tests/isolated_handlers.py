"""Handlers that the process-isolation tests run in handler processes.

Handler processes import this module by name (``tests.isolated_handlers:app``), the way
``conveyor consume --app`` names an app; the tests register the same functions on their own
app, whose store the worker uses. This app is never opened.
"""

from __future__ import annotations

import os
from typing import Any

from conveyor import Conveyor, JobContext, PermanentError

app = Conveyor("memory://")


def spin() -> None:
    """Busy code that never returns nor lets a signal handler run in Python."""
    while True:
        pass


def exit_now() -> None:
    os._exit(1)


def double(context: JobContext, n: int) -> dict[str, Any]:
    context.progress(50, "half way")
    return {"doubled": n * 2, "pid": os.getpid()}


def refuse(reason: str) -> None:
    raise PermanentError(reason)


def broken() -> None:
    raise KeyError("missing")


def pid() -> int:
    return os.getpid()


HANDLERS: dict[str, tuple[Any, bool]] = {
    "spin": (spin, False),
    "exit": (exit_now, False),
    "double": (double, True),
    "refuse": (refuse, False),
    "broken": (broken, False),
    "pid": (pid, False),
}


def register(target: Conveyor) -> None:
    for name, (function, pass_context) in HANDLERS.items():
        target.register(name, function, pass_context=pass_context)


register(app)
