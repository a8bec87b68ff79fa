"""A stateful property test of the worker runtime: random publishes, drained by workers with
many jobs at once (threads and async tasks mixed), checked against the spec's rules.

Every handler records when it starts and ends; after each drain the records must show: every
job ran once, no two jobs of a serial group overlapped and they started in (priority,
sequence) order (GROUP-001/002), and unique work ran once per identifier (UNIQ-002/003).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor import Conveyor


@dataclass
class Run:
    label: str
    started: int
    ended: int
    drain: int


class Recorder:
    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.lock = threading.Lock()
        self.drain = 0

    def record(self, label: str, started: int) -> None:
        with self.lock:
            self.runs.append(Run(label, started, time.monotonic_ns(), self.drain))


class ConcurrentWorkers(RuleBasedStateMachine):
    """Publishes plain, grouped and unique jobs; drains them with concurrent workers."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = TemporaryDirectory()
        self.app: Conveyor | None = None
        self.recorder = Recorder()
        # label, serial group, priority, unique identifier
        self.published: list[tuple[str, str | None, int, str | None]] = []
        self.count = 0

    @initialize(backend=st.sampled_from(["memory", "sqlite"]))
    def start(self, backend: str) -> None:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(self.directory.name)}/s.db"
        self.app = app = Conveyor(url)
        recorder = self.recorder

        def work(label: str) -> None:
            started = time.monotonic_ns()
            time.sleep(0.001)  # a little work, so that overlaps would show
            recorder.record(label, started)

        async def awork(label: str) -> None:
            started = time.monotonic_ns()
            await asyncio.sleep(0.001)
            recorder.record(label, started)

        app.register("work", work)
        app.register("awork", awork)

    def _publish(self, kind: str, group: str | None, priority: int, unique: str | None) -> None:
        assert self.app is not None
        self.count += 1
        label = f"j{self.count}"
        options: dict[str, object] = {"priority": priority}
        if group is not None:
            options["serial_group"] = group
        if unique is not None:
            options.update(identifier=unique, unique=True)
        self.app.publish(kind, {"label": label}, **options)
        self.published.append((label, group, priority, unique))

    @rule(
        kind=st.sampled_from(["work", "awork"]),
        group=st.sampled_from([None, "g", "h"]),
        priority=st.integers(0, 2),
    )
    def publish(self, kind: str, group: str | None, priority: int) -> None:
        self._publish(kind, group, priority, None)

    @rule(kind=st.sampled_from(["work", "awork"]), identifier=st.sampled_from(["u1", "u2"]))
    def publish_unique(self, kind: str, identifier: str) -> None:
        self._publish(kind, None, 1, identifier)

    @rule(
        concurrency=st.sampled_from([1, 2, 8]),
        batch=st.sampled_from([None, 1, 3]),
        workers=st.integers(1, 2),
    )
    def drain(self, concurrency: int, batch: int | None, workers: int) -> None:
        assert self.app is not None
        app = self.app
        self.recorder.drain += 1
        runs = [
            app.worker(
                concurrency=concurrency,
                batch_size=batch,
                stop_when_empty=True,
                handle_signals=False,
            )
            for _ in range(workers)
        ]
        threads = [threading.Thread(target=worker.run) for worker in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a draining worker did not return"
        app.process()  # whatever one worker left when the other held a group's head

    @invariant()
    def every_rule_holds(self) -> None:
        if self.app is None:
            return
        runs = list(self.recorder.runs)
        labels = [run.label for run in runs]
        assert len(labels) == len(set(labels)), "a job ran twice"
        states = {job.requests[0].payload["label"]: job.state for job in self.app.jobs(limit=1000)}
        for label in labels:
            assert states[label] == "finished", f"{label} ran but is {states[label]}"
        for identifier in ("u1", "u2"):
            uniques = [label for label, _, _, u in self.published if u == identifier]
            assert sum(1 for label in uniques if label in states and label in labels) <= 1, (
                "unique work ran twice"
            )
        by_label = {run.label: run for run in runs}
        for group in ("g", "h"):
            members = [
                (run, (priority, number))
                for number, (label, g, priority, _) in enumerate(self.published)
                if g == group and (run := by_label.get(label)) is not None
            ]
            in_start_order = sorted(members, key=lambda member: member[0].started)
            for (earlier, _), (later, _) in itertools.pairwise(in_start_order):
                assert earlier.ended <= later.started, f"group {group} ran two jobs at once"
            # Within one drain (the jobs published before it), a group starts its jobs in
            # (priority, sequence) order.
            for drain in {run.drain for run, _ in members}:
                of_drain = [key for run, key in in_start_order if run.drain == drain]
                assert of_drain == sorted(of_drain), f"group {group} ran out of order"

    def teardown(self) -> None:
        if self.app is not None:
            self.app.close()
        self.directory.cleanup()


ConcurrentWorkers.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None
)
TestConcurrentWorkers = ConcurrentWorkers.TestCase
