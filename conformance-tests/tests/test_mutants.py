"""Proving the suite can fail: every mutant adapter is rejected, naming the rule it breaks."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conveyor_conformance import report

from .conftest import HERE, MUTANT
from .test_failure_reports import RAW_ID

_spec = importlib.util.spec_from_file_location("mutant_adapter", HERE / "mutants" / "adapter.py")
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
MUTANTS: dict[str, tuple[str, str]] = _module.MUTANTS

#: Mutants the stateful suite alone must also catch (no vectors), within a few examples.
STATEFUL_CATCHES = {
    "group-by-sequence": "GROUP-002",
    "waiting-counts-attempt": "OUT-004",
    "stale-report-accepted": "LEASE-007",
    "priority-ignored": "ORDER-002",
    "finished-at-not-stamped": "JOB-010",
    # a long-running job of low priority holds its group (the stateful rule hold_group)
    "group-ignores-lower-priority": "GROUP-001",
}


def test_there_are_at_least_ten_mutants() -> None:
    assert len(MUTANTS) >= 10


#: Each vector file (its stem) and the requirements its vectors cite, read once.
_CITED: dict[str, frozenset[str]] = {
    path.stem: frozenset(
        requirement
        for vector in json.loads(path.read_text())["vectors"]
        for requirement in vector.get("requirements", [])
    )
    for path in (HERE.parent / "vectors").glob("*.json")
    if path.name != "vector.schema.json"
}


def _files_citing(requirement: str) -> tuple[str, ...]:
    """``--select`` of the vector files with a vector that cites ``requirement``: a rejection
    names the requirements of the vectors that failed, so the run over these files rejects
    a mutant exactly when the run over every file does, in a fraction of the time (each
    file's vectors are independent of the others'). None cite the harness protocol's
    requirements (PROTO-), which any vector exercises: those mutants meet every file."""
    files = sorted(stem for stem, cited in _CITED.items() if requirement in cited)
    if not files:
        assert requirement.startswith("PROTO-"), f"no vector cites {requirement}"
        return ()
    return ("--select", ",".join(f"{stem}.json" for stem in files))


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_vectors_reject_the_mutant(suite, mutant: str) -> None:
    broken, requirement = MUTANTS[mutant]
    run = suite(f"{MUTANT} {mutant}", "--no-stateful", *_files_citing(requirement))
    expected_code = 2 if requirement.startswith("PROTO-") else 1
    assert run.code == expected_code, f"{mutant} ({broken}) was not rejected:\n{run.output}"
    assert requirement in run.failed_requirements, (
        f"{mutant} was rejected for {sorted(run.failed_requirements)}, not {requirement}"
    )
    # The rejection reads: each failure names its jobs by alias, within the console's width.
    for check in run.report["checks"]:
        if check["status"] == "fail":
            assert not RAW_ID.search(check["message"]), check["message"]
            lines = report.failure_lines(check, 100)
            assert all(len(line) <= 100 for line in lines), lines


@pytest.mark.parametrize("mutant", sorted(STATEFUL_CATCHES))
def test_stateful_suite_rejects_the_mutant(suite, mutant: str) -> None:
    run = suite(f"{MUTANT} {mutant}", "--no-vectors", "--no-shrink", "--max-examples", "60")
    assert run.code == 1, run.output
    stateful = run.check("stateful")
    assert STATEFUL_CATCHES[mutant] in stateful["failed_requirements"], stateful["message"]
    # The failure comes as a vector, ready to be saved as a regression.
    assert stateful["trace"]["origin"] == "hypothesis"
    assert not RAW_ID.search(stateful["message"]), stateful["message"]
