"""Containers that build handlers, middleware and enqueuers lazily, on first use.

Each binding is a zero-argument factory; the container calls it the first time the thing
is needed and keeps the instance. A handler that is never used is never built, so an
application can bind every handler at start-up for free.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeAlias, TypeVar

from .errors import HandlerNotFound, InvalidBinding, MiddlewareNotFound
from .messages import kind_of
from .result import Result

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
M = TypeVar("M")

Handler: TypeAlias = Callable[[Any], Result[Any]]
"""A callable that takes a message and returns a :class:`Result`."""

Middleware: TypeAlias = Callable[[Any, Callable[[Any], Any]], Any]
"""``(message, next) -> answer``: calls ``next(message)`` to go on, or answers itself."""

PipeName: TypeAlias = str | type
"""How middleware is named in a :class:`PipeContainer`: a string or a class."""


def describe(key: object) -> str:
    return key.__qualname__ if isinstance(key, type) else repr(key)


def _name(value: object) -> str:
    return str(getattr(value, "__qualname__", None) or type(value).__qualname__)


def _required_parameters(factory: Callable[..., Any]) -> list[str]:
    """The parameters a call without arguments would lack (none when unknowable)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and C callables: taken as they come
        return []
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


class LazyContainer(Generic[K, V]):
    """Factories by key, each called at most once (thread-safe), instances cached."""

    def __init__(self) -> None:
        self._factories: dict[K, Callable[[], V]] = {}
        self._instances: dict[K, V] = {}
        self._lock = threading.Lock()

    def bind(self, key: K, factory: Callable[[], V]) -> None:
        """Bind ``key`` to ``factory``; a later binding replaces an earlier one.

        A factory is called with no arguments; anything that needs one (the handler
        function itself, a class whose constructor takes dependencies) is refused here,
        where the mistake is made, not on a worker where it would fail every attempt."""
        if not callable(factory):
            raise InvalidBinding(
                f"the binding for {describe(key)} must be a factory (a zero-argument callable), "
                f"not {factory!r}; wrap an instance as `lambda: instance`"
            )
        required = _required_parameters(factory)
        if required:
            raise InvalidBinding(
                f"the binding for {describe(key)} is {_name(factory)}, which needs the "
                f"argument(s) {', '.join(required)}: that is the thing to build, not a factory "
                f"of it; bind `lambda: {_name(factory)}` (or a function building it with its "
                "dependencies), which the container calls once, with no arguments"
            )
        with self._lock:
            self._factories[key] = factory
            self._instances.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._factories

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._factories))

    def __len__(self) -> int:
        return len(self._factories)

    def built(self, key: K) -> bool:
        """True once the factory of ``key`` has been called."""
        return key in self._instances

    def _make(self, key: K) -> V:
        if key in self._instances:
            return self._instances[key]
        with self._lock:
            if key not in self._instances:
                self._instances[key] = self._factories[key]()
            return self._instances[key]


class HandlerContainer(LazyContainer[type, Handler]):
    """Handlers by message type: ``handlers.bind(MyCommand, lambda: MyHandler(repo))``.

    A handler is any callable taking the message and returning a :class:`Result`: a
    function, or an instance of a class with ``__call__``.
    """

    def get(self, message_type: type) -> Handler:
        """The handler of ``message_type``, built on first use."""
        if message_type not in self._factories:
            known = ", ".join(sorted(describe(t) for t in self._factories)) or "none"
            raise HandlerNotFound(
                f"no handler is bound for {kind_of(message_type)} "
                f"{describe(message_type)} (bound: {known}); bind one with "
                f"handlers.bind({message_type.__name__}, lambda: ...)"
            )
        return self._make(message_type)


class PipeContainer(LazyContainer[PipeName, Middleware]):
    """Middleware by name (a string or a class), built on first use.

    ``pipes.bind(LogMessageDispatch, lambda: LogMessageDispatch(logger))`` then
    ``bus.through([LogMessageDispatch])``.
    """

    def get(self, name: PipeName) -> Middleware:
        if name not in self._factories:
            known = ", ".join(sorted(describe(t) for t in self._factories)) or "none"
            raise MiddlewareNotFound(
                f"no middleware is bound as {describe(name)} in the pipe container (bound: "
                f"{known}); bind it with pipes.bind({describe(name)}, lambda: ...) before "
                "naming it in through()"
            )
        return self._make(name)
