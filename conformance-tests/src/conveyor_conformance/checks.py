"""Sanity checks of vector files: schema, unique ids, known requirements and features."""

from __future__ import annotations

from pathlib import Path

from . import paths, vectors
from .protocol import PROTOCOL_RULES
from .spec import Spec


def check_vector_files(spec: Spec, directory: Path | None = None) -> list[str]:
    """Every problem found in the vector files of ``directory``; empty when all is well."""
    directory = directory or paths.vectors_dir()
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        if path.name != "vector.schema.json":
            problems += vectors.validate_file(path)
    if problems:
        return problems
    known = set(spec.requirements) | set(PROTOCOL_RULES)
    seen: dict[str, str] = {}
    for vector in vectors.load(directory):
        if vector.id in seen:
            problems.append(f"{vector.file}: id {vector.id} is also used in {seen[vector.id]}")
        seen[vector.id] = vector.file
        cited = set(vector.requirements)
        for step in vector.steps:
            cited |= set(step.get("req", []))
        for req in sorted(cited - known):
            problems.append(f"{vector.file}: {vector.id} cites {req}, not defined in spec.md")
        for feature in sorted(set(vector.features) - set(spec.features)):
            problems.append(f"{vector.file}: {vector.id} needs unknown feature {feature}")
    return problems
