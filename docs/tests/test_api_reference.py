"""The API page documents every exported name, and no Sphinx role reaches a reader raw."""

from __future__ import annotations

from pathlib import Path

import api_reference
import griffe
import griffe_roles
import pytest

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "python" / "src" / "conveyor" / "__init__.py"


def test_every_name_of_all_gets_a_directive() -> None:
    names = api_reference.exported_names(INIT)
    page = api_reference.render(names)
    assert len(names) > 30
    for name, _ in names:
        assert page.count(f"::: conveyor.{name}\n") == 1, name
    assert "## Errors" in page


def test_names_are_grouped_by_their_module_and_unknown_ones_still_appear(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text(
        "from .errors import Refused\nfrom .brand_new import Thing\n"
        "VALUE = 1\n__all__ = ['Refused', 'Thing', 'VALUE']\n"
    )
    names = api_reference.exported_names(init)
    assert names == [("Refused", "errors"), ("Thing", "brand_new"), ("VALUE", "")]
    page = api_reference.render(names)
    assert page.index("## Errors") < page.index("::: conveyor.Refused")
    assert page.index("## Other names") < page.index("::: conveyor.Thing")
    assert "::: conveyor.VALUE" in page


def test_an_init_without_all_fails_the_build(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text("from .app import Conveyor\n")
    with pytest.raises(Exception, match="no literal __all__"):
        api_reference.exported_names(init)


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    loaded = griffe.load("conveyor", search_paths=[str(ROOT / "python" / "src")])
    assert isinstance(loaded, griffe.Module)
    return loaded


def test_roles_naming_documented_objects_become_links(package: griffe.Module) -> None:
    scope = package["Conveyor"].target
    text = "See :class:`~conveyor.errors.Refused`, :meth:`publish` and :class:`Job`."
    converted = griffe_roles.convert(text, package, scope)
    assert converted == (
        "See [`Refused`][conveyor.Refused], [`publish`][conveyor.Conveyor.publish] "
        "and [`Job`][conveyor.Job]."
    )


def test_roles_naming_other_objects_become_code(package: griffe.Module) -> None:
    text = ":class:`~conveyor.source.JobSource` and :func:`encode` and :mod:`conveyor.outcomes`"
    converted = griffe_roles.convert(text, package, package)
    assert converted == "`JobSource` and `encode` and `conveyor.outcomes`"


def test_rst_literal_block_markers_lose_a_colon(package: griffe.Module) -> None:
    assert griffe_roles.convert("Tree::\n\n    a\n", package, package) == "Tree:\n\n    a\n"
    assert griffe_roles.convert("a :: b", package, package) == "a :: b"
