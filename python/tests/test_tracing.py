"""OpenTelemetry tracing: a producer span per published job, a consumer span per attempt, the
trace context carried in the job's metadata (docs/operations/tracing.md).

The publisher and the worker are two apps, each with its own tracer provider and exporter:
the attempt span can only find its parent through the stored job, as in another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import ConfigurationError, Conveyor, PermanentError, tracing

from .conftest import AppFactory, require_service


@pytest.fixture(params=("sqlite", "postgresql"))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_service(name)
    return name


class Traced:
    """An app instrumented with a tracer provider of its own, and the spans it ended."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        tracing.instrument(app, tracer_provider=self.provider)

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def traced(make_app: AppFactory) -> Iterator[tuple[Traced, Traced]]:
    """A publishing app and a working app on one store, each traced on its own."""
    publisher, worker = Traced(make_app()), Traced(make_app())
    yield publisher, worker
    publisher.provider.shutdown()
    worker.provider.shutdown()


def fail(reason: str) -> None:
    raise PermanentError(reason)


def test_the_attempt_span_is_the_child_of_the_publish_span(
    traced: tuple[Traced, Traced],
) -> None:
    publisher, worker = traced
    publisher.app.register("echo", lambda text: text, queue="mail")
    worker.app.register("echo", lambda text: text, queue="mail")

    job = publisher.app.publish("echo", {"text": "hi"})
    worker.app.process()

    (published,) = publisher.spans
    (processed,) = worker.spans
    assert published.name == "publish mail"
    assert published.kind is SpanKind.PRODUCER
    assert published.attributes is not None
    assert published.attributes["messaging.system"] == "conveyor"
    assert published.attributes["messaging.destination.name"] == "mail"
    assert published.attributes["messaging.message.id"] == job.id
    assert published.attributes["messaging.operation.type"] == "send"
    assert processed.name == "process mail"
    assert processed.kind is SpanKind.CONSUMER
    assert processed.parent is not None
    assert published.context is not None
    assert processed.context is not None
    assert processed.context.trace_id == published.context.trace_id
    assert processed.parent.span_id == published.context.span_id
    assert processed.parent.is_remote
    assert processed.attributes is not None
    assert processed.attributes["messaging.message.id"] == job.id
    assert processed.attributes["messaging.destination.name"] == "mail"
    assert processed.attributes["messaging.operation.type"] == "process"
    assert processed.attributes["conveyor.job.attempt"] == 1
    assert processed.attributes["conveyor.job.outcome"] == "succeed"
    assert processed.status.status_code is StatusCode.UNSET
    stored = worker.app.get(job.id)
    assert stored.metadata[tracing.CARRIER_KEY]["traceparent"].startswith("00-")


def test_a_failing_attempt_records_the_error(traced: tuple[Traced, Traced]) -> None:
    publisher, worker = traced
    for traced_app in traced:
        traced_app.app.register("fail", fail)

    job = publisher.app.publish("fail", {"reason": "no such account"})
    worker.app.process()

    (published,) = publisher.spans
    (processed,) = worker.spans
    assert processed.context is not None
    assert published.context is not None
    assert processed.context.trace_id == published.context.trace_id
    assert processed.status.status_code is StatusCode.ERROR
    assert processed.status.description is not None
    assert "no such account" in processed.status.description
    assert processed.attributes is not None
    assert processed.attributes["conveyor.job.outcome"] == "fail_permanently"
    assert processed.attributes["error.type"] == "PermanentError"
    (event,) = processed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "no such account"
    assert worker.app.get(job.id).state == "permanently_failed"


def test_each_job_of_a_publish_many_has_its_own_span(traced: tuple[Traced, Traced]) -> None:
    publisher, worker = traced
    for traced_app in traced:
        traced_app.app.register("echo", lambda text: text)

    jobs = publisher.app.publish_many("echo", [{"text": "a"}, {"text": "b"}])
    worker.app.process()

    published = {span.attributes["messaging.message.id"]: span for span in publisher.spans}  # type: ignore[index]
    processed = {span.attributes["messaging.message.id"]: span for span in worker.spans}  # type: ignore[index]
    assert set(published) == set(processed) == {job.id for job in jobs}
    for job_id, span in processed.items():
        assert span.parent is not None
        assert span.parent.span_id == published[job_id].context.span_id  # type: ignore[union-attr]
    # Siblings, not nested: both under the caller's (here no) span.
    assert all(span.parent is None for span in published.values())


def test_spans_a_handler_starts_are_children_of_its_attempt(
    traced: tuple[Traced, Traced],
) -> None:
    publisher, worker = traced
    inner = worker.provider.get_tracer("handler")

    def sync_task() -> None:
        with inner.start_as_current_span("sync work"):
            pass

    async def async_task() -> None:
        with inner.start_as_current_span("async work"):
            await asyncio.sleep(0)

    for traced_app in traced:
        traced_app.app.register("sync", sync_task)
        traced_app.app.register("async", async_task)
    publisher.app.publish("sync")
    publisher.app.publish("async")
    worker.app.process()

    by_name = {span.name: span for span in worker.spans}
    assert set(by_name) == {"sync work", "async work", "process default"}
    attempts = [span for span in worker.spans if span.name == "process default"]
    assert len(attempts) == 2
    attempt_ids = {span.context.span_id for span in attempts}  # type: ignore[union-attr]
    for name in ("sync work", "async work"):
        parent = by_name[name].parent
        assert parent is not None
        assert parent.span_id in attempt_ids


def test_a_trace_context_passed_in_the_metadata_is_continued(
    traced: tuple[Traced, Traced],
) -> None:
    publisher, worker = traced
    for traced_app in traced:
        traced_app.app.register("echo", lambda text: text)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    carrier = {"traceparent": f"00-{trace_id}-{span_id}-01"}

    publisher.app.publish("echo", {"text": "hi"}, metadata={"trace_context": carrier})
    worker.app.process()

    (published,) = publisher.spans
    (processed,) = worker.spans
    assert published.parent is not None
    assert published.parent.span_id == int(span_id, 16)
    assert published.context is not None
    assert published.context.trace_id == int(trace_id, 16)
    assert processed.parent is not None
    assert processed.parent.span_id == published.context.span_id


def test_instrument_needs_opentelemetry(app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "available", lambda: False)

    assert tracing.instrument_if_available(app) is False
    with pytest.raises(ConfigurationError, match=r"conveyor-queue\[otel\]"):
        tracing.instrument(app)
    assert app.hooks.around_publish == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_app_traces_its_publishes(
    traced: tuple[Traced, Traced], anyio_backend: str
) -> None:
    from conveyor.aio import AsyncConveyor

    publisher, worker = traced
    for traced_app in traced:
        traced_app.app.register("echo", lambda text: text)
    async with AsyncConveyor(publisher.app) as conveyor:
        job = await conveyor.publish("echo", {"text": "hi"})
    worker.app.process()

    (published,) = publisher.spans
    (processed,) = worker.spans
    assert published.attributes is not None
    assert published.attributes["messaging.message.id"] == job.id
    assert processed.parent is not None
    assert processed.parent.span_id == published.context.span_id  # type: ignore[union-attr]
