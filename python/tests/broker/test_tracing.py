"""Tracing in broker mode (SQLite and PostgreSQL): the job's id crosses RabbitMQ, its trace
context stays in the stored job, and the attempt span is still the publish span's child."""

from __future__ import annotations

from ..test_tracing import (
    test_a_failing_attempt_records_the_error,
    test_the_attempt_span_is_the_child_of_the_publish_span,
    traced,
)

__all__ = [
    "test_a_failing_attempt_records_the_error",
    "test_the_attempt_span_is_the_child_of_the_publish_span",
    "traced",
]
