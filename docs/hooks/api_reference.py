"""MkDocs hook: the Python API page lists every name ``conveyor`` exports, grouped by topic.

``<!-- api-reference -->`` in a page becomes one mkdocstrings directive per name of
``conveyor.__all__``, under a heading per defining module (the app, publishing, errors, ...). The
list is read from ``python/src/conveyor/__init__.py`` with :mod:`ast`, so a name added to
``__all__`` appears in the reference without editing the page, and a name cannot be left out by
hand: ``docs/tests/test_built_site.py`` checks that each has its anchor on the built page.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- api-reference -->"
PACKAGE = "conveyor"

# Sections in page order: (defining modules, heading, one line on when a reader needs them).
SECTIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("app",), "The app", "One per process: it publishes, runs workers and answers queries."),
    (("publishing",), "Publishing", "The pieces of a job with several requests."),
    (
        ("handlers", "outcomes", "cancellation"),
        "Handlers and outcomes",
        "What a handler receives, the exceptions it raises to steer its job, and how it sees "
        "a cancel request.",
    ),
    (
        ("model",),
        "Jobs, requests and batches",
        "The read-only records that `get`, `jobs` and the batch calls return.",
    ),
    (("worker",), "Workers", "Options and statistics of a worker loop."),
    (("retry", "priority"), "Retry policies and priorities", ""),
    (("clock",), "Clocks", "Inject a clock to drive time in tests."),
    (("notify",), "Notifications", "Where the notify threshold of a retry policy reports."),
    (
        ("errors",),
        "Errors",
        "Every error Conveyor raises derives from `ConveyorError`; the refusals of the spec "
        "derive from `Refused` and carry the spec's error code in `code`.",
    ),
    (("specfiles",), "Spec versions", ""),
)
OTHER = "Other names"

DIRECTIVE = """::: {package}.{name}
    options:
      heading_level: 3
      show_root_full_path: false
"""


def exported_names(init_file: Path) -> list[tuple[str, str]]:
    """``(name, defining module)`` for each name of ``__all__``, in ``__all__`` order."""
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        raise PluginError(f"api_reference hook: cannot read {init_file}: {exc}") from None
    origin: dict[str, str] = {}
    exports: list[str] | None = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module.split(".")[0]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            exports = list(ast.literal_eval(node.value))
    if exports is None:
        raise PluginError(f"api_reference hook: {init_file} has no literal __all__.")
    return [(name, origin.get(name, "")) for name in exports]


def render(names: list[tuple[str, str]]) -> str:
    """The Markdown of the reference: a section per topic, a directive per name."""
    placed: set[str] = set()
    parts: list[str] = []

    def section(heading: str, intro: str, members: list[str]) -> None:
        if not members:
            return
        parts.append(f"## {heading}")
        if intro:
            parts.append(intro)
        parts.extend(DIRECTIVE.format(package=PACKAGE, name=name) for name in members)
        placed.update(members)

    for modules, heading, intro in SECTIONS:
        section(heading, intro, [name for name, module in names if module in modules])
    section(OTHER, "", [name for name, _ in names if name not in placed])
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the generated reference."""
    if MARKER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).resolve().parent
    init_file = root / "python" / "src" / PACKAGE / "__init__.py"
    return markdown.replace(MARKER, render(exported_names(init_file)))
