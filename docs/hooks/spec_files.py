"""MkDocs hook: publish the spec's files at stable URLs, where their ``$id``s point.

Every schema and machine file declares its canonical URL in ``$id``, for example
``https://conveyor.dev/spec/0.1/schemas/job.schema.json``. So that an implementer's validator
(or a reader) can fetch that URL, the build copies each file to the path of its ``$id`` in the
site, unchanged, together with the normative text, ``VERSION`` and the changelog under
``spec/<major>.<minor>/``. Nothing here is hard-coded: the paths come from the files' ``$id``s,
and the directory of the other files from ``spec/VERSION``.

The build fails when an ``$id`` does not lie under ``/spec/<major>.<minor>/`` of the version in
``spec/VERSION``, or when its host is not the host of ``site_url``: a file would then be
published where its own ``$id`` does not point.

``<!-- spec-files -->`` in a page becomes the table of those files with their stable URLs.
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

MARKER = "<!-- spec-files -->"
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


def spec_dir(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent / "spec"


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
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise PluginError(f"spec_files hook: cannot read {path}: {exc}") from None
            identifier = document.get("$id") if isinstance(document, dict) else None
            if not isinstance(identifier, str):
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


def _files_for(config: Any) -> list[SpecFile]:
    return spec_files(spec_dir(config), config.get("site_url"))


def on_post_build(config: Any) -> None:
    """Copy each spec file, unchanged, to its path in the built site."""
    site = Path(config["site_dir"])
    for spec_file in _files_for(config):
        target = site / spec_file.site_path
        if target.exists():
            raise PluginError(f"spec_files hook: {spec_file.site_path} is already a page.")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec_file.source, target)


def render_table(page_url: str, entries: list[SpecFile], spec: Path) -> str:
    """A Markdown table: each file, linked to this build's copy, and its stable URL.

    The links are HTML, relative to the page's URL: the files are copied after the build, so
    MkDocs does not know them (``just docs-check`` follows every link).
    """
    page_dir = page_url if page_url.endswith("/") or not page_url else posixpath.dirname(page_url)
    rows = ["| file | stable URL |", "|---|---|"]
    for entry in entries:
        link = html.escape(posixpath.relpath(entry.site_path, page_dir or "."))
        name = html.escape(entry.source.relative_to(spec.parent).as_posix())
        rows.append(f'| <a href="{link}"><code>{name}</code></a> | `{entry.url}` |')
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the table of published spec files."""
    if MARKER not in markdown:
        return markdown
    table = render_table(page.url, _files_for(config), spec_dir(config))
    return markdown.replace(MARKER, table)
