"""Locate and load the spec files that drive the library.

The wheel carries a copy of ``spec/`` under ``conveyor/_spec``; an editable install
reads the repository's ``spec/`` directly, so both always use the real files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from referencing import Registry, Resource


def spec_dir() -> Path:
    """The directory holding VERSION, machines/, schemas/ and retry-presets.json."""
    packaged = Path(__file__).parent / "_spec"
    if (packaged / "VERSION").is_file():
        return packaged
    repository = Path(__file__).resolve().parents[3] / "spec"
    if (repository / "VERSION").is_file():
        return repository
    raise FileNotFoundError(
        "Conveyor's spec files are missing: reinstall the package (pip install conveyor-queue) "
        "so that conveyor/_spec is present."
    )


def load_json(relative: str) -> Any:
    return json.loads((spec_dir() / relative).read_text(encoding="utf-8"))


@functools.cache
def spec_version() -> str:
    """The full SemVer of the spec, e.g. ``0.1.0``."""
    return (spec_dir() / "VERSION").read_text(encoding="utf-8").strip()


def wire_version() -> str:
    """Major.minor, the part of the version documents carry."""
    major, minor, *_ = spec_version().split(".")
    return f"{major}.{minor}"


@functools.cache
def machine_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = load_json(f"machines/{name}.json")
    return document


@functools.cache
def schema_registry() -> Registry[Any]:
    """An offline registry of every schema, keyed by ``$id`` (never fetches)."""
    resources = []
    for path in sorted((spec_dir() / "schemas").glob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


def schema_id(name: str) -> str:
    document: dict[str, Any] = load_json(f"schemas/{name}.schema.json")
    return str(document["$id"])


@functools.cache
def retry_presets_document() -> dict[str, Any]:
    document: dict[str, Any] = load_json("retry-presets.json")
    return document
