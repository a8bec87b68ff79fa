"""Control messages: requests to running consumers (``conveyor reload-consumers``).

A control queue is as open as a job queue, so parsing a body follows the same rule: a request,
or :class:`InvalidControl` for anything else, which a consumer acknowledges and ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..clock import format_timestamp, parse_timestamp
from ..errors import ConveyorError
from .body import bounded, json_document, json_type

COMMANDS = frozenset({"reload"})


class InvalidControl(ConveyorError):
    """A control-queue message that is not a control request (acknowledged and ignored)."""


@dataclass(frozen=True)
class ControlRequest:
    """``reload``: finish the current job and exit (RELOAD_EXIT_CODE), if the consumer was
    running at ``requested_at``."""

    command: str
    requested_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "requested_at": format_timestamp(self.requested_at)}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, body: bytes) -> ControlRequest:
        """Decode a message body; raise :class:`InvalidControl`, and nothing else, for any
        body that is not a control request."""
        document = json_document(body, InvalidControl)
        if not isinstance(document, dict):
            raise InvalidControl(
                f"a control request is a JSON object, and this is a {json_type(document)}"
            )
        command = document.get("command")
        if not isinstance(command, str) or command not in COMMANDS:
            shown = bounded(repr(command), 60) if isinstance(command, str) else json_type(command)
            raise InvalidControl(f"unknown control command {shown}; known: reload")
        stamp = document.get("requested_at")
        if not isinstance(stamp, str):
            raise InvalidControl(
                f"requested_at is a JSON {json_type(stamp)}; a request carries a timestamp "
                "such as 2026-01-01T09:30:00.000Z"
            )
        try:
            requested_at = parse_timestamp(stamp)
        except (ValueError, OverflowError):
            raise InvalidControl(
                f"requested_at: {bounded(repr(stamp), 60)} is not a date and time with a "
                "timezone that exists"
            ) from None
        return cls(command, requested_at)
