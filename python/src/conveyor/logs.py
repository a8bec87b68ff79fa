"""Structured logs: one JSON object per line, for log shippers (``--log-format json``).

Every line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; the fields a
log call passes in ``extra`` (``job_id``, ``type``, ``attempt``, ...) are added as they are, and
an exception's traceback, when logged, goes in ``traceback`` (one line: JSON escapes the line
breaks). :func:`job_record` is the line a worker writes per finished job.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from .model import Job

# The attributes every LogRecord has: whatever else a record carries came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; values JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def job_record(job: Job) -> dict[str, Any]:
    """The fields of a job that just ran: what a worker logs once per job."""
    execution = job.execution or {}
    record: dict[str, Any] = {
        "event": "job",
        "job_id": job.id,
        "type": ", ".join(request.type for request in job.requests),
        "queue": job.queue,
        "attempt": job.attempts,
        "duration_ms": execution.get("duration_ms"),
        "outcome": job.state,
        "worker_id": execution.get("worker_id"),
    }
    if job.last_error is not None and job.state != "finished":
        record["error"] = job.last_error.message
        record["error_kind"] = job.last_error.kind
    return record


def use_json_logs(level: int = logging.WARNING) -> None:
    """Send every log record to stderr as JSON lines (replacing the root logger's handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
