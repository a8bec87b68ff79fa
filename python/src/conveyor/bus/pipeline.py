"""Middleware pipelines: one signature everywhere, ``(message, next) -> answer``.

Middleware runs in the order it was added: the first one added is the outermost, so it
is entered first and left last. A middleware that does not call ``next`` stops the
pipeline there (its answer is the pipeline's answer); an exception raised inside travels
out through every middleware that was entered, like any Python exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeAlias, TypeVar

from .containers import Middleware, PipeContainer, PipeName, describe
from .errors import MiddlewareNotFound

M = TypeVar("M")
R = TypeVar("R")

Pipe: TypeAlias = Middleware | PipeName
"""A middleware callable, or the name of one bound in a :class:`PipeContainer`."""


class Pipeline(Generic[M, R]):
    """An ordered list of middleware around a destination.

    Strings and classes are names, built by the container; any other callable is the
    middleware itself.

    Names (strings or classes) are checked against the container when added and built
    from it on the first run, so middleware that never runs is never constructed.
    """

    def __init__(self, container: PipeContainer | None = None) -> None:
        self.container = container
        self._pipes: list[Pipe] = []

    def through(self, pipes: Iterable[Pipe]) -> Pipeline[M, R]:
        """Append middleware (callables or container names); returns the pipeline."""
        added = list(pipes)
        for pipe in added:
            if isinstance(pipe, str | type):
                if self.container is None:
                    raise MiddlewareNotFound(
                        f"middleware {describe(pipe)} is given by name but there is no pipe "
                        "container to build it from; pass middleware=PipeContainer() or pass "
                        "the middleware itself"
                    )
                if pipe not in self.container:
                    self.container.get(pipe)  # raises MiddlewareNotFound with the fix
            elif not callable(pipe):
                raise TypeError(
                    f"{pipe!r} is not middleware: pass a callable (message, next) or a name"
                )
        self._pipes.extend(added)
        return self

    @property
    def pipes(self) -> tuple[Pipe, ...]:
        return tuple(self._pipes)

    def __len__(self) -> int:
        return len(self._pipes)

    def resolve(self) -> list[Middleware]:
        resolved: list[Middleware] = []
        for pipe in self._pipes:
            if isinstance(pipe, str | type):
                assert self.container is not None
                resolved.append(self.container.get(pipe))
            else:
                resolved.append(pipe)
        return resolved

    def run(self, message: M, destination: Callable[[M], R]) -> R:
        """Send ``message`` through every middleware, then to ``destination``."""
        pipes = self.resolve()

        def call(index: int, current: Any) -> Any:
            if index == len(pipes):
                return destination(current)
            return pipes[index](current, lambda passed: call(index + 1, passed))

        result: R = call(0, message)
        return result
