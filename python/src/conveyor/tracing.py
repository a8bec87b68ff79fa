"""OpenTelemetry tracing of publishes and attempts (extra ``otel``; docs/operations/tracing.md).

A producer span covers each published job's write; its trace context (W3C ``traceparent``,
by the globally configured propagator) travels in the job's metadata under
``trace_context``, so the consumer span of every attempt, in whatever process claims the
job, is its child. Attributes follow the OpenTelemetry messaging conventions where they fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .hooks import Attempt, Publishing
from .model import Job, replace

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .app import Conveyor

# The metadata key that carries the propagator's fields (traceparent, tracestate).
CARRIER_KEY = "trace_context"
SYSTEM = "conveyor"
# Outcome events that end an attempt in error (the span's status is ERROR).
FAILED = frozenset({"fail_temporarily", "fail_permanently", "die"})


def available() -> bool:
    """Whether opentelemetry-api is installed (``pip install 'conveyor-queue[otel]'``)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def instrument(app: Conveyor, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace ``app``'s publishes and attempts; ``tracer_provider`` defaults to the global one.

    Raises ConfigurationError when opentelemetry-api is not installed: asking for tracing
    explicitly and silently getting none would hide the problem.
    """
    if not available():
        raise ConfigurationError(
            "tracing needs OpenTelemetry: pip install 'conveyor-queue[otel]' (and an SDK or "
            "distro to export the spans)"
        )
    tracing = Tracing(tracer_provider)
    app.around_publish(tracing.publishing)
    app.around_attempt(tracing.attempt)
    app.on_error(tracing.error)
    return tracing


def instrument_if_available(app: Conveyor) -> bool:
    """:func:`instrument` when opentelemetry-api is installed; a no-op (False) otherwise."""
    if not available():
        return False
    instrument(app)
    return True


class Tracing:
    """The hooks :func:`instrument` registers; one per app."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from opentelemetry import trace

        from . import __version__

        self.tracer: Tracer = trace.get_tracer(
            "conveyor", __version__, tracer_provider=tracer_provider
        )

    @contextmanager
    def publishing(self, publishing: Publishing) -> Iterator[None]:
        """A producer span per job, open around the write; each job carries its context.

        The spans are siblings under the caller's span; the one of a single job is current
        during the write, so spans of the database client nest under it."""
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Status, StatusCode

        spans: list[Span] = []
        jobs: list[Job] = []
        for job in publishing.jobs:
            span = self.tracer.start_span(
                f"publish {job.queue}",
                context=_carried(job),  # a context the publisher passed in the metadata
                kind=trace.SpanKind.PRODUCER,
                attributes=_attributes(job, "publish", "send"),
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            spans.append(span)
            jobs.append(replace(job, metadata={**job.metadata, CARRIER_KEY: carrier}))
        publishing.jobs = jobs
        try:
            with ExitStack() as stack:
                if len(spans) == 1:
                    stack.enter_context(
                        trace.use_span(
                            spans[0], record_exception=False, set_status_on_exception=False
                        )
                    )
                yield
        except BaseException as error:
            for span in spans:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise
        else:
            for span, stored in zip(spans, publishing.stored, strict=False):
                span.set_attribute("messaging.message.id", stored.id)
                span.set_attribute("conveyor.job.state", stored.state)
        finally:
            for span in spans:
                span.end()

    @contextmanager
    def attempt(self, attempt: Attempt) -> Iterator[None]:
        """A consumer span around the attempt, the child of the job's publish span."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        job = attempt.job
        parent = _carried(job)
        attributes = _attributes(job, "process", "process")
        attributes["messaging.message.id"] = job.id
        attributes["conveyor.job.attempt"] = job.attempts
        if job.lease is not None:
            attributes["conveyor.worker.id"] = job.lease.worker_id
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield
            if attempt.event is None:
                return
            span.set_attribute("conveyor.job.outcome", attempt.event)
            if attempt.event in FAILED:
                error = attempt.error or {}
                span.set_attribute("error.type", str(error.get("type") or attempt.event))
                span.set_status(Status(StatusCode.ERROR, error.get("message")))

    @staticmethod
    def error(job: Job, error: BaseException) -> None:
        """Record the handler's exception on the attempt's span (current while it runs)."""
        from opentelemetry import trace

        trace.get_current_span().record_exception(error)


def _carried(job: Job) -> Context | None:
    """The trace context in the job's metadata, if any (None: the current context)."""
    from opentelemetry import propagate

    carrier = job.metadata.get(CARRIER_KEY)
    return propagate.extract(carrier) if isinstance(carrier, dict) else None


def _attributes(job: Job, operation: str, kind: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": job.queue,
        "conveyor.job.type": job.requests[0].type if job.requests else "",
        "conveyor.job.priority": job.priority,
    }
    if len(job.requests) > 1:
        attributes["conveyor.job.requests"] = len(job.requests)
    return attributes
