"""The runner against broken adapters: noise, wrong seq, crashes, hangs, bad shapes, skips."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conveyor_conformance.vectors import validate_file

from .conftest import MUTANT, PYTHON

FAKE = """
import json, sys
MODE = sys.argv[1]
for line in sys.stdin:
    request = json.loads(line)
    seq, cmd = request["seq"], request["cmd"]
    if cmd == "start":
        implementation = {{"name": "fake", "version": "0", "language": "python"}}
        result = {{"version": 1, "implementation": implementation,
                  "specversion": "0.2", "features": [], "capabilities": []}}
        print(json.dumps({{"seq": seq, "result": result}}), flush=True)
        continue
    if cmd == "stop":
        print(json.dumps({{"seq": seq, "result": {{}}}}), flush=True)
        break
    if MODE == "noise":
        print("hello from the adapter", flush=True)
    elif MODE == "seq":
        print(json.dumps({{"seq": seq + 100, "result": {{}}}}), flush=True)
    elif MODE == "crash":
        sys.exit(3)
    elif MODE == "hang":
        import time; time.sleep(60)
    elif MODE == "shape":
        print(json.dumps({{"seq": seq, "result": {{"unexpected": True}}}}), flush=True)
    elif MODE == "skip":
        print(json.dumps({{"seq": seq, "skipped": {{"message": "not implemented"}}}}), flush=True)
"""


def fake(tmp_path: Path, mode: str) -> str:
    script = tmp_path / "fake_adapter.py"
    script.write_text(FAKE.format())
    return f"{PYTHON} {script} {mode}"


def test_stdout_noise_is_a_broken_adapter(tmp_path: Path, suite) -> None:
    run = suite(fake(tmp_path, "noise"), "--no-stateful")
    assert run.code == 2
    assert "PROTO-002" in run.failed_requirements
    assert run.report["verdict"] == "inconclusive"


def test_wrong_seq_is_a_broken_adapter(tmp_path: Path, suite) -> None:
    run = suite(fake(tmp_path, "seq"), "--no-stateful")
    assert run.code == 2
    assert "PROTO-001" in run.failed_requirements


def test_crash_is_a_broken_adapter(tmp_path: Path, suite) -> None:
    run = suite(fake(tmp_path, "crash"), "--no-stateful")
    assert run.code == 2
    assert "PROTO-006" in run.failed_requirements


def test_hang_times_out(tmp_path: Path, suite) -> None:
    run = suite(
        fake(tmp_path, "hang"), "--no-stateful", "--timeout", "1", "--select", "retry-constant"
    )
    assert run.code == 2
    assert "PROTO-006" in run.failed_requirements


def test_schema_validation_catches_bad_shapes(tmp_path: Path, suite) -> None:
    run = suite(
        fake(tmp_path, "shape"),
        "--no-stateful",
        "--validate-protocol",
        "--select",
        "retry-constant",
    )
    assert run.code == 2
    assert "PROTO-004" in run.failed_requirements


def test_skipped_is_counted_never_passed(tmp_path: Path, suite) -> None:
    run = suite(
        fake(tmp_path, "skip"), "--no-stateful", "--select", "retry-constant,publish-defaults"
    )
    assert run.code == 1, run.output
    vectors = [c for c in run.report["checks"] if c["kind"] == "vector"]
    assert vectors
    assert all(c["status"] == "skip" for c in vectors)
    assert run.report["adapter_skips"]


def test_unreachable_adapter(suite) -> None:
    run = suite(f"{sys.executable} -c 'raise SystemExit(4)'")
    assert run.code == 2
    assert run.report["fatal"]


def test_failure_trace_is_a_replayable_vector(tmp_path: Path, suite) -> None:
    failures = tmp_path / "failures"
    run = suite(
        f"{MUTANT} finished-at-not-stamped",
        "--no-vectors",
        "--max-examples",
        "60",
        "--steps",
        "12",
        "--failures-dir",
        str(failures),
    )
    assert run.code == 1
    saved = sorted(failures.glob("*.json"))
    assert len(saved) == 1
    assert validate_file(saved[0]) == []
    vector = json.loads(saved[0].read_text())["vectors"][0]
    assert "JOB-010" in vector["requirements"]
    # Replayed by the plain vector runner, the trace fails on the mutant...
    replay = suite(
        f"{MUTANT} finished-at-not-stamped", "--no-stateful", "--vectors-dir", str(failures)
    )
    assert replay.code == 1
    # ...and passes on the reference: it is a regression vector as it stands.
    reference = suite(
        f"{PYTHON} -m conveyor.conformance_adapter --backend memory",
        "--no-stateful",
        "--vectors-dir",
        str(failures),
    )
    assert reference.code == 0, reference.output
