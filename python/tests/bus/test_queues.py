"""ClosureQueue and ComponentQueue: defaults, per-type bindings, queue middleware."""

from __future__ import annotations

from typing import Any

from conveyor.bus import (
    ClosureQueue,
    Command,
    ComponentQueue,
    EnqueuerContainer,
    PipeContainer,
)

from .messages import CancelTicket, RecalculateSales, RecalculateSalesJob


def test_closure_queue_uses_the_default_unless_a_type_is_bound() -> None:
    pushed: list[tuple[str, Any]] = []
    queue = ClosureQueue(lambda m: pushed.append(("default", m)))
    queue.bind(RecalculateSales, lambda m: pushed.append(("reporting", m)))

    queue.push(RecalculateSales(1))
    queue.push(CancelTicket(2))
    queue.push(RecalculateSalesJob(3))

    assert pushed == [
        ("reporting", RecalculateSales(1)),
        ("default", CancelTicket(2)),
        ("default", RecalculateSalesJob(3)),
    ]


def test_closure_queue_bindings_cover_subclasses_most_specific_first() -> None:
    pushed: list[str] = []
    queue = ClosureQueue(lambda m: pushed.append("default"))
    queue.bind(Command, lambda m: pushed.append("commands"))
    queue.bind(CancelTicket, lambda m: pushed.append("cancel"))
    queue.push(RecalculateSales(1))
    queue.push(CancelTicket(1))
    queue.push(RecalculateSalesJob(1))
    assert pushed == ["commands", "cancel", "default"]


def test_closure_queue_middleware_runs_in_order_around_the_push() -> None:
    log: list[str] = []
    pipes = PipeContainer()
    pipes.bind("outer", lambda: lambda m, next: log.append("outer") or next(m))
    queue = ClosureQueue(lambda m: log.append(f"push {m.event_id}"), middleware=pipes)
    queue.through(["outer", lambda m, next: log.append("inner") or next(m)])
    queue.push(RecalculateSales(9))
    assert log == ["outer", "inner", "push 9"]


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        log.append(f"built {name}")

    def push(self, message: Any) -> None:
        self.log.append(f"{self.name} <- {type(message).__name__}")


def test_component_queue_builds_each_enqueuer_lazily_once() -> None:
    log: list[str] = []
    enqueuers = EnqueuerContainer(lambda: Recorder("default", log))
    enqueuers.bind(RecalculateSalesJob, lambda: Recorder("reporting", log))
    enqueuers.bind(CancelTicket, lambda: Recorder("never used", log))
    queue = ComponentQueue(enqueuers)
    assert log == []

    queue.push(RecalculateSalesJob(1))
    queue.push(RecalculateSales(1))
    queue.push(RecalculateSalesJob(2))
    queue.push(RecalculateSales(2))

    assert log == [
        "built reporting",
        "reporting <- RecalculateSalesJob",
        "built default",
        "default <- RecalculateSales",
        "reporting <- RecalculateSalesJob",
        "default <- RecalculateSales",
    ]
    assert not enqueuers.built(CancelTicket)


def test_component_queue_middleware_wraps_the_enqueuer() -> None:
    log: list[str] = []
    pipes = PipeContainer()
    pipes.bind("log", lambda: lambda m, next: log.append("before") or next(m))
    queue = ComponentQueue(EnqueuerContainer(lambda: Recorder("default", log)), pipes)
    queue.through(["log"]).push(CancelTicket(1))
    assert log == ["before", "built default", "default <- CancelTicket"]
