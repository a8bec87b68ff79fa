"""Every pattern the library checks matches the whole value: ECMA-262's ``$``, never Python's.

Python's ``$`` also matches before a final newline, so ``"9\\n"`` passed for a job id. Spec:
LIMIT-001, LIMIT-002, BROKER-006, VER-003.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import ConfigurationError, PriorityRange
from conveyor.broker import Envelope, InvalidEnvelope
from conveyor.bus import InvalidMessage, MessageSerializer
from conveyor.schemacheck import ecma_pattern, validator
from conveyor.specfiles import spec_dir


def schema_patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from schema_patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from schema_patterns(item)


PATTERNS = sorted(
    {
        pattern
        for path in (spec_dir() / "schemas").glob("*.schema.json")
        for pattern in schema_patterns(json.loads(Path(path).read_text("utf-8")))
    }
)


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_schema_patterns_match_whole_values_only(pattern: str, data: st.DataObject) -> None:
    """An anchored schema pattern ``^X$`` accepts exactly what X matches in full, so a
    value with a newline appended passes only where X itself allows a newline."""
    assert pattern.startswith("^"), "schema patterns are anchored"
    assert pattern.endswith("$"), "schema patterns are anchored"
    compiled = ecma_pattern(pattern)
    whole = re.compile(pattern[1:-1], re.ASCII)
    value = data.draw(st.from_regex(compiled))
    for candidate in (value, value + "\n", "\n" + value):
        assert bool(compiled.search(candidate)) == bool(whole.fullmatch(candidate)), candidate


@pytest.mark.parametrize(
    ("pattern", "accepted", "refused"),
    [
        ("^a$|^b$", ["a", "b"], ["a\n", "b\n"]),
        ("^[$]+$", ["$$"], ["$\n"]),
        (r"^\$$", ["$"], ["$\n"]),
        (r"^\d+$", ["42"], ["٤٢", "4\n"]),
    ],
)
def test_ecma_patterns_read_dollar_and_digits_as_ecma_262_does(
    pattern: str, accepted: list[str], refused: list[str]
) -> None:
    """``$`` is the end of the input, inside alternatives too; ``\\d`` is an ASCII digit."""
    compiled = ecma_pattern(pattern)
    assert all(compiled.search(value) for value in accepted)
    assert not any(compiled.search(value) for value in refused)


def test_the_schema_validators_refuse_a_trailing_newline() -> None:
    """The stock validator would accept every one of these."""
    job = {
        "requests": [{"type": "t"}],
        "queue": "mail\n",
        "identifier": "invoice:1\n",
        "depends_on": ["9\n"],
        "available_at": "2026-01-01T00:00:00.000Z\n",
    }
    problems = {str(error.path[0]) for error in validator("publish").iter_errors(job)}
    assert problems == {"queue", "identifier", "depends_on", "available_at"}


ENVELOPE = {
    "specversion": "0.2",
    "job_id": "9",
    "queue": "default",
    "priority": 100,
    "published_at": "2026-01-01T09:30:00.125Z",
}


def body(**changes: Any) -> bytes:
    return json.dumps({**ENVELOPE, **changes}).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "9\n"},
        {"queue": "default\n"},
        {"published_at": "2026-01-01T09:30:00.125Z\n"},
        {"specversion": "0.1\n"},
    ],
)
def test_an_envelope_with_a_trailing_newline_is_not_an_envelope(changes: dict[str, str]) -> None:
    """BROKER-006: the schema's patterns match the whole value."""
    with pytest.raises(InvalidEnvelope, match=next(iter(changes))):
        Envelope.parse(body(**changes))


@pytest.mark.parametrize("version", ["9.9", "1.0", "1.1", "01.0", "999999999.1"])
def test_an_envelope_of_another_major_version_is_refused(version: str) -> None:
    """VER-005: a consumer does not process a document of another major version."""
    with pytest.raises(InvalidEnvelope, match="VER-005"):
        Envelope.parse(body(specversion=version))


def test_an_overlong_version_is_not_an_envelope() -> None:
    """LIMIT-009: a version part has at most nine digits."""
    with pytest.raises(InvalidEnvelope, match="specversion"):
        Envelope.parse(body(specversion="1" * 5000 + ".1"))


@pytest.mark.parametrize("version", ["0.2", "0.1", "0.0", "00.02", "0.3", "0.10", "0.999999999"])
def test_an_envelope_of_the_same_major_version_is_processed(version: str) -> None:
    """VER-005: a higher minor version is read as this version (it only adds members)."""
    assert Envelope.parse(body(specversion=version)).job_id == "9"


def test_an_envelope_with_members_this_version_does_not_define_is_processed() -> None:
    """VER-005: a consumer ignores unknown members instead of dropping the message."""
    envelope = Envelope.parse(body(specversion="0.7", trace_id="4bf9", route={"x": [1]}))
    assert (envelope.job_id, envelope.queue, envelope.priority) == ("9", "default", 100)


def test_an_envelope_with_a_payload_is_not_an_envelope() -> None:
    """BROKER-006: the envelope never carries the payload, even among unknown members."""
    with pytest.raises(InvalidEnvelope, match="payload"):
        Envelope.parse(body(payload={"to": "x"}))


@pytest.mark.parametrize("version", ["0.2", "0.1", "0.0", "00.02"])
def test_an_envelope_of_this_or_a_lower_minor_version_is_processed(version: str) -> None:
    assert Envelope.parse(body(specversion=version)).job_id == "9"


@dataclass(frozen=True)
class Note:
    text: str


def test_a_message_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="not valid"):
        MessageSerializer().register(Note, "notes.add\n")


@pytest.mark.parametrize("text", ["10\n-", "1٣", "٣-"])
def test_priority_ranges_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(ConfigurationError, match="priority range"):
        PriorityRange.parse(text)
