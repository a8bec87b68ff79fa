"""The spec as the suite reads it: machine files, schemas, retry presets and requirement IDs.

Nothing here imports the reference library: the suite must be able to catch a bug that the
reference implementation and a shared helper would otherwise both carry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from . import ecma, paths

REQUIREMENT = re.compile(r"^\*\*\[(?P<id>[A-Z]+-\d{3})\]\*\*(?P<text>.*)$")
FEATURE_ROW = re.compile(r"^\|\s*`(?P<feature>[a-z_]+)`\s*\|\s*(?P<prefix>[A-Z]+)\s*\|")
MUST = re.compile(r"\b(MUST|MUST NOT|REQUIRED|SHALL|SHALL NOT)\b")
SHOULD = re.compile(r"\b(SHOULD|SHOULD NOT|RECOMMENDED)\b")


@dataclass(frozen=True)
class Requirement:
    id: str
    feature: str  # "core" or a feature name
    level: str  # "must", "should" or "may"
    summary: str


@dataclass
class Spec:
    """Loaded spec files; ``Spec.load()`` reads them from :func:`paths.spec_dir`."""

    root: Path
    version: str
    machines: dict[str, dict[str, Any]]
    presets: dict[str, Any]
    requirements: dict[str, Requirement] = field(default_factory=dict)
    feature_prefixes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path | None = None) -> Spec:
        directory = paths.spec_dir(root)
        machines = {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((directory / "machines").glob("*.json"))
        }
        presets = json.loads((directory / "retry-presets.json").read_text(encoding="utf-8"))
        version = (directory / "VERSION").read_text(encoding="utf-8").strip()
        spec = cls(directory, version, machines, presets)
        spec._read_prose(directory / "spec.md")
        return spec

    @property
    def wire_version(self) -> str:
        major, minor, *_ = self.version.split(".")
        return f"{major}.{minor}"

    @property
    def features(self) -> list[str]:
        return sorted(set(self.feature_prefixes.values()))

    def feature_of(self, requirement_id: str) -> str:
        prefix = requirement_id.split("-", 1)[0]
        return self.feature_prefixes.get(prefix, "core")

    def _read_prose(self, path: Path) -> None:
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            row = FEATURE_ROW.match(line)
            if row:
                self.feature_prefixes[row["prefix"]] = row["feature"]
        index = 0
        while index < len(lines):
            match = REQUIREMENT.match(lines[index])
            if not match:
                index += 1
                continue
            text = [match["text"].strip()]
            index += 1
            while index < len(lines) and lines[index].strip() and not lines[index].startswith("{:"):
                text.append(lines[index].strip())
                index += 1
            paragraph = " ".join(text)
            level = (
                "must"
                if MUST.search(paragraph)
                else "should"
                if SHOULD.search(paragraph)
                else "may"
            )
            summary = paragraph if len(paragraph) <= 160 else paragraph[:157].rstrip() + "..."
            req = match["id"]
            self.requirements[req] = Requirement(req, self.feature_of(req), level, summary)

    @cached_property
    def registry(self) -> Registry[Any]:
        resources = []
        for path in sorted((self.root / "schemas").glob("*.schema.json")):
            contents = json.loads(path.read_text(encoding="utf-8"))
            resources.append((contents["$id"], Resource.from_contents(contents)))
        registry: Registry[Any] = Registry().with_resources(resources)
        return registry

    def schema_id(self, name: str) -> str:
        document = json.loads((self.root / "schemas" / f"{name}.schema.json").read_text("utf-8"))
        return str(document["$id"])

    def validator(self, name: str, pointer: str = "") -> Draft202012Validator:
        """A validator for ``schemas/<name>.schema.json`` (optionally a ``#/$defs/...`` part)."""
        key = (name, pointer)
        cache: dict[tuple[str, str], Draft202012Validator] = self.__dict__.setdefault(
            "_validators", {}
        )
        if key not in cache:
            ref = self.schema_id(name) + (f"#{pointer}" if pointer else "")
            # VER-008: ECMA-262 patterns ("9\n" is no job id) and asserted date-time formats.
            cache[key] = ecma.validator(ref, self.ecma_registry)
        return cache[key]

    @cached_property
    def ecma_registry(self) -> Registry[Any]:
        schemas = {
            path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.root / "schemas").glob("*.schema.json"))
        }
        return ecma.registry_without_dialect(schemas)
