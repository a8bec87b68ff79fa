"""Load every page of the built docs site in headless Chromium and fail on what a reader would hit.

Run by ``just docs-check`` after ``mkdocs build``. For each page of ``site/``, served from a local
HTTP server, it checks that:

- the browser logs no console error and the page throws no uncaught exception;
- no request leaves this machine (a script, stylesheet or font from a CDN would not load offline)
  and no local request fails (404, refused);
- every internal link points at a page or file of the site, and its ``#anchor`` exists there;
- every state diagram rendered: an inline ``<svg>`` whose labels are at least ``MIN_TEXT_PX`` tall
  at the desktop width, and no diagram source is left as raw text;

and it saves a screenshot of each page's first screen (and of each diagram) under
``reports/docs-check/`` for a person to look at.

Chromium is Debian's ``chromium`` package (``/usr/bin/chromium``, or ``CONVEYOR_CHROMIUM``), driven
by playwright-python over the DevTools protocol: playwright's own browser download is never used,
so the check runs offline.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1280, "height": 900}
# Material's body text is 16 px at this width; diagram labels below this are hard to read.
MIN_TEXT_PX = 9.0
# Debian's package first; Chrome as found on hosted CI runners (Ubuntu ships Chromium as a snap).
CHROMIUM_CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
)
# The version the site is served as, the way mike lays out the published site.
VERSION_DIR = "dev"
RAW_DIAGRAM_RE = re.compile(r"stateDiagram|```mermaid|class=\"mermaid\"")

# Collected in the page: ids, links, stylesheets and scripts, and the size of diagram labels.
PAGE_FACTS_JS = """
() => {
  const diagrams = [...document.querySelectorAll('figure.machine-diagram')].map((figure) => {
    const svg = figure.querySelector('svg');
    const heights = svg ? [...svg.querySelectorAll('text')]
        .map((t) => t.getBoundingClientRect().height).filter((h) => h > 0) : [];
    return {id: figure.id, svg: !!svg, texts: heights.length,
            minHeight: heights.length ? Math.min(...heights) : 0};
  });
  return {
    ids: [...document.querySelectorAll('[id]')].map((e) => e.id),
    names: [...document.querySelectorAll('a[name]')].map((e) => e.getAttribute('name')),
    links: [...document.querySelectorAll('a[href]')].map((a) => a.href),
    assets: [...document.querySelectorAll(
        'script[src], link[rel~="stylesheet"], link[rel~="preload"], ' +
        'link[rel~="modulepreload"], link[rel~="icon"], link[rel~="manifest"]')]
        .map((e) => e.src || e.href),
    diagrams: diagrams,
    text: document.body.innerText,
  };
}
"""


@dataclass
class PageReport:
    """What one page showed; ``problems`` empty means the page passed."""

    path: str
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def chromium_executable() -> str:
    """The system Chromium; the error names the package to install."""
    configured = os.environ.get("CONVEYOR_CHROMIUM")
    for candidate in (configured, *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit(
        "docs-check: no Chromium found (looked at /usr/bin/chromium). Install Debian's package: "
        "`apt-get install chromium` (`just setup` does it), or set CONVEYOR_CHROMIUM to a "
        "Chromium or Chrome executable."
    )


def site_pages(site: Path) -> list[str]:
    """URL paths of every page of the built site, e.g. ``guide/quickstart/``."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        relative = path.relative_to(site).as_posix()
        # 404.html is left out: its links are absolute to site_url's root, and under mike's
        # layout (/VERSION/) no server ever shows it.
        if relative.endswith("index.html"):
            pages.append(relative[: -len("index.html")])
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the check's output to its findings."""


@contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` as mike publishes it, under ``/dev/`` beside a ``versions.json``.

    The theme's version selector fetches ``../versions.json``; laid out like the published
    site, that request succeeds and the selector is exercised too. Yields the site's base URL.
    """
    with tempfile.TemporaryDirectory(prefix="docs-check-") as folder:
        root = Path(folder)
        (root / VERSION_DIR).symlink_to(site.resolve(), target_is_directory=True)
        versions = [{"version": VERSION_DIR, "title": VERSION_DIR, "aliases": []}]
        (root / "versions.json").write_text(json.dumps(versions), encoding="utf-8")
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/{VERSION_DIR}/"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _is_local(url: str, base: str) -> bool:
    """A URL of the local server (any path), or one that needs no request."""
    parts, local = urlsplit(url), urlsplit(base)
    return parts.scheme in {"data", "blob", "about"} or parts.netloc == local.netloc


def check_page(page: object, base: str, path: str, shots: Path) -> PageReport:
    """Load one page in ``page`` (a playwright Page) and record its problems."""
    from playwright.sync_api import Page, Request, Response, Route

    assert isinstance(page, Page)
    report = PageReport(path)

    def on_console(message: object) -> None:
        if getattr(message, "type", "") == "error":
            report.problems.append(f"console error: {getattr(message, 'text', message)}")

    def on_response(response: Response) -> None:
        if response.status >= 400 and _is_local(response.url, base):
            report.problems.append(f"HTTP {response.status} for {response.url}")

    def on_failed(request: Request) -> None:
        # Chromium fetches the favicon on its own and aborts that fetch when the page is
        # screenshotted or left first: not a broken page (a missing favicon is a 404 above).
        aborted_icon = "favicon" in request.url and "ERR_ABORTED" in str(request.failure)
        if _is_local(request.url, base) and not aborted_icon:
            report.problems.append(f"request failed: {request.url} ({request.failure})")

    def route(route: Route) -> None:
        if _is_local(route.request.url, base):
            route.continue_()
        else:
            report.problems.append(f"loads from another host: {route.request.url}")
            route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda error: report.problems.append(f"uncaught exception: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.route("**/*", route)
    try:
        page.goto(base + path, wait_until="load")
        facts = page.evaluate(PAGE_FACTS_JS)
        report.ids = set(facts["ids"]) | set(facts["names"])
        report.links = list(facts["links"])
        for asset in facts["assets"]:
            if not _is_local(asset, base):
                report.problems.append(f"references an external script or stylesheet: {asset}")
        if RAW_DIAGRAM_RE.search(facts["text"]):
            report.problems.append("shows diagram source as text (a diagram did not render)")
        name = path.strip("/").replace("/", "__") or "index"
        for diagram in facts["diagrams"]:
            if not diagram["svg"] or diagram["texts"] == 0:
                report.problems.append(f"diagram {diagram['id']} has no SVG with text")
            elif diagram["minHeight"] < MIN_TEXT_PX:
                report.problems.append(
                    f"diagram {diagram['id']}: labels are {diagram['minHeight']:.1f} px tall at "
                    f"{VIEWPORT['width']} px wide, under the {MIN_TEXT_PX} px floor"
                )
            page.locator(f"#{diagram['id']}").screenshot(
                path=str(shots / f"{name}__{diagram['id']}.png")
            )
        page.screenshot(path=str(shots / f"{name}.png"))
    finally:
        page.remove_listener("console", on_console)
        page.unroute("**/*", route)
        page.remove_listener("response", on_response)
        page.remove_listener("requestfailed", on_failed)
    return report


def check_links(reports: dict[str, PageReport], site: Path, base: str) -> list[str]:
    """Internal links whose page or file is missing, or whose anchor is not on the target page."""
    problems = []
    for report in reports.values():
        for link in report.links:
            if not link.startswith(base):
                continue
            parts = urlsplit(link)
            target = unquote(parts.path[len(urlsplit(base).path) :])
            target_report = reports.get(target) or reports.get(target + "/")
            if target_report is None and not (site / target).is_file():
                problems.append(f"{report.path or '/'}: broken link {link}")
                continue
            if parts.fragment and target_report is not None:
                anchor = unquote(parts.fragment)
                if anchor not in target_report.ids:
                    problems.append(f"{report.path or '/'}: link {link}: no anchor #{anchor}")
    return problems


def run(site: Path, shots: Path, only: str | None = None) -> list[str]:
    """Check every page (or those whose path contains ``only``); return the problems found."""
    from playwright.sync_api import sync_playwright

    if not (site / "index.html").is_file():
        raise SystemExit(f"docs-check: {site} has no index.html; run `just docs` first.")
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    paths = [p for p in site_pages(site) if only is None or only in p]
    reports: dict[str, PageReport] = {}
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            page = context.new_page()
            for path in paths:
                reports[path] = check_page(page, base, path, shots)
        finally:
            browser.close()
        problems = [f"{r.path or '/'}: {p}" for r in reports.values() for p in r.problems]
        if only is None:
            problems += check_links(reports, site, base)
    print(f"docs-check: {len(reports)} pages loaded, screenshots in {shots}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "reports" / "docs-check")
    parser.add_argument("--only", help="check only pages whose path contains this text")
    args = parser.parse_args(argv)
    problems = run(args.site, args.screenshots, args.only)
    for problem in problems:
        print(f"docs-check: {problem}", file=sys.stderr)
    if problems:
        print(f"docs-check: {len(problems)} problems", file=sys.stderr)
        return 1
    print("docs-check: no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
