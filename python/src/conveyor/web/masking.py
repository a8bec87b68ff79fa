"""Hide what a page must never show: passwords inside URLs, and payloads unless allowed."""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@host: the password part, whatever the scheme (database, broker,
# HTTP endpoints quoted in error messages and tracebacks).
# The scheme starts a word and is at most 32 characters long, so that a long string without
# any URL (a payload of a megabyte) is scanned in linear time, not tried at every position.
_CREDENTIALS = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^/\s:@]*:)(?P<secret>[^@\s/]+)@"
)


def mask_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}***@", text)


def masked(value: Any) -> Any:
    """A JSON value with every string's URL passwords masked."""
    if isinstance(value, str):
        return mask_urls(value)
    if isinstance(value, list):
        return [masked(item) for item in value]
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    return value


def job_view(job: dict[str, Any], show_payloads: bool) -> dict[str, Any]:
    """A job document (job.schema.json) as the web shows it: URL passwords masked
    everywhere, and unless ``show_payloads`` the payloads withheld (null) and the metadata
    empty, as the HTTP binding allows (spec.md#HTTP-012); the responses then carry the header
    ``Conveyor-Withheld`` instead of a member the job schema does not define."""
    shown = masked(job)
    if not show_payloads:
        for request in shown["requests"]:
            request["payload"] = None
        shown["metadata"] = {}
    return dict(shown)
