"""The state diagrams are drawn from the machine files, completely, as inline SVG."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import machine_diagrams as md
import pytest
from mkdocs.exceptions import PluginError

MACHINES = Path(__file__).resolve().parents[2] / "spec" / "machines"
MACHINE_FILES = sorted(MACHINES.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def _labels(dot: str) -> list[str]:
    """Every label line of the DOT source."""
    return [
        line for label in re.findall(r'label="([^"]*)"', dot) for line in label.split("\\l") if line
    ]


@pytest.mark.parametrize("path", MACHINE_FILES, ids=[p.stem for p in MACHINE_FILES])
def test_every_transition_and_state_is_drawn(path: Path) -> None:
    machine = _load(path)
    dot = md.machine_to_dot(machine)
    labels = _labels(dot)
    for transition in machine["transitions"]:
        assert md._transition_text(transition) in labels, transition["id"]
    for state in machine["states"]:
        assert f'"{state}" [id="state-{state}"' in dot
    assert machine["initial"]["event"] in labels


def test_transitions_leaving_every_claimable_state_are_one_arrow_from_the_box() -> None:
    dot = md.machine_to_dot(_load(MACHINES / "job.json"))
    assert "subgraph cluster_claimable" in dot
    claims = [line for line in dot.splitlines() if "claim [claimable_now]" in line]
    assert len(claims) == 1
    assert "ltail=cluster_claimable" in claims[0]
    # requeue leaves four of the five claimable states: one arrow each, not from the box
    requeues = [line for line in dot.splitlines() if 'label="requeue\\l"' in line]
    assert len(requeues) == 4
    assert not any("ltail" in line for line in requeues)


def test_a_machine_without_a_shared_tag_has_no_box() -> None:
    dot = md.machine_to_dot(_load(MACHINES / "batch.json"))
    assert "subgraph" not in dot


def test_quotes_in_names_cannot_break_the_dot_source() -> None:
    assert md._label(['say "hi" \\ bye']) == '"say \\"hi\\" \\\\ bye\\l"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_placeholder_becomes_an_inline_svg_figure(tmp_path: Path) -> None:
    config = {"config_file_path": str(MACHINES.parents[1] / "mkdocs.yml")}
    page = type("Page", (), {"file": type("File", (), {"src_uri": "x.md"})()})()
    html = md.on_page_content(f"<p>a</p>\n{md.placeholder('job')}\n<p>b</p>", page, config, None)
    assert 'data-machine="job"' not in html
    figure = re.search(r'<figure class="machine-diagram" id="diagram-job".*?</figure>', html, re.S)
    assert figure
    svg = figure.group(0)
    assert "<?xml" not in svg
    assert "<!DOCTYPE" not in svg
    assert ">ready</text>" in svg
    assert re.search(r'viewBox="[\d. -]+"', svg)
    assert "max-width:" in svg


def test_a_placeholder_for_an_unknown_machine_fails_the_build() -> None:
    config = {"config_file_path": str(MACHINES.parents[1] / "mkdocs.yml")}
    page = type("Page", (), {"file": type("File", (), {"src_uri": "x.md"})()})()
    with pytest.raises(PluginError, match="does not exist"):
        md.on_page_content(md.placeholder("nope"), page, config, None)


def test_missing_graphviz_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(md.shutil, "which", lambda name: None)
    with pytest.raises(PluginError, match="apt-get install graphviz"):
        md.render_svg("digraph {}")
