"""Conveyor: background jobs driven by a language-agnostic spec.

The public API: :class:`Conveyor` (the app), :class:`Call` (one request of a multi-request
job), the handler outcomes, the clocks, retry policies and the errors.
"""

from .app import Conveyor
from .cancellation import cancel_requested, check_cancelled
from .clock import Clock, ManualClock, SystemClock
from .errors import (
    AlreadyRunning,
    BatchClosed,
    BrokerUnavailable,
    ConfigurationError,
    ConveyorError,
    HandlerProcessDied,
    InvalidPayload,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    NotSupported,
    PayloadTooLarge,
    PriorityNotAllowed,
    Refused,
    SpecError,
    StaleLease,
    StoreUnavailable,
    UnknownDependency,
    UnknownType,
    WaitTimeout,
)
from .handlers import JobContext
from .model import Batch, Job, JobError, Lease, Request
from .notify import LoggingNotifier, Notifier, SmtpNotifier
from .outcomes import Die, JobCancelled, PermanentError, TemporaryError, Waiting
from .priority import PriorityRange
from .publishing import Call
from .retry import RetryPolicy
from .specfiles import spec_version, wire_version
from .uniqueness import Unique
from .worker import Worker, WorkerOptions, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "Batch",
    "BatchClosed",
    "BrokerUnavailable",
    "Call",
    "Clock",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "Die",
    "HandlerProcessDied",
    "InvalidPayload",
    "InvalidRequest",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobNotFound",
    "Lease",
    "LoggingNotifier",
    "ManualClock",
    "NotSupported",
    "Notifier",
    "PayloadTooLarge",
    "PermanentError",
    "PriorityNotAllowed",
    "PriorityRange",
    "Refused",
    "Request",
    "RetryPolicy",
    "SmtpNotifier",
    "SpecError",
    "StaleLease",
    "StoreUnavailable",
    "SystemClock",
    "TemporaryError",
    "Unique",
    "UnknownDependency",
    "UnknownType",
    "WaitTimeout",
    "Waiting",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
    "cancel_requested",
    "check_cancelled",
    "spec_version",
    "wire_version",
]
