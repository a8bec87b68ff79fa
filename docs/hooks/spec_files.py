"""MkDocs hook: publish the spec's files at stable URLs, where their ``$id``s point.

Every schema and machine file declares its canonical URL in ``$id``, for example
``https://conveyor.dev/spec/0.2/schemas/job.schema.json``. So that an implementer's validator
(or a reader) can fetch that URL, the build copies each file to the path of its ``$id`` in the
site, unchanged, together with the normative text, ``VERSION`` and the changelog under
``spec/<major>.<minor>/``. Nothing here is hard-coded: the paths come from the files' ``$id``s,
and the directory of the other files from ``spec/VERSION``.

The build fails when an ``$id`` does not lie under ``/spec/<major>.<minor>/`` of the version in
``spec/VERSION``, or when its host is not the host of ``site_url``: a file would then be
published where its own ``$id`` does not point.

The conformance suite's schemas (protocol and vector formats) carry ``$id``s on the same site
and are published at their paths as well.

``<!-- spec-files -->`` and ``<!-- conformance-files -->`` in a page become the tables of those
files with their stable URLs.
The deploy (``docs/tools/deploy_docs.py``) also copies ``spec/<major>.<minor>/`` to the root of
the published site for each release, so the URLs stay valid beside the versioned docs.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mkdocs.exceptions import PluginError

MARKERS = {"<!-- spec-files -->": "spec/", "<!-- conformance-files -->": "conformance/"}
# The conformance suite's schemas carry $ids on the same site (protocol and vector formats, with
# their own version numbers in the path); they are published the same way.
CONFORMANCE_GLOBS = (
    "conformance-tests/protocol/**/*.schema.json",
    "conformance-tests/vectors/*.json",
)
# JSON files that carry an $id, relative to spec/.
ID_GLOBS = ("schemas/*.json", "machines/*.json", "*.json")
# Published as they are, under spec/<major>.<minor>/.
PLAIN_FILES = ("spec.md", "VERSION", "CHANGELOG.md")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.\d+")


@dataclass(frozen=True)
class SpecFile:
    """One spec file and the site path it is published at (no leading slash)."""

    source: Path
    site_path: str
    url: str  # the $id, or the URL the file gets under the site's spec directory


def minor_version(spec: Path) -> str:
    """``0.1`` for a spec/VERSION of ``0.1.0`` (or ``0.1.0-rc.1``)."""
    try:
        text = (spec / "VERSION").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PluginError(f"spec_files hook: cannot read spec/VERSION: {exc}") from None
    match = VERSION_RE.match(text)
    if not match:
        raise PluginError(f"spec_files hook: spec/VERSION is {text!r}, not MAJOR.MINOR.PATCH.")
    return f"{match.group(1)}.{match.group(2)}"


def _identifier(path: Path) -> str | None:
    """The file's ``$id``, or None when it has none."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PluginError(f"spec_files hook: cannot read {path}: {exc}") from None
    identifier = document.get("$id") if isinstance(document, dict) else None
    return identifier if isinstance(identifier, str) else None


def spec_files(spec: Path, site_url: str | None) -> list[SpecFile]:
    """Every file to publish, with its path in the site, checked against spec/VERSION."""
    prefix = f"spec/{minor_version(spec)}/"
    site_host = urlsplit(site_url).netloc if site_url else None
    found: list[SpecFile] = []
    seen: set[Path] = set()
    for pattern in ID_GLOBS:
        for path in sorted(spec.glob(pattern)):
            if path in seen:
                continue
            seen.add(path)
            identifier = _identifier(path)
            if identifier is None:
                continue
            parts = urlsplit(identifier)
            site_path = posixpath.normpath(parts.path).lstrip("/")
            if not site_path.startswith(prefix):
                raise PluginError(
                    f"spec_files hook: {path.relative_to(spec.parent)} has $id {identifier}, "
                    f"outside /{prefix} of spec/VERSION; make the $id and VERSION agree."
                )
            if site_host and parts.netloc != site_host:
                raise PluginError(
                    f"spec_files hook: {path.relative_to(spec.parent)} has $id {identifier}, "
                    f"but the site is published at {site_url}; make the $id host and site_url "
                    "in mkdocs.yml agree."
                )
            found.append(SpecFile(path, site_path, identifier))
    base = site_url.rstrip("/") + "/" if site_url else "/"
    for name in PLAIN_FILES:
        path = spec / name
        if path.is_file():
            found.append(SpecFile(path, prefix + name, base + prefix + name))
    return found


def conformance_files(root: Path, site_url: str | None) -> list[SpecFile]:
    """The conformance suite's schemas, at the paths of their ``$id``s (outside /spec/)."""
    site_host = urlsplit(site_url).netloc if site_url else None
    found = []
    for pattern in CONFORMANCE_GLOBS:
        for path in sorted(root.glob(pattern)):
            identifier = _identifier(path)
            if identifier is None:
                continue
            parts = urlsplit(identifier)
            site_path = posixpath.normpath(parts.path).lstrip("/")
            if site_path.startswith("spec/") or (site_host and parts.netloc != site_host):
                raise PluginError(
                    f"spec_files hook: {path.relative_to(root)} has $id {identifier}, which "
                    f"must be on {site_url} and outside /spec/."
                )
            found.append(SpecFile(path, site_path, identifier))
    return found


def published_files(root: Path, site_url: str | None) -> list[SpecFile]:
    """Everything the build publishes at a stable URL: the spec's files, then the suite's."""
    return spec_files(root / "spec", site_url) + conformance_files(root, site_url)


def _files_for(config: Any) -> list[SpecFile]:
    root = Path(config["config_file_path"]).resolve().parent
    return published_files(root, config.get("site_url"))


def on_post_build(config: Any) -> None:
    """Copy each spec file, unchanged, to its path in the built site."""
    site = Path(config["site_dir"])
    for spec_file in _files_for(config):
        target = site / spec_file.site_path
        if target.exists():
            raise PluginError(f"spec_files hook: {spec_file.site_path} is already a page.")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec_file.source, target)


def render_table(page_url: str, entries: list[SpecFile], root: Path) -> str:
    """A Markdown table: each file, linked to this build's copy, and its stable URL.

    The links are HTML, relative to the page's URL: the files are copied after the build, so
    MkDocs does not know them (``just docs-check`` follows every link).
    """
    page_dir = page_url if page_url.endswith("/") or not page_url else posixpath.dirname(page_url)
    rows = ["| file | stable URL |", "|---|---|"]
    for entry in entries:
        link = html.escape(posixpath.relpath(entry.site_path, page_dir or "."))
        name = html.escape(entry.source.relative_to(root).as_posix())
        rows.append(f'| <a href="{link}"><code>{name}</code></a> | `{entry.url}` |')
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker with the table of the files published under its directory."""
    root = Path(config["config_file_path"]).resolve().parent
    for marker, prefix in MARKERS.items():
        if marker in markdown:
            entries = [e for e in _files_for(config) if e.site_path.startswith(prefix)]
            markdown = markdown.replace(marker, render_table(page.url, entries, root))
    return markdown
