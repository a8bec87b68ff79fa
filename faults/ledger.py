"""What happened to a scenario's jobs, from the runs file and the store.

A job runs more than once only when a lease lapses (LEASE-003): the worker holding it was
killed, paused, cut off or failed to record its outcome in time. Such an extra run starts at
least one lease after the run before it: the documented duplicate window. An extra run that
starts sooner is a defect: *overlapping* when the run before it was still going (no ``done``
yet and its process not killed), else *duplicated outside* the window.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# Timestamps come from different processes' clocks and the lease is measured by the store's
# millisecond clock: a small tolerance keeps rounding from counting as a defect.
TOLERANCE = 0.05


@dataclass(frozen=True)
class Run:
    n: int
    pid: int
    started: float
    ended: float | None  # None: no ``done`` line (the process was killed or cut off)


@dataclass
class Tally:
    published: int = 0
    executed: int = 0
    lost: int = 0
    in_window: int = 0
    outside: int = 0
    overlapping: int = 0
    crashes: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.outside or self.overlapping or self.crashes)

    def line(self) -> str:
        return (
            f"published {self.published} / executed {self.executed} / lost {self.lost} / "
            f"dup in window {self.in_window} / dup outside {self.outside} / "
            f"overlapping {self.overlapping} / crashes {self.crashes}"
        )


def runs(path: Path) -> dict[int, list[Run]]:
    """Every run of every job, in start order (a ``done`` closes the same pid's open run)."""
    opened: dict[tuple[int, int], list[float]] = defaultdict(list)
    closed: list[Run] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, n, pid, moment = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
        if kind == "start":
            opened[(n, pid)].append(moment)
        elif kind == "done" and opened[(n, pid)]:
            closed.append(Run(n, pid, opened[(n, pid)].pop(0), moment))
    for (n, pid), starts in opened.items():
        closed.extend(Run(n, pid, started, None) for started in starts)
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in sorted(closed, key=lambda r: r.started):
        by_job[run.n].append(run)
    return by_job


def tally(
    path: Path,
    published: set[int],
    finished: set[int],
    lease: float,
    killed: dict[int, float],
) -> Tally:
    """Count loss and duplicates. ``finished``: jobs the store holds finished; ``killed``:
    pid -> when the suite killed (or cut off) that worker."""
    by_job = runs(path)
    result = Tally(published=len(published))
    done = {n for n, job_runs in by_job.items() if any(r.ended is not None for r in job_runs)}
    result.executed = len(published & finished & done)
    result.lost = len(published - (finished & done))
    for job_runs in by_job.values():
        for before, after in itertools.pairwise(job_runs):
            if after.started - before.started >= lease - TOLERANCE:
                result.in_window += 1
                continue
            still_running = (before.ended is None or before.ended > after.started) and not (
                before.pid in killed and killed[before.pid] <= after.started
            )
            if still_running:
                result.overlapping += 1
            else:
                result.outside += 1
    return result


def overlaps_in_group(path: Path, members: list[int]) -> int:
    """Runs of a serial group's jobs that overlapped another member's run (SERIAL: one at a
    time), ignoring runs whose process was killed (they have no end)."""
    by_job = runs(path)
    spans = sorted(
        (r.started, r.ended) for n in members for r in by_job.get(n, []) if r.ended is not None
    )
    return sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])


def group_order_breaks(path: Path, members: list[int]) -> int:
    """Members whose first completed run ended before an earlier member's did."""
    by_job = runs(path)
    ends: list[float] = []
    for n in members:
        completed = [r.ended for r in by_job.get(n, []) if r.ended is not None]
        if completed:
            ends.append(min(completed))
    return sum(1 for a, b in itertools.pairwise(ends) if b < a)
