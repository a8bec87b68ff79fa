"""`just workflows-check` catches what it is there for: an action pinned by tag instead of commit,
and a workflow that GitHub's schema refuses (offline: zizmor --offline, check-jsonschema's
vendored schema). The repository's own workflows pass both."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GOOD = """\
name: Example
on:
  push:
permissions: {}
jobs:
  test:
    runs-on: ubuntu-latest
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - run: echo ok
"""


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists() and shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: run `just setup` (the dev extra installs it)")
    return path if path.exists() else Path(str(shutil.which(name)))


def _zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_tool("zizmor")), "--offline", *(str(p) for p in paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def _schema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_tool("check-jsonschema")), "--builtin-schema", "vendor.github-workflows"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_repository_workflows_pass_both_checks() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))

    assert {w.name for w in workflows} >= {"ci.yml", "release.yml"}
    assert _zizmor(REPO / ".github" / "workflows").returncode == 0
    assert _schema(*workflows).returncode == 0


def test_an_action_pinned_by_tag_fails_zizmor(tmp_path: Path) -> None:
    workflow = tmp_path / "example.yml"
    workflow.write_text(GOOD)
    assert _zizmor(workflow).returncode == 0

    workflow.write_text(GOOD.replace("@11bd71901bbe5b1630ceea73d27597364c9af683", "@v4"))
    found = _zizmor(workflow)

    assert found.returncode != 0
    assert "unpinned-uses" in found.stdout + found.stderr


def test_a_misspelt_key_fails_the_schema(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.yml"
    workflow.write_text(GOOD.replace("runs-on:", "runs_on:"))

    assert _schema(workflow).returncode != 0
