"""``conveyor-conformance``: run the suite against an adapter, regenerate vectors, check files."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, report, vectors
from .progress import MODES, Progress
from .protocol import Protocol
from .spec import Spec
from .transport import AdapterError, Client
from .vectors import CheckResult

DEFAULT_EXAMPLES = 60
MAX_BROKEN = 3  # vectors in a row that break the adapter before the run gives up
DEFAULT_STEPS = 40
THOROUGH_EXAMPLES = 1000
THOROUGH_STEPS = 60


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor-conformance",
        description="Check a Conveyor implementation against the spec through its adapter.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the vectors and the stateful suite against an adapter")
    run.add_argument("--adapter", required=True, help="the command that starts the adapter")
    run.add_argument(
        "--features",
        help="comma-separated features to test (default: every feature the adapter claims; "
        "'core' tests the core only)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the stateful suite (default 0)")
    run.add_argument(
        "--max-examples",
        type=int,
        help=f"stateful examples (default {DEFAULT_EXAMPLES}, {THOROUGH_EXAMPLES} with --thorough)",
    )
    run.add_argument(
        "--steps",
        type=int,
        help=f"steps per stateful example (default {DEFAULT_STEPS}, {THOROUGH_STEPS} thorough)",
    )
    run.add_argument("--thorough", action="store_true", help="many more stateful examples")
    run.add_argument(
        "--no-shrink",
        action="store_true",
        help="report the first failing stateful example as found, without shrinking it",
    )
    run.add_argument("--report", default="reports/conformance.json", help="JSON report path")
    run.add_argument(
        "--failures-dir",
        default=None,
        help="where a failing stateful trace is saved as a vector (default: next to the report)",
    )
    run.add_argument(
        "--validate-protocol",
        action="store_true",
        help="validate every request and response against the protocol schemas",
    )
    run.add_argument("--timeout", type=float, default=30.0, help="seconds to wait per response")
    run.add_argument("--spec-dir", help="the spec directory (default: the one next to the suite)")
    run.add_argument("--vectors-dir", help="read vectors from this directory instead")
    run.add_argument("--select", help="run only vectors whose id or file contains one of these")
    run.add_argument("--no-vectors", action="store_true", help="skip the vectors")
    run.add_argument("--no-stateful", action="store_true", help="skip the stateful suite")
    run.add_argument(
        "--http",
        metavar="URL",
        help="HTTP mode: send publish, get, list, cancel, retry, requeue and the queue commands "
        "to the implementation's HTTP binding at this base URL (spec.md#http), the rest to the "
        "adapter, and run the binding's checks; 'auto' picks a free loopback port for an "
        "adapter that serves the binding itself (docs: conformance, HTTP mode)",
    )
    run.add_argument(
        "--http-token",
        default=os.environ.get("CONVEYOR_CONFORMANCE_HTTP_TOKEN"),
        help="the bearer token of the binding (default: $CONVEYOR_CONFORMANCE_HTTP_TOKEN)",
    )
    run.add_argument("--verbose", action="store_true", help="list every requirement")
    run.add_argument(
        "--quiet", action="store_true", help="print only the verdict line, and no progress"
    )
    run.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="progress on stderr: a live counter on a terminal, a line per part of the run "
        "elsewhere (auto, the default), or none (off)",
    )

    generate = sub.add_parser("generate", help="regenerate the generated vector files")
    generate.add_argument("--out", help="directory to write to (default: the vectors directory)")
    generate.add_argument("--spec-dir")

    check = sub.add_parser("check-vectors", help="validate vector files and their requirement IDs")
    check.add_argument("--vectors-dir")
    check.add_argument("--spec-dir")

    export = sub.add_parser(
        "export",
        help="write the stable part of a report (no times) for the docs' compliance matrix",
    )
    export.add_argument("report")
    export.add_argument("--out", required=True)
    export.add_argument("--name", help="the column name in the matrix (default: the backend)")

    summary = sub.add_parser("summary", help="print the summary of a JSON report again")
    summary.add_argument("report")
    summary.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.command == "run":
        return run(arguments)
    if arguments.command == "generate":
        from .generate import write_all

        spec = Spec.load(arguments.spec_dir)
        for path in write_all(spec, Path(arguments.out) if arguments.out else None):
            print(f"wrote {path}")
        return 0
    if arguments.command == "check-vectors":
        from .checks import check_vector_files

        problems = check_vector_files(
            Spec.load(arguments.spec_dir),
            Path(arguments.vectors_dir) if arguments.vectors_dir else None,
        )
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if arguments.command == "export":
        import json

        data = json.loads(Path(arguments.report).read_text("utf-8"))
        report.write(report.export(data, arguments.name), Path(arguments.out))
        return 0
    if arguments.command == "summary":
        import json

        data = json.loads(Path(arguments.report).read_text("utf-8"))
        print(report.summary(data, verbose=arguments.verbose))
        return report.EXIT_CODES[data["verdict"]]
    return 2


def run(arguments: argparse.Namespace) -> int:
    started = _now()
    spec = Spec.load(arguments.spec_dir)
    protocol = Protocol(spec)
    examples = arguments.max_examples or (
        THOROUGH_EXAMPLES if arguments.thorough else DEFAULT_EXAMPLES
    )
    steps = arguments.steps or (THOROUGH_STEPS if arguments.thorough else DEFAULT_STEPS)
    selected: set[str] | None = None
    if arguments.features:
        selected = {f.strip() for f in arguments.features.split(",") if f.strip()} - {"core"}
        unknown = selected - set(spec.features)
        if unknown:
            print(f"unknown features: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    options: dict[str, Any] = {
        "adapter": arguments.adapter,
        "features": sorted(selected) if selected is not None else None,
        "seed": arguments.seed,
        "max_examples": examples,
        "steps": steps,
        "validate_protocol": arguments.validate_protocol,
        "vectors": not arguments.no_vectors,
        "stateful": not arguments.no_stateful,
        "shrink": not arguments.no_shrink,
    }

    http_mode = None
    if arguments.http:
        from .http_binding import HttpMode

        http_mode = HttpMode.of(arguments.http, arguments.http_token, spec)
        options["http"] = http_mode.url

    def connect() -> Client:
        settings: dict[str, Any] = {
            "timeout": arguments.timeout,
            "protocol": protocol,
            "validate": arguments.validate_protocol,
            "specversion": spec.wire_version,
        }
        client = (
            http_mode.client(arguments.adapter, **settings)
            if http_mode is not None
            else Client(arguments.adapter, **settings)
        )
        client.start()
        return client

    progress = Progress("off" if arguments.quiet else arguments.progress)
    checks: list[CheckResult] = []
    fatal: str | None = None
    handshake: dict[str, Any] = {}
    report_path = Path(arguments.report)
    try:
        client = connect()
    except AdapterError as error:
        fatal = str(error)
        if error.stderr:
            fatal += "\nadapter stderr:\n" + error.stderr[-2000:]
        client = None
    if client is not None:
        handshake = client.handshake
        problems = protocol.check_response("start", {"seq": 0, "result": handshake})
        if problems:
            fatal = f"the start handshake breaks the protocol schema: {problems} (PROTO-003)"
        elif http_mode is not None:
            handshake = http_mode.claim(handshake)
    if client is not None and fatal is None:
        checks.append(
            CheckResult(
                id="handshake",
                kind="protocol",
                status="pass",
                requirements=["VER-002", "PROTO-003"],
                message="the adapter names its implementation, spec version and features",
            )
        )
        claimed = set(handshake.get("features", []))
        capabilities = set(handshake.get("capabilities", []))
        if handshake.get("specversion") != spec.wire_version:
            fatal = (
                f"the adapter implements spec {handshake.get('specversion')}, the suite tests "
                f"{spec.wire_version} (VER-002)"
            )
        else:
            if not arguments.no_vectors:
                directory = Path(arguments.vectors_dir) if arguments.vectors_dir else None
                broken = 0
                chosen = vectors.select(vectors.load(directory), arguments.select)
                progress.vectors_start(len(chosen))
                for vector in chosen:
                    result = vectors.run_vector(client, vector, claimed, capabilities, selected)
                    checks.append(result)
                    progress.vector_done(vector.file, result.status)
                    if result.status != "error":
                        broken = 0
                        continue
                    broken += 1
                    client.kill()
                    if broken >= MAX_BROKEN:
                        fatal = (
                            f"{broken} vectors in a row ended with a broken adapter; the last: "
                            f"{result.message}"
                        )
                        client = None
                        break
                    try:
                        client = connect()
                    except AdapterError as error:
                        fatal = f"the adapter could not be restarted: {error}"
                        client = None
                        break
                progress.vectors_end()
            if http_mode is not None and client is not None and fatal is None:
                checks.extend(http_mode.checks(client))
            if not arguments.no_stateful and fatal is None:
                from .stateful import StatefulOptions, run_stateful

                failures_dir = (
                    Path(arguments.failures_dir)
                    if arguments.failures_dir
                    else report_path.parent / "failures"
                )
                stateful_options = StatefulOptions(
                    seed=arguments.seed,
                    max_examples=examples,
                    steps=steps,
                    features=(claimed & selected) if selected is not None else claimed,
                    capabilities=capabilities,
                    failures_dir=failures_dir,
                    label=_label(handshake),
                    shrink=not arguments.no_shrink,
                    on_example=progress.example,
                )
                progress.stateful_start(examples, steps, arguments.seed)
                started_stateful = time.monotonic()
                result = run_stateful(client, spec, stateful_options, reconnect=connect)
                result.duration_ms = int((time.monotonic() - started_stateful) * 1000)
                progress.stateful_end(result.status)
                checks.append(result)
        if fatal is None and checks and not any(c.status == "error" for c in checks):
            checks.append(_protocol_check(checks, arguments.validate_protocol))
        if client is not None:
            client.close()
    document = report.build(spec, handshake, checks, options, started, _now(), fatal)
    report.write(document, report_path)
    text = report.summary(document, verbose=arguments.verbose)
    if arguments.quiet:
        text = text.splitlines()[-1]
    print(text)
    print(f"Report: {report_path}")
    return report.EXIT_CODES[document["verdict"]]


def _protocol_check(checks: list[CheckResult], validated: bool) -> CheckResult:
    """The protocol rules every exchange of a run that never broke the adapter obeyed.

    The transport checks PROTO-001, PROTO-002 and PROTO-006 on every response and, with
    ``--validate-protocol``, PROTO-004; a violation ends its check as an error instead. The
    stateful suite compares the whole store with the model after each ``reset`` (PROTO-005).
    """
    rules = ["PROTO-001", "PROTO-002", "PROTO-006"]
    if validated:
        rules.append("PROTO-004")
    if any(c.kind == "stateful" and c.status == "pass" for c in checks):
        rules.append("PROTO-005")
    return CheckResult(
        id="protocol",
        kind="protocol",
        status="pass",
        requirements=sorted(rules),
        message="every response came in order, alone on stdout and in time"
        + (", and validated against the protocol schemas" if validated else ""),
    )


def _label(handshake: dict[str, Any]) -> str:
    implementation = handshake.get("implementation", {})
    parts = [implementation.get("name", "adapter"), implementation.get("backend", "")]
    return "-".join(p for p in parts if p)
