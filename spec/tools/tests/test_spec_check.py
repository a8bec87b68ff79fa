"""Tests for spec/tools/spec_check.py: the real spec passes, and broken copies are reported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[1]
SPEC = TOOLS.parent
sys.path.insert(0, str(TOOLS))

import spec_check  # noqa: E402


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A private copy of the spec directory to break."""
    copy = tmp_path / "spec"
    shutil.copytree(SPEC, copy, ignore=shutil.ignore_patterns("tools", "__pycache__"))
    return copy


def problems_of(spec: Path) -> list[str]:
    return spec_check.check(spec).problems


def reported(problems: list[str], *fragments: str) -> bool:
    return any(all(fragment in problem for fragment in fragments) for problem in problems)


def test_real_spec_passes() -> None:
    result = spec_check.check(SPEC)
    assert result.problems == []
    assert 70 <= result.counts["requirements"] <= 200
    assert result.counts["machines"] == 3


def test_command_line_passes_on_real_spec() -> None:
    completed = subprocess.run(
        [sys.executable, str(TOOLS / "spec_check.py"), str(SPEC)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.startswith("spec-check: OK")
    assert "requirements" in completed.stdout


def test_copy_passes_before_breaking(broken: Path) -> None:
    assert problems_of(broken) == []


def test_unreachable_state_is_reported(broken: Path) -> None:
    def add_state(machine: dict[str, Any]) -> None:
        machine["states"]["limbo"] = {
            "tags": ["active"],
            "description": "Never entered.",
            "moved_by": [],
        }
        machine["transitions"].append(
            {"id": "J99", "from": ["limbo"], "event": "cancel", "to": "cancelled", "req": "OPS-001"}
        )

    edit_json(broken / "machines" / "job.json", add_state)
    problems = problems_of(broken)
    assert reported(problems, "machines/job.json", "'limbo'", "no incoming transition")


def test_state_reached_only_from_unreachable_states_is_reported(broken: Path) -> None:
    def add_island(machine: dict[str, Any]) -> None:
        for name in ("island_a", "island_b"):
            machine["states"][name] = {"tags": ["active"], "description": "Island.", "moved_by": []}
        machine["transitions"].append(
            {
                "id": "J98",
                "from": ["island_a"],
                "event": "cancel",
                "to": "island_b",
                "req": "OPS-001",
            }
        )
        machine["transitions"].append(
            {
                "id": "J99",
                "from": ["island_b"],
                "event": "cancel",
                "to": "island_a",
                "req": "OPS-001",
            }
        )

    edit_json(broken / "machines" / "job.json", add_island)
    problems = problems_of(broken)
    assert reported(problems, "'island_a'", "unreachable")
    assert reported(problems, "'island_b'", "unreachable")


def test_unknown_requirement_id_is_reported(broken: Path) -> None:
    edit_json(
        broken / "machines" / "job.json",
        lambda machine: machine["transitions"][0].__setitem__("req", "CLAIM-999"),
    )
    assert reported(problems_of(broken), "transition J01", "CLAIM-999", "not an anchor")


def test_mismatched_schema_enum_is_reported(broken: Path) -> None:
    edit_json(
        broken / "schemas" / "job.schema.json",
        lambda schema: schema["properties"]["state"]["enum"].remove("waiting"),
    )
    assert reported(problems_of(broken), "job.schema.json", "state enum differs", "waiting")


def test_lower_case_must_in_prose_is_reported(broken: Path) -> None:
    path = broken / "spec.md"
    path.write_text(
        path.read_text(encoding="utf-8") + "\nWorkers must send heartbeats.\n", encoding="utf-8"
    )
    assert reported(problems_of(broken), "lower-case 'must'")


def test_lower_case_must_in_code_span_is_allowed(broken: Path) -> None:
    path = broken / "spec.md"
    path.write_text(
        path.read_text(encoding="utf-8") + "\nThe option is named `must_run`, or `must`.\n",
        encoding="utf-8",
    )
    assert problems_of(broken) == []


def test_invalid_example_that_validates_is_reported(broken: Path) -> None:
    example = {
        "schema": "publish.schema.json",
        "description": "Actually valid.",
        "instance": {"requests": [{"type": "note"}]},
    }
    (broken / "examples" / "invalid" / "oops.json").write_text(
        json.dumps(example), encoding="utf-8"
    )
    assert reported(problems_of(broken), "examples/invalid/oops.json", "passes")


def test_valid_example_that_fails_is_reported(broken: Path) -> None:
    example = {
        "schema": "publish.schema.json",
        "description": "Actually invalid.",
        "instance": {"requests": [{"type": "note"}], "priority": -1},
    }
    (broken / "examples" / "valid" / "oops.json").write_text(json.dumps(example), encoding="utf-8")
    assert reported(problems_of(broken), "examples/valid/oops.json", "fails")


def test_normative_paragraph_without_id_is_reported(broken: Path) -> None:
    path = broken / "spec.md"
    path.write_text(
        path.read_text(encoding="utf-8") + "\nA worker MUST NOT sleep.\n", encoding="utf-8"
    )
    assert reported(problems_of(broken), "uses MUST", "**[ID]**")


def test_duplicate_requirement_id_is_reported(broken: Path) -> None:
    path = broken / "spec.md"
    path.write_text(
        path.read_text(encoding="utf-8")
        + "\n**[TIME-001]** An implementation MUST tick.\n{: #TIME-001 }\n",
        encoding="utf-8",
    )
    assert reported(problems_of(broken), "TIME-001", "more than once")


def test_dead_guard_is_reported(broken: Path) -> None:
    edit_json(
        broken / "machines" / "job.json",
        lambda machine: machine["guards"].__setitem__(
            "never_used", {"description": "Dead.", "expr": {"le": ["job.available_at", "now"]}}
        ),
    )
    assert reported(problems_of(broken), "guard 'never_used'", "never used")


def test_unknown_request_event_is_reported(broken: Path) -> None:
    edit_json(
        broken / "machines" / "job.json",
        lambda machine: machine["effects"]["pause_request"].__setitem__("request_event", "pause"),
    )
    assert reported(problems_of(broken), "request event 'pause'")


def test_missing_default_preset_is_reported(broken: Path) -> None:
    edit_json(
        broken / "retry-presets.json", lambda presets: presets.__setitem__("default", "gentle")
    )
    assert reported(problems_of(broken), "default preset 'gentle'")


def test_invalid_schema_is_reported(broken: Path) -> None:
    edit_json(
        broken / "schemas" / "retry-policy.schema.json",
        lambda schema: schema["properties"]["jitter"].__setitem__("minimum", "zero"),
    )
    assert reported(problems_of(broken), "retry-policy.schema.json", "not a valid 2020-12 schema")


def test_command_line_fails_on_broken_copy(broken: Path) -> None:
    edit_json(
        broken / "schemas" / "request.schema.json",
        lambda schema: schema["properties"]["state"]["enum"].append("paused"),
    )
    completed = subprocess.run(
        [sys.executable, str(TOOLS / "spec_check.py"), str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1
    assert "request.schema.json" in completed.stdout
    assert "paused" in completed.stdout


# -- versions kept honestly (releases.py) ------------------------------------------------------


def edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_changed_text_of_a_released_requirement_is_reported(broken: Path) -> None:
    edit_text(
        broken / "spec.md",
        "**[LEASE-004]** A `heartbeat`",
        "**[LEASE-004]** A new `heartbeat`",
    )
    problems = problems_of(broken)
    assert reported(problems, "LEASE-004", "changed since 0.2.0", "new ID")


def test_changed_text_named_in_the_changelog_passes(broken: Path) -> None:
    edit_text(
        broken / "spec.md",
        "**[LEASE-004]** A `heartbeat`",
        "**[LEASE-004]** A new `heartbeat`",
    )
    edit_text(
        broken / "CHANGELOG.md",
        "## [Unreleased]\n",
        "## [Unreleased]\n\n- LEASE-004: wording.\n",
    )
    assert problems_of(broken) == []


def test_whitespace_only_change_is_not_a_change(broken: Path) -> None:
    edit_text(
        broken / "spec.md",
        "**[LEASE-004]** A `heartbeat` of",
        "**[LEASE-004]** A `heartbeat`\nof",
    )
    assert problems_of(broken) == []


def test_removed_requirement_must_be_listed_as_replaced(broken: Path) -> None:
    text = (broken / "spec.md").read_text(encoding="utf-8")
    start = text.index("**[LEASE-004]**")
    end = text.index("{: #LEASE-004 }") + len("{: #LEASE-004 }")
    (broken / "spec.md").write_text(text[:start] + text[end:], encoding="utf-8")
    assert reported(problems_of(broken), "LEASE-004", "is gone", "Replaced and removed")


def test_new_requirement_must_be_in_the_changelog(broken: Path) -> None:
    edit_text(
        broken / "spec.md",
        "## Clock {#clock}\n",
        "## Clock {#clock}\n\n**[TIME-099]** A clock MUST tick.\n{: #TIME-099 }\n",
    )
    assert reported(problems_of(broken), "TIME-099", "[Unreleased]")


def test_a_replaced_id_cannot_come_back(broken: Path) -> None:
    edit_text(
        broken / "spec.md",
        "## Clock {#clock}\n",
        "## Clock {#clock}\n\n**[LIMIT-004]** A limit MUST hold.\n{: #LIMIT-004 }\n",
    )
    assert reported(problems_of(broken), "LIMIT-004", "listed as replaced but is still")


def test_release_section_must_name_what_it_added(broken: Path) -> None:
    edit_text(broken / "CHANGELOG.md", "BROKER-010", "the tenth broker rule")
    assert reported(problems_of(broken), "BROKER-010", "added in 0.2.0", "does not name it")


def _without_unreleased(spec_dir: Path, released: set[str]) -> None:
    """Take out of a copy of the spec what is not released yet: the requirements no release
    digest holds, and the [Unreleased] section that names them."""
    text = (spec_dir / "spec.md").read_text(encoding="utf-8")
    for found in re.findall(r"^\*\*\[([A-Z]+-[0-9]{3})\]\*\*", text, flags=re.MULTILINE):
        if found not in released:
            block = rf"\*\*\[{found}\]\*\*.*?\{{: #{found} \}}\n\n?"
            text = re.sub(block, "", text, flags=re.DOTALL)
            text = text.replace(f"[{found}](#{found})", found)  # a link from other prose
    text = _with_replaced_since(text, released)
    (spec_dir / "spec.md").write_text(text, encoding="utf-8")
    for machine in (spec_dir / "machines").glob("*.json"):  # they may cite unreleased rules
        machine.write_text(_as_released(f"machines/{machine.name}"), encoding="utf-8")
    log = (spec_dir / "CHANGELOG.md").read_text(encoding="utf-8")
    start = log.index("## [Unreleased]")
    end = log.index("\n## [", start + 1)
    (spec_dir / "CHANGELOG.md").write_text(
        log[:start] + "## [Unreleased]\n" + log[end:], encoding="utf-8"
    )


def _as_released(name: str) -> str:
    """A file of the spec as the commit that recorded release 0.2.0 had it."""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", "releases/0.2.0.json"],
            cwd=SPEC,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return subprocess.run(
            ["git", "show", f"{commit}:./{name}"],
            cwd=SPEC,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this checkout does not hold the commit that recorded the release")


def _with_replaced_since(text: str, released: set[str]) -> str:
    """Put back the released requirements that an unreleased change replaced, with their text
    as released, and drop their rows of the table of replaced requirements."""
    present = set(re.findall(r"^\*\*\[([A-Z]+-[0-9]{3})\]\*\*", text, flags=re.MULTILINE))
    missing = sorted(released - present)
    if not missing:
        return text
    old = _as_released("spec.md")
    blocks = []
    for rid in missing:
        found = re.search(rf"\*\*\[{rid}\]\*\*.*?\{{: #{rid} \}}\n", old, flags=re.DOTALL)
        assert found, f"{rid} is not in the released spec.md"
        blocks.append(found.group(0))
        text = re.sub(rf"^\| <span id=\"{rid}\"></span>.*\n", "", text, flags=re.MULTILINE)
    return text.replace("## Clock {#clock}\n", "## Clock {#clock}\n\n" + "\n".join(blocks), 1)


def test_release_command_writes_the_digest(broken: Path) -> None:
    committed_digest = json.loads((SPEC / "releases" / "0.2.0.json").read_text(encoding="utf-8"))
    _without_unreleased(broken, set(committed_digest["requirements"]))
    (broken / "releases" / "0.2.0.json").unlink()
    completed = subprocess.run(
        [sys.executable, str(TOOLS / "spec_check.py"), "--release", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout
    written = json.loads((broken / "releases" / "0.2.0.json").read_text(encoding="utf-8"))
    committed = json.loads((SPEC / "releases" / "0.2.0.json").read_text(encoding="utf-8"))
    assert written["requirements"] == committed["requirements"]


# -- ajv against python-jsonschema (cross_validate.py) -----------------------------------------


def test_cross_validator_agrees_on_the_real_spec() -> None:
    import cross_validate

    problems, count = cross_validate.problems(SPEC)
    assert problems == []
    assert count > 50


def test_cross_validator_reports_a_schema_strict_mode_refuses(broken: Path) -> None:
    import cross_validate

    def union(schema: Any) -> None:
        schema["$defs"]["priority"]["type"] = ["integer", "string"]

    edit_json(broken / "schemas" / "common.schema.json", union)
    problems, _ = cross_validate.problems(broken)
    assert reported(problems, "ajv (strict) refuses", "common.schema.json", "union")


def test_cross_validator_reports_a_pattern_python_reads_otherwise(broken: Path) -> None:
    import cross_validate

    def end_of_input(schema: Any) -> None:  # Python reads \Z; ECMA-262 has no such escape
        schema["$defs"]["queue"]["pattern"] = "^[a-z0-9][a-z0-9_.:-]{0,63}\\Z"

    edit_json(broken / "schemas" / "common.schema.json", end_of_input)
    problems, _ = cross_validate.problems(broken)
    assert reported(problems, "ajv says", "python-jsonschema says")
