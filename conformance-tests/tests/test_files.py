"""The suite's own files: protocol schemas, vector files, generated vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from conveyor_conformance import generate, paths, vectors
from conveyor_conformance.protocol import PROTOCOL_RULES, Protocol
from conveyor_conformance.spec import Spec

SPEC = Spec.load()
PROTOCOL = Protocol(SPEC)
VECTOR_FILES = sorted(
    p for p in paths.vectors_dir().glob("*.json") if p.name != "vector.schema.json"
)


def test_protocol_schemas_are_valid() -> None:
    Draft202012Validator.check_schema(PROTOCOL.envelope)
    for command in PROTOCOL.commands.values():
        Draft202012Validator.check_schema(command.schema)


def test_every_command_has_a_schema_file() -> None:
    assert set(PROTOCOL.envelope["$defs"]["command"]["enum"]) == set(PROTOCOL.commands)
    index = json.loads((PROTOCOL.root / "commands.json").read_text("utf-8"))["commands"]
    assert set(index) == set(PROTOCOL.commands)
    assert all(command.group != "other" for command in PROTOCOL.commands.values())
    for name, command in PROTOCOL.commands.items():
        assert command.schema["$id"].endswith(f"/commands/{name}.schema.json")
        assert {"request", "result"} <= set(command.schema["$defs"])


def test_vector_schema_is_valid() -> None:
    Draft202012Validator.check_schema(vectors.vector_schema())


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.name)
def test_vector_file_validates(path: Path) -> None:
    assert vectors.validate_file(path) == []


def test_vectors_cite_real_requirements_and_have_unique_ids() -> None:
    loaded = vectors.load()
    ids = [v.id for v in loaded]
    assert len(ids) == len(set(ids)), "vector ids must be unique"
    known = set(SPEC.requirements) | set(PROTOCOL_RULES)
    for vector in loaded:
        cited = set(vector.requirements)
        for step in vector.steps:
            cited |= set(step.get("req", []))
        assert cited <= known, f"{vector.id} cites unknown requirements {cited - known}"
        assert set(vector.features) <= set(SPEC.features), vector.id


def _placeholders(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) in ({"$job"}, {"$batch"}):
            return "id1"
        if set(value) == {"$repeat"}:
            return vectors.repeat(value["$repeat"])
        if set(value) == {"$nest"}:
            return vectors.nest(_placeholders(value["$nest"][0]), value["$nest"][1])
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value


def test_vector_steps_are_valid_protocol_requests() -> None:
    for vector in vectors.load():
        for index, step in enumerate(vector.steps):
            request = {
                "seq": 1,
                **_placeholders({k: v for k, v in step.items() if k not in vectors.STEP_KEYS}),
                "cmd": step["cmd"],
            }
            problems = PROTOCOL.check_request(request)
            assert problems == [], f"{vector.id} step {index}: {problems}"


def test_generated_transitions_are_up_to_date() -> None:
    committed = (paths.vectors_dir() / generate.FILE).read_text("utf-8")
    assert committed == generate.render(SPEC), (
        "vectors/transitions.json is stale: run `conveyor-conformance generate`"
    )


def test_a_vector_restricting_priorities_requires_the_capability() -> None:
    for vector in vectors.load():
        if vector.priorities is not None:
            assert "priorities" in vector.requires, vector.id
            for handler in vector.handlers or vectors.DEFAULT_HANDLERS:
                assert handler["priority"] in vector.priorities, vector.id


def test_should_lies_within_expect() -> None:
    """A recommended outcome is one of those a step allows, or the step could never pass."""
    for vector in vectors.load():
        for index, step in enumerate(vector.steps):
            if "should" in step:
                allowed = step["expect"].get("any_of", [step["expect"]])
                assert step["should"] in allowed, f"{vector.id} step {index}"


def test_generated_vectors_cover_every_transition() -> None:
    document = json.loads((paths.vectors_dir() / generate.FILE).read_text("utf-8"))
    descriptions = " ".join(v["description"] for v in document["vectors"])
    for transition in SPEC.machines["job"]["transitions"]:
        if transition["event"] == "discard_redundant":
            continue  # fired only inside claims: unique.json
        if transition["event"] == "claim":
            assert "fires J01" in descriptions
            continue
        assert f"fires {transition['id']}:" in descriptions, transition["id"]


def test_requirements_are_read_from_the_spec() -> None:
    assert "CLAIM-001" in SPEC.requirements
    assert SPEC.requirements["GROUP-001"].feature == "serial_groups"
    assert SPEC.requirements["ORDER-002"].feature == "core"


def test_check_vectors_command_is_clean() -> None:
    from conveyor_conformance.checks import check_vector_files

    assert check_vector_files(SPEC) == []
