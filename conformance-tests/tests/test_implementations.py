"""The suite passes on conforming implementations: the reference, the model and the JS example."""

from __future__ import annotations

import pytest

from .conftest import JS_ADAPTER, MODEL, REFERENCE, node


def test_reference_memory_conforms(suite) -> None:
    run = suite(REFERENCE, "--max-examples", "20", "--validate-protocol")
    assert run.code == 0, run.output
    assert run.report["verdict"] == "conforms"
    assert run.report["totals"]["fail"] == 0
    stateful = run.check("stateful")
    assert stateful["status"] == "pass"
    assert stateful["detail"]["examples"] >= 20
    # The transport checked every exchange, and the whole traffic was validated.
    assert run.check("protocol")["requirements"] == [
        "PROTO-001",
        "PROTO-002",
        "PROTO-004",
        "PROTO-005",
        "PROTO-006",
    ]
    requirements = run.report["requirements"]
    assert requirements["CODEC-005"]["status"] == "not_testable"
    for req in (
        "LIMIT-006",
        "LIMIT-007",
        "CODEC-004",
        "ERR-001",
        "JOB-009",
        "ORDER-003",
        "MACH-010",
        # Worker mode: the library's own worker ran the handlers.
        "OUT-003",
        "OUT-004",
        "OUT-006",
        "TIMEOUT-003",
    ):
        assert requirements[req]["status"] == "pass", req


def test_model_passes_every_vector(suite) -> None:
    """The vectors and the model agree: a disagreement is a bug in one of them."""
    run = suite(MODEL, "--no-stateful")
    assert run.code == 0, run.output
    assert run.report["totals"]["fail"] == 0


def test_model_without_features_refuses_them(suite) -> None:
    run = suite(f"{MODEL} --core", "--no-stateful")
    assert run.code == 0, run.output
    unclaimed = [c for c in run.report["checks"] if c["id"].startswith("unclaimed-")]
    assert unclaimed
    assert all(c["status"] == "pass" for c in unclaimed)
    assert run.report["features"]["serial_groups"]["status"] == "not_claimed"


@pytest.mark.skipif(node() is None, reason="Node.js is not installed")
def test_javascript_example_conforms_for_what_it_claims(suite) -> None:
    run = suite(f"{node()} {JS_ADAPTER}", "--max-examples", "30")
    assert run.code == 0, run.output
    report = run.report
    assert report["implementation"]["language"] == "javascript"
    assert report["claimed_features"] == ["serial_groups"]
    assert report["features"]["core"]["status"] == "pass"
    assert report["features"]["core"]["passed"] > 100
    assert report["features"]["serial_groups"]["status"] == "pass"
    # Features it does not claim are refused (VER-001), not silently passed.
    assert report["features"]["unique"]["status"] == "not_claimed"
    assert run.check("unclaimed-unique")["status"] == "pass"
    # Without worker mode, the worker side of OUT-006 is not tested, whatever the reports say.
    assert "worker" not in report["capabilities"]
    assert run.check("worker-die-stops-claiming")["status"] == "skip"
    assert run.check("outcome-die")["status"] == "pass"
    for req in ("OUT-003", "OUT-004", "OUT-006"):
        assert report["requirements"][req]["status"] == "untested", req


def test_features_option_limits_the_run(suite) -> None:
    run = suite(REFERENCE, "--features", "core", "--no-stateful")
    assert run.code == 0, run.output
    groups = [c for c in run.report["checks"] if "serial_groups" in c["features"]]
    assert groups
    assert all(c["status"] == "skip" for c in groups)
