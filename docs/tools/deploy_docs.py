"""Publish the docs site to the gh-pages branch: one copy per version, with mike.

Run by ``.github/workflows/docs.yml``; ``--ref-type`` and ``--ref-name`` are the pushed ref:

- the ``main`` branch deploys the version ``dev``;
- a release tag ``vMAJOR.MINOR.PATCH`` deploys ``MAJOR.MINOR`` and points ``latest`` at it (a
  pre-release tag such as ``v0.2.0rc1`` deploys ``MAJOR.MINOR`` without moving ``latest``). Patch
  releases replace their minor version's copy: readers pin a minor version, as the spec does.

A release also copies the spec's files (``site/spec/MAJOR.MINOR/``, written by
``docs/hooks/spec_files.py``) to the root of the branch, where the schemas' ``$id`` URLs point;
an older spec version's files are never touched by a newer release. Every deploy keeps
``.nojekyll`` (GitHub Pages would hide files whose names start with ``_``) and a ``CNAME`` with
the host of ``site_url``.

``--spec-from REF`` only publishes the spec files of an earlier commit, for a spec version
released before this deploy existed (run it from the workflow's manual trigger).

Nothing is pushed without ``--push``, so the whole run can be tried on a clone.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
BRANCH = "gh-pages"
DEV_BRANCH = "main"
TAG_RE = re.compile(r"^v(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<pre>[-.]?[a-z]+\.?\d*)?$")
SITE_URL_RE = re.compile(r"^site_url:\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    """What one ref deploys."""

    version: str
    title: str
    aliases: tuple[str, ...] = ()
    release: bool = False  # publish the spec files at the root and make `latest` the default


def plan(ref_type: str, ref_name: str) -> Plan:
    """The deploy for a pushed ref; an unexpected ref is refused with the accepted forms."""
    if ref_type == "branch" and ref_name == DEV_BRANCH:
        return Plan("dev", f"dev ({DEV_BRANCH})")
    match = TAG_RE.match(ref_name) if ref_type == "tag" else None
    if match is None:
        raise SystemExit(
            f"deploy_docs: nothing to deploy for {ref_type} {ref_name!r}; the docs deploy from "
            f"the {DEV_BRANCH} branch (as dev) and from tags vMAJOR.MINOR.PATCH."
        )
    version = f"{match.group('major')}.{match.group('minor')}"
    if match.group("pre"):
        return Plan(version, f"{version} (pre-release)", release=True)
    return Plan(version, version, ("latest",), release=True)


def _run(*command: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with this virtualenv's scripts first on PATH (mike runs ``mkdocs``)."""
    print("+", " ".join(command), flush=True)
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    return subprocess.run(command, cwd=cwd, check=check, text=True, env=env)


