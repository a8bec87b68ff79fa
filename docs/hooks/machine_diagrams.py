"""MkDocs hook: draw the spec's state machines as inline SVG at build time, with Graphviz.

Pages ask for a diagram with a placeholder (the spec_pages hook writes one per machine)::

    <div class="machine-diagram" data-machine="job"></div>

and this hook replaces it, after the Markdown is rendered, with a ``<figure>`` holding the SVG that
Graphviz's ``dot`` draws from ``spec/machines/<name>.json``.

Why Graphviz and not Mermaid: Mermaid draws in the reader's browser from a script that the theme
loads from a CDN, so the diagrams were raw text offline, and it scaled the job machine down until
its labels were about 4 px tall. Rendering Mermaid at build time instead needs a headless browser
and an npm tool that downloads one; ``dot`` is a single Debian package with no network access at
build or read time, it lays out dense graphs well, and its SVG is plain text that the page
inlines (selectable, searchable by the browser, coloured by the theme's CSS in dark mode).

Drawing rules, so the job machine (30 state pairs) stays readable at page width:

- transitions between the same two states share one arrow, one ``event [guard]`` line each;
- when a transition leaves *every* state of a tag (``claimable``, ``startable``), the states of
  that tag are drawn inside a box named after the tag and the transition as one arrow from the
  box: "from any claimable state";
- the black dot is the event that creates the record; terminal states have a double border.

A missing ``dot`` or a malformed machine file fails the build with a message that names the fix.
"""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

PLACEHOLDER_RE = re.compile(r'<div class="machine-diagram" data-machine="(?P<name>[a-z_]+)"></div>')

# Tags whose states may be drawn as one box, most useful first.
GROUP_TAGS = ("claimable", "startable")
# A box is only worth drawing when transitions leaving all its states would need this many arrows.
MIN_GROUP_SIZE = 3

FONT = "Helvetica,Arial,sans-serif"
FONT_SIZE = 14  # points in the SVG, shown at most 1 : 1 (see figure())
LABEL_SIZE = 12
# The smallest scale a drawing is shown at: 12 pt labels stay at least 9.6 px tall.
MIN_SCALE = 0.6
DOT_TIMEOUT_S = 30


def placeholder(machine: str) -> str:
    """The HTML a page writes where the diagram of ``machine`` goes."""
    return f'<div class="machine-diagram" data-machine="{machine}"></div>'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _label(lines: Iterable[str]) -> str:
    """A left-aligned multi-line Graphviz label (each line ends with dot's ``\\l``)."""
    return '"' + "".join(_escape(line) + "\\l" for line in lines) + '"'


def _transition_text(transition: dict[str, Any]) -> str:
    guard = transition.get("guard")
    return f"{transition['event']} [{guard}]" if guard else transition["event"]


