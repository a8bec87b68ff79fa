"""Conveyor's fault suite: ``just faults`` (all scenarios) or ``just faults --short``.

Each scenario prints one line: published / executed / lost / duplicated inside the documented
window (a run that started at least one lease after the run before it) / duplicated outside
it / overlapping runs / worker crashes. The suite fails on any loss, out-of-window duplicate,
overlap or crash. Loopback only; every process it starts (workers, its own RabbitMQ node) is
stopped by pid; shared services keep running throughout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

FAULTS = Path(__file__).resolve().parent
sys.path[:0] = [str(FAULTS), str(FAULTS.parent / "python")]

from tests.broker.node import RabbitNode, node_problem

import poison  # noqa: F401 -- registers the bad-input scenarios
from harness import Skip, drop_mariadb_user, service_problem
from scenarios import SCENARIOS, Context, Outcome, Scenario


class Node:
    """The suite's private RabbitMQ node, booted on first use and ended by pid at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.node: RabbitNode | None = None

    def __call__(self) -> RabbitNode:
        if self.node is None:
            self.node = RabbitNode(self.directory / "rabbitmq")
            self.node.start()
        elif self.node.server is None or self.node.server.poll() is not None:
            self.node.start()  # a scenario killed it and failed before restarting it
        return self.node

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


def missing(needs: tuple[str, ...], cache: dict[str, str | None]) -> str | None:
    for need in needs:
        if need not in cache:
            cache[need] = node_problem() if need == "rabbitmq" else service_problem(need)
        if cache[need] is not None:
            return cache[need]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few representative scenarios")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run the scenarios whose name contains NAME (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FAULTS_SEED", "1")))
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scenario directories")
    args = parser.parse_args(argv)  # fmt: skip

    chosen: list[Scenario] = [
        s
        for s in SCENARIOS
        if (not args.short or s.short) and (not args.only or any(o in s.name for o in args.only))
    ]
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:34} {'short ' if s.short else '      '}{' '.join(s.needs)}")
        return 0

    # The runner publishes through outages on purpose: its own warnings (broker_failed
    # publishes, pika's failed connection attempts) would bury the one line per scenario.
    logging.getLogger("conveyor").setLevel(logging.ERROR)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    directory = Path(tempfile.mkdtemp(prefix="conveyor-faults-"))
    node = Node(directory)
    cache: dict[str, str | None] = {}
    results: list[dict[str, object]] = []
    failed = 0
    began = time.monotonic()
    print(
        f"fault suite: {len(chosen)} scenarios, seed {args.seed}, in {directory}",
        flush=True,
    )
    try:
        for s in chosen:
            problem = missing(s.needs, cache)
            if problem is not None:
                print(f"SKIP {s.name}: {problem}", flush=True)
                results.append({"name": s.name, "skipped": problem})
                continue
            started = time.monotonic()
            ctx = Context(directory, node, seed=args.seed, short=args.short)
            try:
                outcome: Outcome = s.body(ctx)
            except Skip as reason:
                print(f"SKIP {s.name}: {reason}", flush=True)
                results.append({"name": s.name, "skipped": str(reason)})
                continue
            except Exception:
                failed += 1
                print(
                    f"FAIL {s.name}: the scenario raised\n{traceback.format_exc()}",
                    flush=True,
                )
                results.append({"name": s.name, "error": traceback.format_exc()[-2000:]})
                continue
            took = time.monotonic() - started
            verdict = "FAIL" if outcome.failed else "ok  "
            failed += outcome.failed
            notes = "; ".join(outcome.notes)
            print(
                f"{verdict} {s.name:30} {outcome.tally.line()} [{took:.1f} s] {notes}",
                flush=True,
            )
            for problem_text in outcome.problems:
                print(f"     problem: {problem_text}", flush=True)
            results.append(
                {"name": s.name, "seconds": round(took, 1), "notes": outcome.notes,
                 "problems": outcome.problems, **vars(outcome.tally)}
            )  # fmt: skip
    finally:
        node.stop()
        if "mariadb" in cache and cache["mariadb"] is None:
            drop_mariadb_user()
        if not args.keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    total = time.monotonic() - began
    print(
        f"fault suite: {len(chosen)} scenarios, {failed} failed, {total:.0f} s",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
