"""Every error Conveyor raises derives from :class:`ConveyorError`.

Tree::

    ConveyorError
    ├── Refused                  an operation the spec refuses; ``code`` is a spec error code
    │   ├── InvalidTransition    the machine allows no transition for (state, event)
    │   ├── StaleLease           a report carried a fencing token that is no longer current
    │   ├── JobNotFound
    │   ├── InvalidPayload       a payload the codec or the schema rejects
    │   ├── InvalidRequest       publish options that break a schema or spec rule
    │   ├── UnknownType          no handler is registered under a request type
    │   ├── UnknownDependency
    │   ├── PriorityNotAllowed
    │   ├── PayloadTooLarge
    │   └── BatchClosed
    ├── ConfigurationError       wrong settings, with the fix in the message
    │   └── NotSupported         this store cannot do what was asked (e.g. memory: connection=)
    ├── SpecError                the spec files and this implementation disagree
    ├── StoreUnavailable         the database cannot be reached (URL password masked)
    ├── BrokerUnavailable        the message broker cannot be reached (URL password masked)
    ├── AlreadyRunning           a command protected by a lock is already running
    ├── LockLost                 a command's lock went away while it ran (its connection was cut)
    ├── JobTimeout               an attempt ran longer than its timeout (recorded, not raised)
    ├── PartlyRecorded           some of a worker's outcomes committed before the rest failed
    └── WaitTimeout              app.wait() gave up: the job did not end in time

Handler outcomes (``PermanentError``, ``Waiting``, ``Die``, ``TemporaryError``) live in
:mod:`conveyor.outcomes`: they steer a job, they are not library failures.
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base of every error raised by Conveyor."""


class Refused(ConveyorError):
    """An operation refused with one of the spec's error codes; nothing was changed."""

    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidTransition(Refused):
    """The job's machine allows no transition for its state and this event."""

    code = "invalid_transition"


class StaleLease(Refused):
    """A report carried a lease token that is no longer current: another worker owns the job now."""

    code = "stale_lease"


class PartlyRecorded(ConveyorError):
    """Some of a worker's outcomes were recorded (committed on their own, ``recorded``: each
    job as written, by id) before recording the others failed (the cause is chained): the
    worker records the others one by one, and does not record these again."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        super().__init__(
            f"{len(recorded)} outcome(s) recorded; recording the others failed: record them "
            "one by one"
        )
        self.recorded = recorded


class JobNotFound(Refused):
    """No job (or batch) has this id; it may have been pruned by ``clear_finished``."""

    code = "not_found"


class InvalidPayload(Refused):
    """A payload the codec cannot encode or the request schema rejects."""

    code = "invalid_payload"


class InvalidRequest(Refused):
    """Publish options that break a schema or a spec rule; the message names the option."""

    code = "invalid_request"


class UnknownType(Refused):
    """No handler is registered under the request type; the message lists those that are."""

    code = "unknown_type"


class UnknownDependency(Refused):
    """A job names a dependency id that does not exist."""

    code = "unknown_dependency"


class PriorityNotAllowed(Refused):
    """A priority outside the set the app is configured with."""

    code = "priority_not_allowed"


class PayloadTooLarge(Refused):
    """A payload larger than the spec's limit once encoded; pass a reference to the data instead."""

    code = "payload_too_large"


class BatchClosed(Refused):
    """A job was added to a batch that is already sealed or finished."""

    code = "batch_closed"


class ConfigurationError(ConveyorError):
    """Settings that cannot work; the message names the fix."""


class NotSupported(ConfigurationError):
    """The app's store cannot do what was asked; the message names a store that can."""


class SpecError(ConveyorError):
    """The spec files name something this implementation does not know."""


class StoreUnavailable(ConveyorError):
    """The store cannot be reached; the URL in the message has its password masked."""


class BrokerUnavailable(ConveyorError):
    """The message broker cannot be reached; the URL in the message has its password masked."""


class AlreadyRunning(ConveyorError):
    """Another instance of a lock-protected command is running."""


class LockLost(ConveyorError):
    """A command's lock was lost while it ran, and another instance may now hold it."""


class JobTimeout(ConveyorError):
    """An attempt ran longer than its timeout; recorded as a temporary error (TIMEOUT-001)."""


class HandlerProcessDied(ConveyorError):
    """The child process running a sync handler (``isolation="process"``) ended before it
    answered: a crash in native code, ``os._exit``, a kill from outside. Recorded as a
    temporary error, so the retry policy runs the job again in a fresh process."""


class WaitTimeout(ConveyorError, TimeoutError):
    """:meth:`Conveyor.wait` ran out of time before the job reached a terminal state."""


REFUSALS: dict[str, type[Refused]] = {
    cls.code: cls
    for cls in (
        InvalidTransition,
        StaleLease,
        JobNotFound,
        InvalidPayload,
        InvalidRequest,
        UnknownType,
        UnknownDependency,
        PriorityNotAllowed,
        PayloadTooLarge,
        BatchClosed,
    )
}
