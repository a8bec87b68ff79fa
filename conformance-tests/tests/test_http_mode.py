"""HTTP mode: the vectors through the reference's HTTP binding, and mutants of the binding.

A few vector files keep each run to seconds; ``just conformance`` runs every vector this way.
"""

from __future__ import annotations

import pytest

from .conftest import HERE, PYTHON, REFERENCE

TOKEN = "conformance-http-token-0123456789"
HTTP = ("--http", "auto", "--http-token", TOKEN, "--no-stateful")
# Vectors that use every command the binding covers: publish, get, list, cancel, retry,
# requeue, the paused queues; errors and payloads for the statuses and bodies.
SELECT = ("--select", "ops-,paused,errors.json,publishing.json")
HTTP_MUTANT = f"{PYTHON} {HERE / 'mutants' / 'http_adapter.py'}"
# The binding's own checks catch every mutant; one vector that lists across pages is enough.
MUTANT_SELECT = ("--select", "ops-list")


def test_reference_conforms_through_http(suite) -> None:
    run = suite(REFERENCE, *HTTP, *SELECT, "--validate-protocol")
    assert run.code == 0, run.output
    assert "http" in run.report["claimed_features"]
    binding = [c for c in run.report["checks"] if c["id"].startswith("http-")]
    assert {c["id"] for c in binding} >= {"http-traffic", "http-credentials", "http-created"}
    assert all(c["status"] == "pass" for c in binding), binding
    requirements = run.report["requirements"]
    for number in range(1, 13):
        assert requirements[f"HTTP-{number:03d}"]["status"] == "pass", number
    traffic = run.check("http-traffic")
    assert traffic["detail"]["checked"]["HTTP-001"] > 20  # every exchange of the vectors


def test_without_http_the_binding_is_not_claimed(suite) -> None:
    run = suite(REFERENCE, "--no-stateful", "--select", "ops-")
    assert run.code == 0, run.output
    assert run.report["requirements"]["HTTP-003"]["status"] == "not_claimed"


@pytest.mark.parametrize(
    "mutant",
    [
        "not-found-as-400",
        "no-location",
        "unknown-parameters-ignored",
        "no-credentials",
        "sequence-cursor",
    ],
)
def test_http_mode_rejects_each_mutant(suite, mutant: str) -> None:
    from .mutants.http_adapter import MUTANTS

    run = suite(f"{HTTP_MUTANT} {mutant} --backend memory", *HTTP, *MUTANT_SELECT)
    assert run.code != 0, run.output
    assert MUTANTS[mutant][1] in run.failed_requirements, (mutant, run.failed_requirements)
