"""Messages: plain frozen dataclasses marked as commands or queue jobs.

A **command** is part of the application's public interface: the outside world (an HTTP
endpoint, a CLI) dispatches it to the :class:`~conveyor.bus.CommandBus`, now or queued.
A **queue job** is internal work of the application (typically pushed by a domain-event
listener); it is pushed to a queue and dispatched, when pulled, to the
:class:`~conveyor.bus.QueueJobDispatcher`. The bus refuses queue jobs and the job
dispatcher refuses commands, so the two can never be confused::

    @dataclass(frozen=True)
    class RecalculateSalesAtEvent(Command):
        event_id: int
"""

from __future__ import annotations

from typing import TypeAlias


class Command:
    """Base of command messages: subclass it with a ``@dataclass(frozen=True)``."""

    __slots__ = ()


class QueueJob:
    """Base of internal queue jobs: subclass it with a ``@dataclass(frozen=True)``."""

    __slots__ = ()


Message: TypeAlias = Command | QueueJob


def kind_of(message_type: type) -> str:
    """``"command"``, ``"queue job"`` or ``"message"`` (neither), for error messages."""
    if issubclass(message_type, Command):
        return "command"
    if issubclass(message_type, QueueJob):
        return "queue job"
    return "message"