def _tool(name: str) -> str:
    """A console script of this virtualenv (mike has no ``python -m`` entry point)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise SystemExit(f"deploy_docs: {name} is not installed; pip install './python[docs]'.")
    return found


def _site_url(config_file: Path) -> str:
    match = SITE_URL_RE.search(config_file.read_text(encoding="utf-8"))
    if not match:
        raise SystemExit(f"deploy_docs: {config_file} has no site_url; the spec $ids need one.")
    return match.group(1)


def _root_files(worktree: Path, site: Path | None, site_url: str, paths: list[str]) -> None:
    """Write .nojekyll and CNAME, and copy the files published at their $ids to the root."""
    (worktree / ".nojekyll").touch()
    host = urlsplit(site_url).hostname
    if host and not host.endswith("github.io"):
        (worktree / "CNAME").write_text(host + "\n", encoding="utf-8")
    if site is not None:
        for path in paths:
            target = worktree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(site / path, target)


def _published_paths(config_file: Path) -> list[str]:
    """Site paths of the files published at their ``$id``s (docs/hooks/spec_files.py)."""
    spec_files = _spec_files_hook()
    entries = spec_files.published_files(config_file.parent, _site_url(config_file))
    return [entry.site_path for entry in entries]


def _spec_files_hook() -> Any:
    """The build hook that lays out the spec files, so the deploy follows the same rules."""
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    import spec_files

    return spec_files


def _commit_to_pages(repo: Path, folder: Path, message: str, write: Callable[[Path], None]) -> None:
    """Check gh-pages out beside ``repo``, let ``write`` change it, and commit what changed."""
    worktree = folder / "pages"
    _run("git", "worktree", "add", str(worktree), BRANCH, cwd=repo)
    try:
        write(worktree)
        _run("git", "add", "--all", cwd=worktree)
        staged = _run("git", "diff", "--cached", "--quiet", cwd=worktree, check=False)
        if staged.returncode != 0:
            _run("git", "commit", "--quiet", "-m", message, cwd=worktree)
    finally:
        _run("git", "worktree", "remove", "--force", str(worktree), cwd=repo)


def publish_spec_from(ref: str, config_file: Path, push: bool) -> None:
    """Publish the spec files of an earlier commit where their ``$id``s point.

    For a spec version released before this workflow existed (0.1 was): its tag's commit has
    no deploy of its own, so its files are taken from git at ``ref`` and laid out by the same
    rules as a build (``docs/hooks/spec_files.py``).
    """
    repo = config_file.parent
    _run("git", "fetch", "origin", f"{BRANCH}:{BRANCH}", cwd=repo, check=False)
    if _run("git", "rev-parse", "--verify", "--quiet", BRANCH, cwd=repo, check=False).returncode:
        raise SystemExit(f"deploy_docs: no {BRANCH} branch yet; deploy the docs once first.")
    spec_files = _spec_files_hook()
    from mkdocs.exceptions import PluginError

    with tempfile.TemporaryDirectory(prefix="docs-spec-") as folder:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, "spec"],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        source = Path(folder) / "source"
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(source, filter="data")
        try:
            entries = spec_files.spec_files(source / "spec", _site_url(config_file))
        except PluginError as error:
            raise SystemExit(f"deploy_docs: the spec at {ref}: {error}") from None

        def write(tree: Path) -> None:
            for entry in entries:
                target = tree / entry.site_path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.source, target)

        version = spec_files.minor_version(source / "spec")
        _commit_to_pages(repo, Path(folder), f"Spec {version} files from {ref}", write)
    if push:
        _run("git", "push", "origin", BRANCH, cwd=repo)


def deploy(chosen: Plan, config_file: Path, push: bool) -> None:
    """Deploy ``chosen`` to the local gh-pages branch, then push it if asked."""
    repo = config_file.parent
    _run("git", "fetch", "origin", f"{BRANCH}:{BRANCH}", cwd=repo, check=False)
    mike = [_tool("mike")]
    _run(
        *mike,
        "deploy",
        "--config-file",
        str(config_file),
        "--update-aliases",
        "--alias-type",
        "redirect",
        "--title",
        chosen.title,
        chosen.version,
        *chosen.aliases,
        cwd=repo,
    )
    if "latest" in chosen.aliases:
        _run(*mike, "set-default", "--config-file", str(config_file), "latest", cwd=repo)
    site_url = _site_url(config_file)
    with tempfile.TemporaryDirectory(prefix="docs-deploy-") as folder:
        site = None
        if chosen.release:
            site = Path(folder) / "site"
            _run(
                _tool("mkdocs"),
                "build",
                "--strict",
                "--config-file",
                str(config_file),
                "--site-dir",
                str(site),
                cwd=repo,
            )
        message = f"Root files for {chosen.version}: spec files, .nojekyll, CNAME"
        paths = _published_paths(config_file) if site is not None else []
        _commit_to_pages(
            repo, Path(folder), message, lambda tree: _root_files(tree, site, site_url, paths)
        )
    if push:
        _run("git", "push", "origin", BRANCH, cwd=repo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-type", choices=("branch", "tag"))
    parser.add_argument("--ref-name")
    parser.add_argument(
        "--spec-from", metavar="REF", help="only publish the spec files of REF (a tag or commit)"
    )
    parser.add_argument("--config-file", type=Path, default=ROOT / "mkdocs.yml")
    parser.add_argument("--push", action="store_true", help="push gh-pages to origin")
    parser.add_argument("--plan", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if args.spec_from:
        publish_spec_from(args.spec_from, args.config_file.resolve(), args.push)
        return 0
    if not (args.ref_type and args.ref_name):
        parser.error("give --ref-type and --ref-name, or --spec-from")
    chosen = plan(args.ref_type, args.ref_name)
    print(f"deploy_docs: {chosen}")
    if not args.plan:
        deploy(chosen, args.config_file.resolve(), args.push)
    return 0


if __name__ == "__main__":
    sys.exit(main())
