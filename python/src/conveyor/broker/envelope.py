"""The broker message body: a job's id, queue and priority (spec/schemas/envelope.schema.json)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .. import schemacheck
from ..clock import format_timestamp, parse_timestamp
from ..errors import ConveyorError
from ..model import Job
from ..specfiles import wire_version
from .body import bounded, json_document, json_type


class InvalidEnvelope(ConveyorError):
    """A broker message that is not a Conveyor envelope (it is acknowledged and ignored)."""


_FIELDS = frozenset(("specversion", "job_id", "queue", "priority", "published_at"))
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUEUE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _surely_valid(document: Any) -> bool:
    """The schema's rules for the common case, checked directly; when this says no, the
    schema validator decides (and names the problem). Tested against the schema."""
    return (
        isinstance(document, dict)
        and document.keys() == _FIELDS
        and document["specversion"] == wire_version()
        and isinstance(document["job_id"], str)
        and _JOB_ID.fullmatch(document["job_id"]) is not None
        and isinstance(document["queue"], str)
        and _QUEUE.fullmatch(document["queue"]) is not None
        and type(document["priority"]) is int
        and 0 <= document["priority"] <= 32767
        and isinstance(document["published_at"], str)
        and _TIMESTAMP.fullmatch(document["published_at"]) is not None
    )


def _check_version(specversion: str) -> None:
    """VER-005: another major version is not processed; a higher minor one is, reading the
    members this version defines (a later minor version only adds optional members)."""
    # Leading zeros go first, and overlong numbers never reach int() (Python refuses
    # thousands of digits, and no version has them).
    major = specversion.split(".", maxsplit=1)[0].lstrip("0") or "0"
    ours_major = int(wire_version().split(".")[0])
    if len(major) > 9 or int(major) != ours_major:
        raise InvalidEnvelope(
            f"specversion {specversion[:20]!r} is not one this consumer processes (major "
            f"{ours_major}); run a consumer of that major version to read it (VER-005)"
        )


@dataclass(frozen=True)
class Envelope:
    job_id: str
    queue: str
    priority: int
    published_at: datetime

    @classmethod
    def of(cls, job: Job, now: datetime) -> Envelope:
        return cls(job.id, job.queue, job.priority, now)

    def again(self, now: datetime) -> Envelope:
        """The same envelope, handed over anew at ``now``."""
        return replace(self, published_at=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": wire_version(),
            "job_id": self.job_id,
            "queue": self.queue,
            "priority": self.priority,
            "published_at": format_timestamp(self.published_at),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, body: bytes) -> Envelope:
        """Decode and validate a message body; raise :class:`InvalidEnvelope`, and nothing
        else, for any body that is not an envelope (spec.md#BROKER-006: a consumer
        acknowledges and ignores it). Members this version does not define are ignored
        (spec.md#VER-005), so a message of a later minor version is processed."""
        document = json_document(body, InvalidEnvelope)
        if not isinstance(document, dict):
            raise InvalidEnvelope(f"the envelope is a JSON {json_type(document)}, not an object")
        if not _surely_valid(document):
            problem = _schema_problem(document)
            if problem is not None:
                raise InvalidEnvelope(problem)
            _check_version(document["specversion"])
        stamp = document["published_at"]
        try:
            published_at = parse_timestamp(stamp)
        except (ValueError, OverflowError):
            raise InvalidEnvelope(
                f"published_at: {bounded(repr(stamp), 60)} is not a date and time that exists"
            ) from None
        return cls(
            job_id=document["job_id"],
            queue=document["queue"],
            priority=int(document["priority"]),  # JSON Schema's integers include 10.0
            published_at=published_at,
        )


def _schema_problem(document: dict[str, Any]) -> str | None:
    """The first schema violation of ``document``, in one short line, or None."""
    try:
        problem = next(iter(schemacheck.validator("envelope").iter_errors(document)), None)
        if problem is None:
            return None
        where = "/".join(bounded(str(part), 40) for part in problem.absolute_path)
        return bounded(f"{where or 'the envelope'}: {problem.message}")
    except RecursionError:
        return "the envelope is nested too deeply to validate"
