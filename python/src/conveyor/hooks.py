"""Callables an app runs around jobs, shared by every runner of the app."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .model import Job

T = TypeVar("T")


@dataclass
class Publishing:
    """One write of published jobs, as an ``around_publish`` hook sees it.

    ``jobs`` are the jobs about to be stored: a hook may replace them (with metadata added,
    say) before the write. ``stored`` holds them as stored, with their ids, once the write
    committed (or joined the caller's transaction); it stays empty when the write failed.
    """

    jobs: list[Job]
    stored: list[Job] = field(default_factory=list)


@dataclass
class Attempt:
    """One attempt of a claimed job, as an ``around_attempt`` hook sees it.

    ``event`` is the outcome's event (``succeed``, ``fail_temporarily``, ...) and ``error``
    the error it records, once the handlers ran; both stay None when the attempt raised out
    of the runner (the worker stopping) and when the outcome is not known in this thread.
    """

    job: Job
    event: str | None = None
    error: dict[str, Any] | None = None


AroundPublish = Callable[[Publishing], AbstractContextManager[Any]]
AroundAttempt = Callable[[Attempt], AbstractContextManager[Any]]


@dataclass
class Hooks:
    """Callables run around jobs; a hook that raises is logged and ignored (except before).

    ``around_publish`` and ``around_attempt`` return context managers entered around each
    write of published jobs and each attempt (tracing uses them, docs/operations/tracing.md);
    an exception they raise is not caught.
    """

    before: list[Callable[[Job], Any]] = field(default_factory=list)
    after: list[Callable[[Job], Any]] = field(default_factory=list)
    error: list[Callable[[Job, BaseException], Any]] = field(default_factory=list)
    metadata: list[Callable[[Job], dict[str, Any] | None]] = field(default_factory=list)
    around_publish: list[AroundPublish] = field(default_factory=list)
    around_attempt: list[AroundAttempt] = field(default_factory=list)


def around(
    hooks: Sequence[Callable[[T], AbstractContextManager[Any]]], subject: T
) -> AbstractContextManager[T]:
    """Enter every hook's context manager around the block, the first one outermost (nothing
    but a null context when there is none: this runs for every job)."""
    return _entered(hooks, subject) if hooks else nullcontext(subject)


@contextmanager
def _entered(
    hooks: Sequence[Callable[[T], AbstractContextManager[Any]]], subject: T
) -> Iterator[T]:
    with ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook(subject))
        yield subject
