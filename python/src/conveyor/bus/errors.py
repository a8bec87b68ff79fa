"""Errors of the command bus; every one derives from :class:`conveyor.ConveyorError`.

Tree::

    ConveyorError
    └── BusError                  the bus, a queue or a middleware pipeline is used wrongly
        ├── HandlerNotFound       no handler is bound for a message type
        ├── MessageNotRegistered  a queued message type has no name for the serialiser
        ├── InvalidMessage        a value that cannot be encoded, or a payload that does not
        │                         decode into its message type
        ├── UnknownMessageVersion a payload written by a newer release than this one knows
        ├── MiddlewareNotFound    a middleware name that no pipe container binds
        ├── InvalidBinding        a container binding that is not a zero-argument factory
        └── InvalidResult         a handler returned something that is not a Result

:class:`~conveyor.bus.ResultFailed` is not among them: it carries an application's failed
:class:`~conveyor.bus.Result`, not a misuse of the library.
"""

from __future__ import annotations

from ..errors import ConveyorError


class BusError(ConveyorError):
    """The command bus, a queue or a pipeline was used in a way that cannot work."""


class HandlerNotFound(BusError):
    """No handler is bound for the message type; bind one on the handler container."""


class MessageNotRegistered(BusError):
    """The message type was queued but has no stable name; register it with the queue."""


class InvalidMessage(BusError):
    """A message value the serialiser cannot carry, or a payload that does not fit its type."""


class UnknownMessageVersion(BusError):
    """A payload carries a version newer than this release knows (a newer producer)."""


class MiddlewareNotFound(BusError):
    """A middleware name given to ``through()`` is not bound in the pipe container."""


class InvalidResult(BusError):
    """A handler returned something other than a :class:`~conveyor.bus.Result`."""


class InvalidBinding(BusError, TypeError):
    """A container was given something other than a zero-argument factory (typically the
    handler itself instead of ``lambda: handler``); refused at bind time."""
