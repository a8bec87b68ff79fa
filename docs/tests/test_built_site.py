"""Checks on the built site (``just docs`` first; ``just docs-check`` runs both in order)."""

from __future__ import annotations

import re
from pathlib import Path

import api_reference
import pytest
import spec_files

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"
ROLE_RE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|mod|data|obj|const):`")


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE} is not built: run `just docs` first (`just docs-check` does).")
    return SITE


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_every_exported_name_has_its_anchor_on_the_api_page(site: Path) -> None:
    page = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(conveyor\.[A-Za-z_]\w*)"', page))
    names = api_reference.exported_names(ROOT / "python" / "src" / "conveyor" / "__init__.py")
    missing = [name for name, _ in names if f"conveyor.{name}" not in anchors]
    assert not missing, f"the API page lacks {missing}"


def test_no_page_shows_a_raw_sphinx_role(site: Path) -> None:
    shown = [
        str(path.relative_to(site))
        for path in site.rglob("*.html")
        if ROLE_RE.search(_text(path.read_text(encoding="utf-8")))
    ]
    assert not shown, f"raw :role:`...` text on {shown}"


def test_every_spec_id_resolves_to_the_published_file(site: Path) -> None:
    """Each $id's path exists in the site and serves the file unchanged (derived, not listed)."""
    config_url = re.search(r"^site_url:\s*(\S+)", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert config_url
    entries = spec_files.published_files(ROOT, config_url.group(1))
    with_id = [entry for entry in entries if entry.source.suffix == ".json"]
    assert len(with_id) >= 30  # the spec's schemas and machines, and the conformance schemas
    for entry in entries:
        published = site / entry.site_path
        assert published.is_file(), f"{entry.url} is not in the built site"
        assert published.read_bytes() == entry.source.read_bytes(), entry.url


def test_no_page_references_a_script_or_stylesheet_on_another_host(site: Path) -> None:
    """The browser check sees what loads; this one reads every page, the 404 page included."""
    external = re.compile(
        r"<script[^>]*\ssrc=\"(?:https?:)?//[^\"]*\"|"
        r"<link[^>]*\srel=\"(?:stylesheet|preload|modulepreload|icon)\"[^>]*\shref=\"(?:https?:)?//|"
        r"<link[^>]*\shref=\"(?:https?:)?//[^\"]*\"[^>]*\srel=\"(?:stylesheet|preload|modulepreload)\"|"
        r"@import\s+url\(\s*[\"']?(?:https?:)?//",
        re.IGNORECASE,
    )
    found = {
        str(path.relative_to(site)): match.group(0)
        for path in site.rglob("*.html")
        if (match := external.search(path.read_text(encoding="utf-8")))
    }
    assert not found, found
