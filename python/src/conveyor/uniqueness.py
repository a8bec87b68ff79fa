"""Unique keys (spec.md#unique-keys): the publish option, its resolution, and the key digest.

A job with a unique key conflicts, at publish, with the job that holds the key while the holder's
claim is held (UKEY-003, UKEY-004). This module only computes: the key is a digest of canonical
JSON (RFC 8785) so that every implementation sharing a store computes the same one (UKEY-002).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .errors import InvalidRequest
from .model import Job, replace
from .specfiles import machine_document

CONFLICTS = ("discard", "replace", "keep")
# The states a claim covers when the request names none (UKEY-001): every state but the two
# in which the work was not performed and will not be unless an operator acts.
UNCOVERED_BY_DEFAULT = frozenset({"permanently_failed", "cancelled"})
DEFAULT_FIELDS = ("type", "payload")


@dataclass(frozen=True)
class Unique:
    """``unique=`` on publish or a handler: jobs with the same key published within ``period``
    (seconds or a timedelta; None: no time limit) of the holder, while it is in one of
    ``states``, conflict (spec.md#unique-keys).

    ``key`` is the caller's label; ``fields`` the paths whose values make the key (``type``,
    ``queue``, ``identifier``, ``payload``, ``payload.customer_id``); with neither, the key is
    made of the type and the whole payload. ``conflict``: ``discard`` returns the holder,
    ``replace`` also gives it the new payload, priority and run time while it has not started,
    ``keep`` stores the new job too, in unique mode (it needs an ``identifier``): the claim
    decides which one runs, and the other ends ``redundant``.
    """

    key: str | None = None
    fields: Sequence[str] | None = None
    period: timedelta | float | None = None
    states: Sequence[str] | None = None
    conflict: str = "discard"

    @classmethod
    def from_member(cls, member: Mapping[str, Any]) -> Unique:
        """The ``uniqueness`` member of a publish request (validated) as a Unique."""
        period = member.get("period_ms")
        return cls(
            key=member.get("key"),
            fields=member.get("fields"),
            period=None if period is None else timedelta(milliseconds=period),
            states=member.get("states"),
            conflict=member.get("conflict", "discard"),
        )

    def document(self) -> dict[str, Any]:
        """The ``uniqueness`` member of a publish request (only the members given)."""
        member: dict[str, Any] = {"conflict": self.conflict}
        if self.key is not None:
            member["key"] = self.key
        if self.fields is not None:
            member["fields"] = list(self.fields)
        if self.period is not None:
            member["period_ms"] = period_ms(self.period)
        if self.states is not None:
            member["states"] = list(self.states)
        return member


def check_request(document: Mapping[str, Any]) -> None:
    """UKEY-001: ``keep`` leaves the decision to unique mode, so the request must use it."""
    member = document.get("uniqueness")
    keep = isinstance(member, Mapping) and member.get("conflict") == "keep"
    if keep and not document.get("unique"):
        raise InvalidRequest(
            "uniqueness with conflict 'keep' needs unique true (and an identifier): unique "
            "mode decides at claim which of the kept jobs runs"
        )


def period_ms(value: timedelta | float) -> int:
    """A period in whole milliseconds, refused when not positive."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise InvalidRequest(f"unique period must be seconds or a timedelta, not {value!r}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest(f"unique period must be positive, not {value!r}")
    return max(1, round(seconds * 1000))


def as_unique(value: Any) -> Unique | None:
    """``unique=`` given as a :class:`Unique` or a mapping of its fields; None otherwise
    (a bool is unique mode, spec.md#unique)."""
    if isinstance(value, Unique):
        return value
    if isinstance(value, Mapping):
        # repr: the keys may be of any type, and mixed types do not sort
        unknown = sorted(map(repr, set(value) - set(Unique.__dataclass_fields__)))
        if unknown:
            raise InvalidRequest(
                f"unknown unique option(s) {unknown}; the options are key, fields, period, "
                "states and conflict"
            )
        return Unique(**value)
    return None


def job_states() -> tuple[str, ...]:
    return tuple(machine_document("job")["states"])


def resolve(member: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved uniqueness a job carries (UKEY-001); ``member`` validated already."""
    key = member.get("key")
    fields = member.get("fields")
    if fields is None:
        fields = list(DEFAULT_FIELDS) if key is None else []
    states = member.get("states")
    if states is None:
        states = [s for s in job_states() if s not in UNCOVERED_BY_DEFAULT]
    return {
        "key": key,
        "fields": list(fields),
        "period_ms": member.get("period_ms"),
        "states": list(states),
        "conflict": member.get("conflict", "discard"),
    }


def field_value(path: str, job: Mapping[str, Any]) -> Any:
    """The value a field path names in a job document (UKEY-002): null when missing."""
    if path in ("type", "payload"):
        requests = job.get("requests") or [{}]
        return requests[0].get(path)
    if path in ("queue", "identifier"):
        return job.get(path)
    value: Any = (job.get("requests") or [{}])[0].get("payload")
    for name in path.split(".")[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def unique_key(resolved: Mapping[str, Any], job: Mapping[str, Any]) -> str:
    """The digest of ``[key, fields, values]`` in canonical JSON (UKEY-002)."""
    fields = resolved["fields"]
    values = [field_value(path, job) for path in fields]
    text = canonical_json([resolved["key"], fields, values])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rekeyed(job: Job) -> Job:
    """The job with its unique key computed again from its fields (its payloads changed)."""
    if job.uniqueness is None:
        return job
    document = {
        "requests": [{"type": r.type, "payload": r.payload} for r in job.requests],
        "queue": job.queue,
        "identifier": job.identifier,
    }
    return replace(job, unique_key=unique_key(job.uniqueness, document))


def canonical_json(value: Any) -> str:
    """RFC 8785 (JCS): members sorted by UTF-16 code units, no whitespace, minimal string
    escapes, numbers as ECMAScript writes them."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        names = sorted(value, key=lambda name: name.encode("utf-16-be"))
        members = (f"{canonical_json(name)}:{canonical_json(value[name])}" for name in names)
        return "{" + ",".join(members) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    raise InvalidRequest(f"a unique field value must be JSON, not {type(value).__name__}")


def _number(value: float) -> str:
    """ECMAScript's Number::toString of a finite double (shortest digits, as repr has)."""
    if not math.isfinite(value):
        raise InvalidRequest("a unique field value cannot be NaN or infinite")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # n: the decimal exponent such that value = 0.digits * 10**n
    n = (
        len(whole) + int(exponent_text or 0)
        if whole != "0"
        else -(len(fraction) - len(fraction.lstrip("0"))) + int(exponent_text or 0)
    )
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent = n - 1
    mark = "+" if exponent > 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{mark}{abs(exponent)}"
