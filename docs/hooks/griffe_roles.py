"""Griffe extension: turn the library's Sphinx roles into Markdown the API reference renders.

The docstrings name other objects the Sphinx way (``:class:`~conveyor.bus.Result```,
``:meth:`publish```). mkdocstrings renders docstrings as Markdown, where such a role shows as raw
text. Rewriting hundreds of docstrings would churn the library for the docs' sake, so this
extension converts the roles while the docs are built:

- a role naming an object the reference documents (an exported name of ``conveyor``, or a
  documented member of one) becomes a cross-reference link, ``[`Result`][conveyor.Result]``;
- any other role becomes inline code, ``Result``, with the ``~`` shortening Sphinx applies;
- a reStructuredText literal-block marker (a line ending in ``::``) becomes a single colon.

Loaded by mkdocstrings (``extensions`` option in mkdocs.yml) from this file's path.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE_RE = re.compile(
    r":(?:py:)?(?:class|meth|func|attr|exc|mod|data|obj|const):`(?P<tilde>~?)(?P<target>[\w.]+)(?P<call>\(\))?`"
)
LITERAL_BLOCK_RE = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)


def _documented(package: griffe.Module, identifier: str) -> bool:
    """True when the API page renders ``identifier`` (``conveyor.Name[.member]``)."""
    parts = identifier.split(".")
    if parts[0] != package.name or len(parts) < 2 or parts[1] not in (package.exports or ()):
        return False
    try:
        obj: Any = package[parts[1]]
        for name in parts[2:]:
            obj = obj.members[name]
            if obj.docstring is None:
                return False
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        # A name that is not a member, or an alias that does not resolve: not linked.
        return False
    return True


def _candidates(package: griffe.Module, scope: griffe.Object, target: str) -> list[str]:
    """The identifiers ``target`` may mean, from the most to the least specific."""
    names = [target]
    if not target.startswith(package.name + "."):
        names.append(f"{package.name}.{target}")
    # A method named from inside its class (``:meth:`publish``` in Conveyor's docstring).
    owner = scope if scope.is_class else scope.parent
    if owner is not None and owner.is_class:
        names.append(f"{package.name}.{owner.name}.{target}")
    # A canonical path such as conveyor.app.Conveyor is documented under its export.
    last = target.rsplit(".", 1)[-1]
    names.append(f"{package.name}.{last}")
    return names


def convert(text: str, package: griffe.Module, scope: griffe.Object) -> str:
    """The docstring ``text`` with its roles and literal-block markers converted."""

    def replace(match: re.Match[str]) -> str:
        target = match.group("target")
        shown = target.rsplit(".", 1)[-1] if match.group("tilde") else target
        shown += match.group("call") or ""
        for identifier in _candidates(package, scope, target):
            if _documented(package, identifier):
                return f"[`{shown}`][{identifier}]"
        return f"`{shown}`"

    return LITERAL_BLOCK_RE.sub(":", ROLE_RE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Convert the Sphinx roles of every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[str] = set()

        def walk(obj: griffe.Object) -> None:
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, pkg, obj)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)  # type: ignore[arg-type]

        walk(pkg)
