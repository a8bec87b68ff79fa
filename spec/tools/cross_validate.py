#!/usr/bin/env python3
"""Validate the examples and a probe corpus with ajv and python-jsonschema; fail on any difference.

Usage (from the repository root)::

    python spec/tools/cross_validate.py [SPEC_DIR]

JavaScript and Python validators read a schema differently where the schema leaves room: ``$``
in patterns, numbers too large for a double, dates that do not exist, keywords strict mode
refuses. Every schema of ``spec/schemas`` must compile under ajv's Ajv2020 with
``strict: true``, and every example and probe (``probes.json``: instances written as JSON text,
so that ``1e400`` stays ``1e400``) must get the same verdict from ajv (with ajv-formats) and from
python-jsonschema with ECMA-262 patterns and asserted formats (the conformance suite's
``conveyor_conformance.ecma``, which its checks use), and the verdict the
example or probe expects. ajv comes from ``spec/tools/node`` (``just setup`` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conveyor_conformance import ecma

TOOLS = Path(__file__).resolve().parent
NODE_DIR = TOOLS / "node"


def cases(spec: Path, base: str) -> list[dict[str, Any]]:
    """Examples and probes as {id, schema (an $id with pointer), json (text), valid}."""
    found: list[dict[str, Any]] = []
    for kind in ("valid", "invalid"):
        for path in sorted((spec / "examples" / kind).glob("*.json")):
            example = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                {
                    "id": f"examples/{kind}/{path.name}",
                    "schema": base + example["schema"],
                    "json": json.dumps(example["instance"], ensure_ascii=False),
                    "valid": kind == "valid",
                }
            )
    probes = json.loads((TOOLS / "probes.json").read_text(encoding="utf-8"))
    for probe in probes["probes"]:
        found.append(
            {
                "id": f"probe {probe['id']}",
                "schema": base + probe["schema"],
                "json": probe["json"],
                "valid": probe["valid"],
            }
        )
    return found


def schema_dirs(spec: Path) -> list[Path]:
    """The spec's schemas and, next to the spec in the repository, the conformance harness
    protocol's (they reference the spec's, and an implementer's harness compiles both)."""
    protocol = spec.resolve().parent / "conformance-tests" / "protocol"
    extra = [protocol, protocol / "commands"] if (protocol / "commands").is_dir() else []
    return [spec / "schemas", *extra]


def ajv_results(spec: Path, items: list[dict[str, Any]]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("cross-validate: node is not installed; install Node.js 18 or newer")
    if not (NODE_DIR / "node_modules" / "ajv").is_dir():
        raise SystemExit(
            "cross-validate: ajv is not installed in spec/tools/node; run `just setup` "
            "(or `npm ci --prefix spec/tools/node`)"
        )
    request = [{"id": c["id"], "schema": c["schema"], "json": c["json"]} for c in items]
    completed = subprocess.run(
        [node, str(NODE_DIR / "validate.mjs"), *map(str, schema_dirs(spec))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise SystemExit(f"cross-validate: ajv failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def python_results(spec: Path, items: list[dict[str, Any]]) -> dict[str, Any]:
    schemas = {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((spec / "schemas").glob("*.schema.json"))
    }
    registry = ecma.registry_without_dialect(schemas)
    results: dict[str, Any] = {}
    for item in items:
        try:
            instance = json.loads(item["json"])
            results[item["id"]] = ecma.validator(item["schema"], registry).is_valid(instance)
        except Exception as error:  # reported as a difference, with its reason
            results[item["id"]] = f"cannot validate: {type(error).__name__}: {str(error)[:200]}"
    return results


def problems(spec: Path) -> tuple[list[str], int]:
    version = (spec / "VERSION").read_text(encoding="utf-8").strip()
    base = f"https://conveyor.dev/spec/{'.'.join(version.split('.')[:2])}/schemas/"
    items = cases(spec, base)
    from_ajv = ajv_results(spec, items)
    from_python = python_results(spec, items)
    found = [
        f"ajv (strict) refuses {name}: {problem}"
        for name, problem in from_ajv["compile"].items()
    ]
    for item in items:
        js, py = from_ajv["results"].get(item["id"]), from_python[item["id"]]
        if js != py:
            found.append(f"{item['id']}: ajv says {js!r}, python-jsonschema says {py!r}")
        elif js != item["valid"]:
            found.append(f"{item['id']}: both validators say {js!r}, expected {item['valid']!r}")
    return found, len(items)


def main(argv: list[str]) -> int:
    spec = Path(argv[0]) if argv else Path("spec")
    found, count = problems(spec)
    if found:
        print(f"cross-validate: {len(found)} difference(s) over {count} cases:")
        for problem in found:
            print(f"  - {problem}")
        return 1
    print(f"cross-validate: OK - ajv (strict) and python-jsonschema agree on {count} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
