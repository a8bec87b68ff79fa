"""How failures read: jobs by their aliases, traces that fit the console and replay, progress,
and a failure filed under the feature of the requirement it broke."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from conveyor_conformance import report, tracefmt
from conveyor_conformance.matching import Mismatch, bindings, match
from conveyor_conformance.naming import IdNames
from conveyor_conformance.progress import Progress
from conveyor_conformance.spec import Spec
from conveyor_conformance.vectors import CheckResult, validate_file

from .conftest import MUTANT, REFERENCE

SPEC = Spec.load()
#: An implementation's id in a message: ``got "3"`` or ``['3', '4']`` (the memory store's ids).
RAW_ID = re.compile(r"got \"\d+\"|\['\d+'")


# -- 1. vector failures name the vector's aliases ---------------------------------------------


def test_ids_are_shown_by_alias_and_unbound_ones_numbered() -> None:
    names = IdNames()
    names.bind("job", "a", "17")
    names.bind("batch", "b", "B1")
    shown = names.show(
        {"jobs": [{"id": "17", "depends_on": ["99"]}, {"id": "98", "batch_id": "B1"}]}
    )
    assert shown == {
        "jobs": [
            {"id": {"$job": "a"}, "depends_on": [{"$job": "~1"}]},
            {"id": {"$job": "~2"}, "batch_id": {"$batch": "b"}},
        ]
    }
    assert names.job("99") == "~1", "an unbound id keeps its number"
    assert names.ids() == {"a": "17", "~1": "99", "~2": "98"}
    mismatch = Mismatch("jobs[0].id", {"$job": "b"}, "17")
    assert mismatch.describe(names) == 'jobs[0].id: expected {"$job": "b"}, got {"$job": "a"}'
    assert names.show({"batch": {"id": "B2", "total": 1}}) == {"batch": {"id": "B2", "total": 1}}
    assert names.show({"batch": {"id": "B1"}}) == {"batch": {"id": {"$batch": "b"}}}
    # A payload that happens to equal an id is data, not a job.
    assert names.show({"payload": "17"}) == {"payload": "17"}


def test_a_vector_failure_names_jobs_by_alias(suite) -> None:
    run = suite(f"{MUTANT} priority-ignored", "--no-stateful", "--select", "order-priority-then")
    assert run.code == 1, run.output
    check = run.check("order-priority-then-sequence")
    assert 'jobs[0].id: expected {"$job": "b"}, got {"$job": "a"}' in check["message"]
    assert not RAW_ID.search(check["message"]), check["message"]
    # The trace keeps the implementation's ids, to find the jobs in its logs.
    assert set(check["trace"]["ids"]) >= {"a", "b", "c", "d"}


def test_a_job_the_implementation_should_not_have_stored_is_numbered(suite) -> None:
    run = suite(f"{MUTANT} bulk-publish-partial", "--no-stateful", "--select", "publish-bulk")
    assert run.code == 1, run.output
    message = run.check("publish-bulk-atomic")["message"]
    assert 'expected 1 items [{"id": {"$job": "a"}}], got 3' in message, message
    assert '{"$job": "~1"}' in message
    assert '{"$job": "~2"}' in message


# -- 2. shrunk traces fit the console, and saved failures replay ------------------------------


def test_trace_lines_are_compact_and_bounded() -> None:
    policy = {"backoff": "linear", "initial_delay_ms": 3000, "max_delay_ms": 8000, "jitter": 0.5}
    steps: list[dict[str, Any]] = [
        {
            "cmd": "publish_bulk",
            "jobs": [
                {"requests": [{"type": "work", "payload": None}], "retry_policy": policy}
                for _ in range(3)
            ],
            "bind": ["j1", "j2", "j3"],
            "expect": {"result": {"jobs": [{"id": {"$job": f"j{i}"}} for i in (1, 2, 3)]}},
        },
        {
            "cmd": "list",
            "limit": 1000,
            "expect": {"result": {"jobs": [{"id": {"$job": "j1"}}, {"id": {"$new": "~1"}}]}},
        },
    ] * 30
    lines = tracefmt.format_trace(steps, 72)
    assert all(len(line) <= 72 for line in lines), max(lines, key=len)
    assert "jobs=[{requests:[work]" in lines[0]
    assert lines[0].endswith(tracefmt.ELLIPSIS)
    assert "= {jobs:[{id:j1},{id:new ~1}]}" in lines[3]
    assert any("more steps in the saved file" in line for line in lines)
    assert len(lines) <= 2 * tracefmt.MAX_STEPS + 1


def test_new_binds_the_job_the_implementation_created() -> None:
    taken = frozenset({"1"})

    def resolve(kind: str, name: str) -> Any:
        assert kind == "new"
        return taken

    expected = {"jobs": [{"id": {"$job": "a"}}, {"id": {"$new": "c"}}]}
    actual = {"jobs": [{"id": "1"}, {"id": "7"}]}
    assert not match(expected["jobs"][1], actual["jobs"][1], "", resolve)
    assert match({"$new": "c"}, "1", "", resolve), "an id an alias names is not new"
    assert bindings(expected, actual, resolve) == {"c": "7"}
    unordered = {"$unordered": [{"id": {"$new": "c"}, "state": "ready"}]}
    assert bindings(unordered, [{"id": "7", "state": "ready"}], resolve) == {"c": "7"}


def test_a_saved_failure_with_a_created_job_replays(tmp_path: Path, suite) -> None:
    """The lost recurring copy is expected as ``{"$new": "~1"}``, not as the literal "~1"."""
    failures = tmp_path / "failures"
    run = suite(
        f"{MUTANT} recurring-copy-lost",
        "--no-vectors",
        "--no-shrink",
        "--features",
        "recurring",
        "--failures-dir",
        str(failures),
    )
    assert run.code == 1, run.output
    stateful = run.check("stateful")
    assert "REC-001" in stateful["failed_requirements"]
    assert "missing [~1]" in stateful["message"]
    (saved,) = failures.glob("*.json")
    assert validate_file(saved) == []
    assert '"$new": "~1"' in saved.read_text()
    replayed = suite(
        f"{MUTANT} recurring-copy-lost", "--no-stateful", "--vectors-dir", str(failures)
    )
    assert replayed.code == 1, replayed.output
    (check,) = [c for c in replayed.report["checks"] if c["kind"] == "vector"]
    assert "REC-001" in check["failed_requirements"]
    assert "~1" in check["message"]
    fixed = suite(REFERENCE, "--no-stateful", "--vectors-dir", str(failures))
    assert fixed.code == 0, fixed.output


def test_the_summary_shows_the_trace_within_the_width(tmp_path: Path, suite) -> None:
    run = suite(
        f"{MUTANT} group-by-sequence", "--no-vectors", "--no-shrink", "--features", "serial_groups"
    )
    assert run.code == 1, run.output
    stateful = run.check("stateful")
    assert "Minimal trace" not in stateful["message"], "the trace is in `trace`, not the message"
    lines = report.failure_lines(stateful, 90)
    assert all(len(line) <= 90 or "saved as" in line for line in lines), lines
    assert any(line.strip().startswith("0. ") for line in lines)
    assert "minimal trace" in run.output
    assert re.search(r"expected jobs \[[j\d, ]+\], got \[[j\d, ]*\]", stateful["message"])


# -- 3. progress --------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_live_counter_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress("auto", stream)
    progress.vectors_start(2)
    progress.vector_done("core.json", "pass")
    progress.vector_done("unique.json", "fail")
    progress.vectors_end()
    progress.stateful_start(3, 10, 0)
    for count in (1, 2, 3, 4):
        progress.example(count)
    progress.stateful_end("fail")
    text = stream.getvalue()
    assert "\rvectors 1/2  core.json" in text.replace("\x1b[2K", "")
    assert "unique.json  (1 failed)" in text
    assert "shrinking a failure, example 4" in text
    finished = [line for line in text.replace("\x1b[2K", "").split("\n") if line]
    assert finished[-1].endswith("\rstateful: failed after 4 examples in 0.0 s")


def test_progress_in_a_log_is_a_few_lines_and_quiet_silences_it(suite) -> None:
    run = suite(REFERENCE, "--max-examples", "2", "--steps", "5", "--select", "core")
    assert run.code == 0, run.output
    progress = [
        line for line in run.output.splitlines() if line.startswith(("vectors", "stateful"))
    ]
    assert len(progress) == 3, progress
    assert re.match(r"vectors: \d+ in [\d.]+ s: \d+ passed$", progress[0])
    assert "\r" not in run.output
    quiet = suite(REFERENCE, "--no-stateful", "--select", "core", "--quiet")
    assert quiet.code == 0
    assert quiet.output.splitlines()[0] == "Verdict: CONFORMS"


# -- 4. a failure is filed under the requirement it broke ---------------------------------------


def test_a_stateful_failure_fails_only_the_feature_it_broke() -> None:
    features = ["serial_groups", "unique", "recurring"]
    checks = [
        CheckResult(
            "stateful",
            "stateful",
            "fail",
            ["GROUP-002", "UNIQ-003"],
            failed_requirements=["GROUP-002"],
            features=features,
        ),
        CheckResult("v1", "vector", "pass", ["UNIQ-003"], features=["unique"]),
        CheckResult(
            "v2",
            "vector",
            "fail",
            ["CLAIM-004"],
            failed_requirements=["PROTO-002"],
            features=["tags"],
        ),
    ]
    built = report.build(SPEC, {"features": [*features, "tags"]}, checks, {}, "s", "e")
    statuses = {f: built["features"][f]["status"] for f in ("core", *features, "tags")}
    assert statuses == {
        "core": "untested",
        "serial_groups": "fail",
        "unique": "pass",
        "recurring": "untested",
        "tags": "fail",  # a broken protocol rule is filed where the vector belongs
    }
    assert built["requirements"]["GROUP-002"]["failing_checks"] == ["stateful"]
    assert built["requirements"]["UNIQ-003"]["status"] == "pass"


def test_a_passing_stateful_run_counts_for_every_feature() -> None:
    check = CheckResult("stateful", "stateful", "pass", ["GROUP-001"], features=["unique"])
    assert report.filed_under(check, SPEC) == {"core", "unique"}


def test_the_saved_report_repeats_the_features() -> None:
    built = report.build(SPEC, {"features": []}, [], {}, "s", "e")
    assert json.loads(json.dumps(built))["features"]["core"]["status"] == "untested"
