"""Pipelines: middleware order, short-circuits, exceptions, names built lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.bus import MiddlewareNotFound, PipeContainer, Pipeline

Next = Callable[[Any], Any]


def recorder(name: str, log: list[str]) -> Callable[[Any, Next], Any]:
    def middleware(message: Any, next: Next) -> Any:
        log.append(f"enter {name}")
        answer = next(message)
        log.append(f"exit {name}")
        return answer

    return middleware


@given(st.integers(min_value=0, max_value=12))
def test_entered_in_the_order_added_and_left_in_reverse(count: int) -> None:
    log: list[str] = []
    pipeline: Pipeline[str, str] = Pipeline()
    pipeline.through([recorder(str(i), log) for i in range(count)])

    answer = pipeline.run("m", lambda message: log.append("destination") or message.upper())

    names = [str(i) for i in range(count)]
    assert answer == "M"
    assert log == [f"enter {n}" for n in names] + ["destination"] + [
        f"exit {n}" for n in reversed(names)
    ]


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=5))
def test_through_appends_across_calls(batches: list[int]) -> None:
    log: list[str] = []
    pipeline: Pipeline[str, None] = Pipeline()
    names = []
    for batch, size in enumerate(batches):
        group = [f"{batch}.{i}" for i in range(size)]
        names.extend(group)
        pipeline.through([recorder(n, log) for n in group])
    pipeline.run("m", lambda message: None)
    assert [entry for entry in log if entry.startswith("enter")] == [f"enter {n}" for n in names]


@given(st.integers(min_value=1, max_value=8), st.data())
def test_a_short_circuit_stops_every_inner_middleware(count: int, data: st.DataObject) -> None:
    stop = data.draw(st.integers(min_value=0, max_value=count - 1))
    log: list[str] = []

    def short(message: Any, next: Next) -> Any:
        log.append("short")
        return "answered early"

    pipes = [recorder(str(i), log) for i in range(count)]
    pipes[stop] = short
    reached: list[str] = []
    answer = Pipeline[str, str]().through(pipes).run("m", lambda m: reached.append(m) or "end")

    assert answer == "answered early"
    assert reached == []
    assert log == [f"enter {i}" for i in range(stop)] + ["short"] + [
        f"exit {i}" for i in reversed(range(stop))
    ]


class Boom(Exception):
    pass


@given(st.integers(min_value=1, max_value=8), st.data())
def test_exceptions_travel_out_through_the_outer_middleware(
    count: int, data: st.DataObject
) -> None:
    raiser = data.draw(st.integers(min_value=0, max_value=count))  # count = the destination
    log: list[str] = []

    def guarded(name: str) -> Callable[[Any, Next], Any]:
        def middleware(message: Any, next: Next) -> Any:
            log.append(f"enter {name}")
            try:
                return next(message)
            finally:
                log.append(f"finally {name}")

        return middleware

    def explode(message: Any, next: Next | None = None) -> Any:
        raise Boom(message)

    pipes: list[Callable[[Any, Next], Any]] = [guarded(str(i)) for i in range(count)]
    destination: Callable[[Any], Any] = lambda m: "end"  # noqa: E731
    if raiser < count:
        pipes[raiser] = explode
    else:
        destination = explode
    with pytest.raises(Boom):
        Pipeline[str, str]().through(pipes).run("m", destination)
    entered = min(raiser, count)
    assert log == [f"enter {i}" for i in range(entered)] + [
        f"finally {i}" for i in reversed(range(entered))
    ]


def test_middleware_may_replace_the_message() -> None:
    def double(message: int, next: Next) -> Any:
        return next(message * 2)

    assert Pipeline[int, int]().through([double, double]).run(3, lambda m: m + 1) == 13


def test_names_are_built_from_the_container_on_first_run_only() -> None:
    built: list[str] = []
    log: list[str] = []
    pipes = PipeContainer()

    class Audit:
        def __init__(self) -> None:
            built.append("audit")

        def __call__(self, message: Any, next: Next) -> Any:
            log.append("audit")
            return next(message)

    pipes.bind(Audit, Audit)
    pipes.bind("unused", lambda: built.append("unused") or recorder("unused", log))
    pipeline: Pipeline[str, str] = Pipeline(pipes).through([Audit, recorder("inline", log)])
    assert built == []

    pipeline.run("a", lambda m: m)
    pipeline.run("b", lambda m: m)

    assert built == ["audit"]  # once, cached; "unused" never built
    assert log == ["audit", "enter inline", "exit inline"] * 2
    assert pipes.built(Audit)
    assert not pipes.built("unused")


def test_an_unknown_name_is_refused_when_added() -> None:
    pipes = PipeContainer()
    pipes.bind("log", lambda: recorder("log", []))
    with pytest.raises(
        MiddlewareNotFound, match=r"no middleware is bound as 'audit'.*bound: 'log'"
    ):
        Pipeline(pipes).through(["audit"])
    with pytest.raises(MiddlewareNotFound, match="no pipe container"):
        Pipeline().through(["log"])
    with pytest.raises(TypeError, match="not middleware"):
        Pipeline().through([42])  # type: ignore[list-item]


def test_a_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="must be a factory"):
        PipeContainer().bind("log", 42)  # type: ignore[arg-type]
