"""Worker mode of the conformance adapter: the library's own worker over scripted handlers.

The harness scripts what each request type's handler does (``script_handlers``) and asks for a
worker run (``run_worker``); the run is :meth:`Conveyor.process`, the loop ``conveyor process``
runs, so what the suite observes is what a worker process of the library does: how it
classifies a handler's errors, which jobs it claims after a die, the waiting delay it records.
See conformance-tests/protocol/protocol.md#worker-mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .handlers import HandlerRegistry, JobContext
from .outcomes import Die, PermanentError, TemporaryError, Waiting

if TYPE_CHECKING:
    from .app import Conveyor

Json = dict[str, Any]

SUCCEED: Json = {"do": "succeed"}
# WorkerStats.stop_reason of a worker a handler asked to die, and of one that reached max_jobs.
DIED = "a handler asked the worker to die"
LIMIT = "processed "


class ScriptedCrash(Exception):
    """The error of a ``raise`` behaviour: one no handler classifies (OUT-003: temporary)."""


def _delay(behaviour: Json, name: str) -> timedelta | None:
    value = behaviour.get(name)
    return None if value is None else timedelta(milliseconds=int(value))


def _message(behaviour: Json) -> str:
    return str(behaviour.get("message") or f"scripted {behaviour['do']}")


@dataclass
class Script:
    """What each request type's handler does, call by call, and the calls made so far."""

    behaviours: dict[str, list[Json]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    ran: list[Json] = field(default_factory=list)

    def set(self, scripts: dict[str, list[Json]]) -> None:
        self.behaviours = {name: list(steps) for name, steps in scripts.items()}
        self.calls.clear()

    def clear(self) -> None:
        self.set({})
        self.ran.clear()

    def handler(self) -> Callable[..., Any]:
        """The function registered for every type ``reset`` names (with ``pass_context``)."""

        def scripted(context: JobContext, /, *args: Any, **kwargs: Any) -> Any:
            return self.perform(context)

        return scripted

    def perform(self, context: JobContext) -> Any:
        name = context.request_type
        index = self.calls.get(name, 0)
        self.calls[name] = index + 1
        steps = self.behaviours.get(name) or [SUCCEED]
        behaviour = steps[min(index, len(steps) - 1)]
        do = behaviour["do"]
        self.ran.append(
            {
                "job": context.job_id,
                "type": name,
                "request": context.request_index,
                "attempt": context.attempt,
                "do": do,
            }
        )
        return act(behaviour)


def act(behaviour: Json) -> Any:
    """Do what one behaviour says: return a value, raise an outcome, or block a while."""
    do = behaviour["do"]
    if do == "succeed":
        return behaviour.get("result")
    if do == "fail_temporarily":
        raise TemporaryError(_message(behaviour), retry_after=_delay(behaviour, "retry_after_ms"))
    if do == "fail_permanently":
        raise PermanentError(_message(behaviour))
    if do == "raise":
        raise ScriptedCrash(_message(behaviour))
    if do == "wait":
        raise Waiting(_message(behaviour), delay=_delay(behaviour, "delay_ms"))
    if do == "die":
        causes = {"temporary": TemporaryError, "permanent": PermanentError}
        kind = causes.get(behaviour.get("cause") or "")
        if kind is None:
            raise Die(_message(behaviour))
        raise Die(_message(behaviour)) from kind(f"the {behaviour['cause']} error behind a die")
    if do == "block":
        # Real time, the one behaviour that takes any: the worker's timeout (SIGALRM in the
        # main thread) interrupts the wait.
        threading.Event().wait(int(behaviour["ms"]) / 1000)
        return None
    raise ValueError(f"unknown behaviour {do!r}")


def run_worker(app: Conveyor, script: Script, request: Json) -> Json:
    """One ``conveyor process`` run: every due job, until idle, ``max_jobs`` or a die.

    With ``handlers``, the worker looks its handlers up in a registry of those types only, as
    a worker process deployed with only them would; publishing keeps the full registry.
    """
    script.ran.clear()
    registry = app.handlers
    if request.get("handlers") is not None:
        wanted = set(request["handlers"])
        app.handlers = HandlerRegistry()
        for handler in registry:
            if handler.type in wanted:
                app.handlers.add(handler)
    try:
        stats = app.process(
            request.get("max_jobs"),
            worker_id=request["worker_id"],
            lease=timedelta(milliseconds=int(request["lease_ms"])),
            queues=tuple(request.get("queues") or ()),
            handle_signals=False,
        )
    finally:
        app.handlers = registry
    reason = stats.stop_reason
    stopped = "died" if reason == DIED else "max_jobs" if reason.startswith(LIMIT) else "idle"
    return {"stopped": stopped, "ran": list(script.ran)}
