"""Keep requirement IDs honest across released versions of the spec.

Every released version has a digest file ``releases/<version>.json``: a SHA-256 of the text of
each requirement of ``spec.md`` as released. The check compares the current ``spec.md`` with the
latest release and with ``CHANGELOG.md``:

* a released requirement whose text changed is named in the changelog's ``[Unreleased]`` section
  (a wording change) or was given a new ID (a change of meaning), the old ID then being listed in
  the table of replaced requirements;
* a released requirement that is no longer in ``spec.md`` is listed as replaced or removed;
* a requirement that is in no release is named under ``[Unreleased]``;
* each release's changelog section names every requirement it added, changed or removed
  against the release before it (the first release states its number of requirements).

``python spec/tools/spec_check.py --release`` writes the digest of the version in ``VERSION``
once its changelog section accounts for every difference.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = re.compile(r"^\*\*\[([A-Z]+-[0-9]{3})\]\*\*\s")
ANCHOR = re.compile(r"^\{:\s*#[A-Za-z0-9_-]+\s*\}$")
SECTION = re.compile(r"^## \[([^\]]+)\]", re.MULTILINE)
REPLACED_ROW = re.compile(
    r"^\|\s*(?:<span id=\"[A-Z]+-[0-9]{3}\"></span>)?\s*([A-Z]+-[0-9]{3})\s*\|"
)
REPLACED_HEADING = "## Replaced and removed requirements"
HOW_TO = (
    "if its meaning changed, give the new text a new ID and list the old ID under "
    f"'{REPLACED_HEADING}' in spec.md; if only its wording changed, name it in CHANGELOG.md "
    "under [Unreleased]"
)


def requirement_texts(spec_md: str) -> dict[str, str]:
    """Each requirement's paragraph (marker to the line before its anchor), whitespace folded."""
    texts: dict[str, str] = {}
    current: list[str] = []
    rid = ""
    fenced = False
    for line in spec_md.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if fenced:
            continue
        marker = MARKER.match(line)
        if marker and not current:
            rid, current = marker.group(1), [line]
            continue
        if current:
            if not line.strip() or ANCHOR.match(line.strip()):
                texts[rid] = " ".join(" ".join(current).split())
                current = []
            else:
                current.append(line)
    if current:
        texts[rid] = " ".join(" ".join(current).split())
    return texts


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digests(spec_md: str) -> dict[str, str]:
    return {rid: digest(text) for rid, text in sorted(requirement_texts(spec_md).items())}


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split("."))


def changelog_sections(changelog: str) -> dict[str, str]:
    """The text of each ``## [name]`` section, keyed by name (``Unreleased``, ``0.2.0``)."""
    marks = list(SECTION.finditer(changelog))
    return {
        mark.group(1): changelog[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else None]
        for i, mark in enumerate(marks)
    }


def named(section: str, rid: str) -> bool:
    return re.search(rf"\b{re.escape(rid)}\b", section) is not None


