"""Build hooks: bundle the spec files, and state the spec version in the package metadata.

The same hooks as the library's (python/hatch_build.py), for the suite's package.

The spec lives next to the package in the repository (``../spec``). A build from the checkout
copies it into the sdist (``src/<package>/_spec``) and the wheel (``<package>/_spec``); a build
from the unpacked sdist finds the copy already under ``src/<package>/_spec``, which the wheel
takes with the package. An editable install reads ``../spec`` directly, so it bundles nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

PACKAGE = "conveyor_conformance"
SPEC_FILES = ("VERSION", "spec.md", "machines", "schemas", "retry-presets.json")


def _spec_version(root: Path) -> str:
    for candidate in (root.parent / "spec", root / "src" / PACKAGE / "_spec"):
        if (candidate / "VERSION").is_file():
            return (candidate / "VERSION").read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"no spec/VERSION next to {root} nor in src/{PACKAGE}/_spec")


class SpecFilesHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the repository's spec files to the sdist and the wheel when they are there."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        spec = Path(self.root).parent / "spec"
        if not (spec / "VERSION").is_file():
            return  # a build from the sdist: the copy is already inside the package
        prefix = f"src/{PACKAGE}/_spec" if self.target_name == "sdist" else f"{PACKAGE}/_spec"
        for name in SPEC_FILES:
            build_data["force_include"][str(spec / name)] = f"{prefix}/{name}"


class SpecVersionMetadataHook(MetadataHookInterface):
    """Names the spec version this release implements in the summary (docs/project/versions.md)."""

    def update(self, metadata: dict[str, Any]) -> None:
        major, minor, *_ = _spec_version(Path(self.root)).split(".")
        metadata["description"] = (
            f"Conformance suite for Conveyor implementations in any language (checks Conveyor "
            f"spec {major}.{minor}): a JSON-lines harness protocol, JSON vectors and a stateful "
            "property-based suite."
        )
