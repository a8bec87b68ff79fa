"""Checks on the built site (``just docs`` first; ``just docs-check`` runs both in order)."""

from __future__ import annotations

import re
from pathlib import Path

import api_reference
import pytest

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