def replaced_ids(spec_md: str) -> set[str]:
    """IDs listed in the table under the replaced-requirements heading of spec.md."""
    start = spec_md.find(REPLACED_HEADING)
    if start < 0:
        return set()
    found: set[str] = set()
    for line in spec_md[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        row = REPLACED_ROW.match(line)
        if row:
            found.add(row.group(1))
    return found


@dataclass
class Release:
    version: str
    requirements: dict[str, str]


def load_releases(spec: Path, problems: list[str]) -> list[Release]:
    releases: list[Release] = []
    for path in sorted((spec / "releases").glob("*.json")):
        try:
            document: Any = json.loads(path.read_text(encoding="utf-8"))
            version = str(document["version"])
            requirements = dict(document["requirements"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            problems.append(f"releases/{path.name}: not a release digest ({error})")
            continue
        if path.name != f"{version}.json":
            problems.append(f"releases/{path.name}: holds version {version!r}")
        releases.append(Release(version, requirements))
    return sorted(releases, key=lambda release: version_key(release.version))


def differences(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(r for r in set(after) & set(before) if after[r] != before[r]),
        "removed": sorted(set(before) - set(after)),
    }


def check_changelog_accounts(
    releases: list[Release], sections: dict[str, str], problems: list[str]
) -> None:
    """Each release's changelog section names what it added, changed and removed."""
    previous: Release | None = None
    for release in releases:
        section = sections.get(release.version)
        if section is None:
            problems.append(
                f"CHANGELOG.md: no section '## [{release.version}]' for released version "
                f"{release.version} (releases/{release.version}.json)"
            )
        elif previous is None:
            count = len(release.requirements)
            if not re.search(rf"\b{count} requirements\b", section):
                problems.append(
                    f"CHANGELOG.md: section [{release.version}] does not state its "
                    f"{count} requirements"
                )
        else:
            for kind, ids in differences(previous.requirements, release.requirements).items():
                for rid in ids:
                    if not named(section, rid):
                        problems.append(
                            f"CHANGELOG.md: {rid} was {kind} in {release.version} "
                            f"(releases/{release.version}.json) but section [{release.version}] "
                            "does not name it"
                        )
        previous = release


def check_releases(spec: Path, version: str, spec_md: str, problems: list[str]) -> int:
    """Compare spec.md and CHANGELOG.md with the release digests; return the number of releases."""
    releases = load_releases(spec, problems)
    changelog_path = spec / "CHANGELOG.md"
    changelog = changelog_path.read_text(encoding="utf-8") if changelog_path.is_file() else ""
    sections = changelog_sections(changelog)
    check_changelog_accounts(releases, sections, problems)
    if not releases:
        problems.append(
            "releases/: no release digest; run `python spec/tools/spec_check.py --release`"
        )
        return 0
    latest = releases[-1]
    if version_key(version) < version_key(latest.version):
        problems.append(f"VERSION {version} is older than the latest release {latest.version}")
    current = digests(spec_md)
    unreleased = sections.get("Unreleased", "")
    replaced = replaced_ids(spec_md)
    ever_released = {rid for release in releases for rid in release.requirements}
    for rid in sorted(replaced & set(current)):
        problems.append(f"spec.md: {rid} is listed as replaced but is still a requirement")
    for rid in sorted(replaced - ever_released):
        problems.append(f"spec.md: {rid} is listed as replaced but was never released")
    for rid in sorted(set(current) & (ever_released - set(latest.requirements))):
        problems.append(f"spec.md: {rid} was removed in an earlier release; IDs are never reused")
    diff = differences(latest.requirements, current)
    where = f"since {latest.version} (releases/{latest.version}.json)"
    for rid in diff["changed"]:
        if not named(unreleased, rid):
            problems.append(f"spec.md: the text of {rid} changed {where}: {HOW_TO}")
    for rid in diff["removed"]:
        if rid not in replaced:
            problems.append(
                f"spec.md: {rid} was released in {latest.version} and is gone: list it under "
                f"'{REPLACED_HEADING}' and name it in CHANGELOG.md under [Unreleased]"
            )
        elif not named(unreleased, rid):
            problems.append(f"CHANGELOG.md: {rid} was replaced {where}; name it under [Unreleased]")
    for rid in diff["added"]:
        if rid not in ever_released and not named(unreleased, rid):
            problems.append(
                f"CHANGELOG.md: {rid} is new {where}; name it under [Unreleased] "
                "(Added, or Changed when it replaces another ID)"
            )
    return len(releases)


def write_release(spec: Path, version: str, spec_md: str) -> list[str]:
    """Record the digest of ``version``; refuse while the changelog does not account for it."""
    problems: list[str] = []
    releases = [r for r in load_releases(spec, problems) if r.version != version]
    release = Release(version, digests(spec_md))
    changelog = (spec / "CHANGELOG.md").read_text(encoding="utf-8")
    check_changelog_accounts([*releases, release], changelog_sections(changelog), problems)
    if problems:
        return problems
    path = spec / "releases" / f"{version}.json"
    path.parent.mkdir(exist_ok=True)
    document = {
        "version": version,
        "description": "SHA-256 of each requirement's text in spec.md (whitespace folded), "
        "as released; written by `spec_check.py --release`.",
        "requirements": release.requirements,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return []
