"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_quick_start_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVEYOR_URL", raising=False)

    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, str(README), "exec"), namespace)
    namespace["app"].close()  # type: ignore[attr-defined]

    assert "invoice 42 sent to ann@example.com" in capsys.readouterr().out
    assert (tmp_path / "conveyor.db").is_file()
