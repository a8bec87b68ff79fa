"""The spec files are published where their $ids point, derived from the files, never listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spec_files
from mkdocs.exceptions import PluginError

SPEC = Path(__file__).resolve().parents[2] / "spec"
SITE_URL = "https://conveyor.dev/"


def _write_spec(root: Path, version: str, ids: dict[str, str]) -> Path:
    spec = root / "spec"
    (spec / "schemas").mkdir(parents=True)
    (spec / "VERSION").write_text(version + "\n")
    (spec / "spec.md").write_text("# Spec\n")
    for name, identifier in ids.items():
        (spec / "schemas" / name).write_text(json.dumps({"$id": identifier}))
    return spec


def test_every_file_with_an_id_is_published_at_its_id_path() -> None:
    entries = spec_files.spec_files(SPEC, SITE_URL)
    with_id = [
        path
        for pattern in spec_files.ID_GLOBS
        for path in SPEC.glob(pattern)
        if isinstance(json.loads(path.read_text()), dict) and "$id" in json.loads(path.read_text())
    ]
    assert len(with_id) >= 10
    published = {entry.source: entry for entry in entries}
    for path in with_id:
        identifier = json.loads(path.read_text())["$id"]
        assert published[path].url == identifier
        assert identifier.endswith("/" + published[path].site_path)
    assert any(entry.site_path.endswith("/spec.md") for entry in entries)


def test_the_directory_follows_spec_version_not_a_fixed_number(tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        "0.2.0",
        {"job.schema.json": "https://conveyor.dev/spec/0.2/schemas/job.schema.json"},
    )
    paths = {entry.site_path for entry in spec_files.spec_files(spec, SITE_URL)}
    assert paths == {"spec/0.2/schemas/job.schema.json", "spec/0.2/spec.md", "spec/0.2/VERSION"}


def test_an_id_outside_the_version_directory_fails_the_build(tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        "0.2.0",
        {"job.schema.json": "https://conveyor.dev/spec/0.1/schemas/job.schema.json"},
    )
    with pytest.raises(PluginError, match=r"outside /spec/0\.2/"):
        spec_files.spec_files(spec, SITE_URL)


def test_an_id_on_another_host_than_the_site_fails_the_build(tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        "0.1.0",
        {"job.schema.json": "https://example.org/spec/0.1/schemas/job.schema.json"},
    )
    with pytest.raises(PluginError, match="site_url"):
        spec_files.spec_files(spec, SITE_URL)


def test_a_malformed_version_names_the_file(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, "one", {})
    with pytest.raises(PluginError, match="spec/VERSION"):
        spec_files.minor_version(spec)


def test_table_links_are_relative_to_the_page() -> None:
    entries = spec_files.spec_files(SPEC, SITE_URL)
    table = spec_files.render_table("spec/schemas/", entries, SPEC.parent)
    version = spec_files.minor_version(SPEC)
    assert f'<a href="../{version}/schemas/job.schema.json">' in table
    index = spec_files.render_table("spec/", entries, SPEC.parent)
    assert f'<a href="{version}/schemas/job.schema.json">' in index


def test_the_conformance_schemas_are_published_at_their_ids_too() -> None:
    entries = spec_files.conformance_files(SPEC.parent, SITE_URL)
    assert len(entries) >= 20
    for entry in entries:
        assert entry.url == json.loads(entry.source.read_text())["$id"]
        assert entry.url.endswith("/" + entry.site_path)
        assert entry.site_path.startswith("conformance/")
