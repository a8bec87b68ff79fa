"""Outcomes the spec leaves open (any_of, should), and what the report says the harness can test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conveyor_conformance import report
from conveyor_conformance.coverage import NOT_TESTABLE, PARTLY_TESTABLE, WORKER_SIDE
from conveyor_conformance.spec import Spec
from conveyor_conformance.vectors import CheckResult, validate_file

from .conftest import MODEL

SPEC = Spec.load()
UNKNOWN_TYPE = {"requests": [{"type": "nobody"}], "queue": "default", "priority": 100}


def _vectors(tmp_path: Path, *vectors: dict[str, Any]) -> Path:
    directory = tmp_path / "vectors"
    directory.mkdir()
    path = directory / "open.json"
    document = {
        "$schema": "./vector.schema.json",
        "specversion": "0.2",
        "title": "Open outcomes",
        "vectors": list(vectors),
    }
    path.write_text(json.dumps(document), "utf-8")
    assert validate_file(path) == []
    return directory


def test_a_departure_from_should_passes_and_is_reported(tmp_path: Path, suite) -> None:
    directory = _vectors(
        tmp_path,
        {
            "id": "open-unknown-type",
            "description": "The model stores a job of an unregistered type.",
            "requirements": ["JOB-009"],
            "steps": [
                {
                    "cmd": "publish",
                    "job": UNKNOWN_TYPE,
                    "expect": {
                        "any_of": [
                            {"error": "unknown_type"},
                            {"result": {"job": {"requests": [{"type": "nobody"}]}}},
                        ]
                    },
                    "should": {"error": "unknown_type"},
                }
            ],
        },
    )
    run = suite(MODEL, "--no-stateful", "--vectors-dir", str(directory))
    assert run.code == 0, run.output
    assert run.check("open-unknown-type")["status"] == "pass"
    assert [d["id"] for d in run.report["departures"]] == ["open-unknown-type"]
    assert run.report["requirements"]["JOB-009"]["departures"] == ["open-unknown-type"]
    assert "Departures from a SHOULD" in run.output


def test_an_outcome_outside_any_of_fails(tmp_path: Path, suite) -> None:
    directory = _vectors(
        tmp_path,
        {
            "id": "open-wrong-code",
            "description": "Neither alternative: the model stores the job.",
            "requirements": ["ERR-001"],
            "steps": [
                {
                    "cmd": "publish",
                    "job": UNKNOWN_TYPE,
                    "expect": {"any_of": [{"error": "unknown_type"}, {"error": "invalid_request"}]},
                }
            ],
        },
    )
    run = suite(MODEL, "--no-stateful", "--vectors-dir", str(directory))
    assert run.code == 1, run.output
    assert "expected one of" in run.check("open-wrong-code")["message"]


def test_repeat_builds_large_strings(tmp_path: Path, suite) -> None:
    directory = _vectors(
        tmp_path,
        {
            "id": "open-repeat",
            "description": "{$repeat} stands for a long string in requests.",
            "requirements": ["LIMIT-006"],
            "steps": [
                {
                    "cmd": "publish",
                    "job": {"requests": [{"type": "work", "payload": {"$repeat": ["ab", 5]}}]},
                    "expect": {"result": {"job": {"requests": [{"payload": "ababababab"}]}}},
                }
            ],
        },
    )
    run = suite(MODEL, "--no-stateful", "--vectors-dir", str(directory))
    assert run.code == 0, run.output


def test_untestable_requirements_are_named_and_explained() -> None:
    known = set(SPEC.requirements)
    assert set(NOT_TESTABLE) <= known
    assert set(PARTLY_TESTABLE) <= known
    assert not set(NOT_TESTABLE) & set(PARTLY_TESTABLE)
    built = report.build(SPEC, {"features": []}, [], {}, "start", "end")
    for req, reason in NOT_TESTABLE.items():
        entry = built["requirements"][req]
        if entry["feature"] == "core":
            assert entry["status"] == "not_testable", req
        else:
            assert entry["status"] == "not_claimed", req  # a feature's n/a comes first
        assert entry["note"] == reason
    assert built["requirements"]["MACH-010"]["status"] == "untested"
    assert built["requirements"]["MACH-010"]["note"] == PARTLY_TESTABLE["MACH-010"]
    exported = report.export(built)
    assert exported["requirements"]["CODEC-005"] == "not_testable"
    assert exported["notes"]["CODEC-005"] == NOT_TESTABLE["CODEC-005"]
    assert "n/t" in report.summary(built)


def _check(check_id: str, status: str, requires: list[str]) -> CheckResult:
    check = CheckResult(check_id, "vector", status, ["OUT-006"], requires=requires)
    if status == "fail":
        check.failed_requirements = ["OUT-006"]
    return check


def _requirements(*checks: CheckResult) -> dict[str, Any]:
    return report.build(SPEC, {"features": []}, list(checks), {}, "start", "end")


def test_worker_side_requirements_pass_only_in_worker_mode() -> None:
    """A check that reports outcomes in place of a worker never makes OUT-006 pass."""
    assert set(WORKER_SIDE) <= set(SPEC.requirements)
    assert not set(WORKER_SIDE) & set(NOT_TESTABLE)
    store_only = _requirements(
        _check("outcome-die", "pass", []), _check("worker-die", "skip", ["worker"])
    )
    entry = store_only["requirements"]["OUT-006"]
    assert entry["status"] == "untested"
    assert entry["passed"] == 0
    assert "worker mode" in entry["note"]
    assert "1 check(s) passed its store side" in entry["note"]
    assert "OUT-006" in report.summary(store_only)
    assert report.export(store_only)["requirements"]["OUT-006"] == "untested"
    for req in set(WORKER_SIDE) - {"OUT-006"}:
        if store_only["requirements"][req]["feature"] == "core":
            assert store_only["requirements"][req]["status"] == "untested", req

    worker = _requirements(
        _check("outcome-die", "pass", []), _check("worker-die", "pass", ["worker"])
    )
    assert worker["requirements"]["OUT-006"]["status"] == "pass"
    assert worker["requirements"]["OUT-006"]["passed"] == 1

    # A store-side failure is still a failure.
    broken = _requirements(_check("outcome-die", "fail", []))
    assert broken["requirements"]["OUT-006"]["status"] == "fail"