def _group(machine: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The tag whose states are drawn as one box, and those states; None if no box helps."""
    states: dict[str, Any] = machine["states"]
    for tag in GROUP_TAGS:
        members = [name for name, state in states.items() if tag in state.get("tags", [])]
        if len(members) < 2:
            continue
        leaving_all = [t for t in machine["transitions"] if set(members) <= set(t["from"])]
        if len(leaving_all) * len(members) >= MIN_GROUP_SIZE * 2:
            return tag, members
    return None


def machine_to_dot(machine: dict[str, Any]) -> str:
    """The Graphviz source of one machine file's diagram."""
    states: dict[str, Any] = machine["states"]
    group = _group(machine)
    members = set(group[1]) if group else set()
    cluster = f"cluster_{group[0]}" if group else ""

    lines = [
        "digraph machine {",
        "  graph [rankdir=TB, compound=true, nodesep=0.25, ranksep=0.4, "
        f'fontname="{FONT}", fontsize={LABEL_SIZE}, bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fillcolor=white, '
        f'fontname="{FONT}", fontsize={FONT_SIZE}, margin="0.15,0.06", height=0.35];',
        f'  edge [fontname="{FONT}", fontsize={LABEL_SIZE}, arrowsize=0.7];',
        '  "__start" [shape=circle, style=filled, fillcolor=black, label="", width=0.18, '
        'class="start"];',
    ]

    def node(name: str) -> str:
        terminal = "terminal" in states[name].get("tags", [])
        extra = ", peripheries=2" if terminal else ""
        tooltip = _quote(states[name].get("description", name))
        return f"  {_quote(name)} [id={_quote('state-' + name)}, tooltip={tooltip}{extra}];"

    if group:
        lines.append(f"  subgraph {cluster} {{")
        label = _quote(f"any {group[0]} state")
        lines.append(f'    label={label}; labeljust=l; style="rounded,dashed";')
        lines += ["  " + node(name) for name in states if name in members]
        lines.append("  }")
    lines += [node(name) for name in states if name not in members]

    initial = machine["initial"]
    lines.append(f"  __start -> {_quote(initial['to'])} [label={_label([initial['event']])}];")

    # The box's arrows start at its first state; dot clips them at the box's border.
    box_source = group[1][0] if group else ""
    # (source, target) -> label lines; the source is the cluster's first state plus ltail when the
    # transition leaves every state of the box.
    edges: dict[tuple[str, str, bool], list[str]] = {}
    for transition in machine["transitions"]:
        text = _transition_text(transition)
        sources = list(transition["from"])
        if group and members <= set(sources):
            edges.setdefault((box_source, transition["to"], True), []).append(text)
            sources = [s for s in sources if s not in members]
        for source in sources:
            edges.setdefault((source, transition["to"], False), []).append(text)
    for (source, target, from_box), texts in edges.items():
        attrs = [f"label={_label(dict.fromkeys(texts))}"]
        if from_box:
            attrs.append(f"ltail={cluster}")
        if target in members and from_box:
            attrs.append(f"lhead={cluster}")
        lines.append(f"  {_quote(source)} -> {_quote(target)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_executable() -> str:
    path = shutil.which("dot")
    if path is None:
        raise PluginError(
            "machine_diagrams hook: Graphviz's `dot` is not on PATH; the state diagrams are drawn "
            "with it. Install it with `apt-get install graphviz` (`just setup` does this), or "
            "`brew install graphviz` on macOS."
        )
    return path


def render_svg(dot_source: str) -> str:
    """Run ``dot -Tsvg`` and return the ``<svg>`` element alone (no XML prolog or doctype)."""
    try:
        result = subprocess.run(
            [_dot_executable(), "-Tsvg"],
            input=dot_source,
            capture_output=True,
            text=True,
            check=False,
            timeout=DOT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise PluginError(f"machine_diagrams hook: dot ran over {DOT_TIMEOUT_S} s.") from None
    if result.returncode != 0:
        raise PluginError(f"machine_diagrams hook: dot failed: {result.stderr.strip()}")
    svg = result.stdout
    start = svg.find("<svg")
    if start < 0:
        raise PluginError("machine_diagrams hook: dot printed no <svg> element.")
    svg = re.sub(r"<!--.*?-->\s*", "", svg[start:], flags=re.DOTALL)
    return svg.strip()


def _size_pt(svg: str) -> tuple[float, float]:
    match = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    if not match:
        raise PluginError("machine_diagrams hook: dot's SVG has no width and height in pt.")
    return float(match.group(1)), float(match.group(2))


def figure(name: str, machine: dict[str, Any]) -> str:
    """The ``<figure>`` that replaces a placeholder: the SVG, sized, and a caption."""
    svg = render_svg(machine_to_dot(machine))
    width, height = _size_pt(svg)
    # Drop dot's fixed size so CSS can fit the drawing to the column; the viewBox keeps its shape.
    # It never grows past its natural size, and never shrinks below MIN_SCALE of it (a narrow
    # screen scrolls the figure sideways instead: labels stay readable).
    svg = re.sub(
        r'<svg width="[\d.]+pt" height="[\d.]+pt"',
        f'<svg role="img" aria-labelledby="diagram-{name}-caption" '
        f'style="width: 100%; max-width: {width:.0f}pt; min-width: {width * MIN_SCALE:.0f}pt" '
        f'data-natural-width="{width:.0f}" data-natural-height="{height:.0f}"',
        svg,
        count=1,
    )
    caption = (
        f"The {name} machine, drawn from <code>spec/machines/{name}.json</code>. "
        "An arrow from a dashed box leaves every state in it."
        if _group(machine)
        else f"The {name} machine, drawn from <code>spec/machines/{name}.json</code>."
    )
    return (
        f'<figure class="machine-diagram" id="diagram-{name}" data-search-exclude>'
        f'<div class="machine-diagram__scroll">{svg}</div>'
        f'<figcaption id="diagram-{name}-caption">{caption}</figcaption></figure>'
    )


@functools.cache
def _figure_for(path: str, mtime_ns: int) -> str:
    try:
        machine = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PluginError(f"machine_diagrams hook: cannot read {path}: {exc}") from None
    try:
        return figure(Path(path).stem, machine)
    except (KeyError, TypeError) as exc:
        raise PluginError(f"machine_diagrams hook: cannot draw {path}: {exc!r}") from exc


def _machines_dir(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent / "spec" / "machines"


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    """Replace each diagram placeholder with the machine's SVG figure."""

    def replace(match: re.Match[str]) -> str:
        path = _machines_dir(config) / f"{match.group('name')}.json"
        if not path.is_file():
            raise PluginError(
                f"machine_diagrams hook: {page.file.src_uri} asks for the diagram of "
                f"{html.escape(match.group('name'))!r}, but {path} does not exist."
            )
        return _figure_for(str(path), path.stat().st_mtime_ns)

    return PLACEHOLDER_RE.sub(replace, html_text)
