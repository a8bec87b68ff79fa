"""Every ```python block of docs/guide/bus.md runs, in order, in one namespace."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "guide" / "bus.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    found: list[str] = BLOCK.findall(text)
    assert len(found) == text.count("```python"), "a python block is not closed as expected"
    return found


@pytest.fixture
def guide_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[types.ModuleType]:
    """A real module, so the guide's dataclasses resolve their annotations."""
    monkeypatch.chdir(tmp_path)  # anything written to the working directory stays in tmp
    module = types.ModuleType("conveyor_bus_guide")
    module.__file__ = str(GUIDE)
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_the_guide_has_code() -> None:
    assert len(blocks()) >= 10


def test_every_block_of_the_guide_runs_in_order(
    guide_module: types.ModuleType, tmp_path: Path
) -> None:
    for index, source in enumerate(blocks(), start=1):
        code = compile(source, f"{GUIDE.name} block {index}", "exec")
        try:
            exec(code, guide_module.__dict__)
        except Exception as error:
            raise AssertionError(f"block {index} of {GUIDE} failed:\n{source}") from error
    namespace = guide_module.__dict__
    assert namespace["app"].url == "memory://"
    assert namespace["done"].state == "finished"  # the last block ran
    namespace["app"].close()
    assert list(tmp_path.iterdir()) == []  # no files leaked
