"""Times jobs the same way in every system: each handler calls :func:`started` and :func:`ended`.

Each worker process keeps, in a small memory-mapped file of its own under ``BENCH_PROBE_DIR``,
how many jobs it ended, when its first job started and when its last job ended (wall clock).
Latency jobs carry their publish time; their start is appended as ``published started`` to a
per-process text file. The runner reads these files: it never asks the queue how far it got,
so every system is timed identically (from the first start to the last end) and the probe
costs each one the same (a lock, a clock read and a 24-byte write per job).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from pathlib import Path
from typing import IO

LAYOUT = struct.Struct("<qdd")  # jobs ended, first start, last end (time.time())


class _Probe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.map: mmap.mmap | None = None
        self.samples: IO[str] | None = None

    def _open(self) -> None:
        # Forked workers (Celery prefork, Dramatiq) inherit the module: one file per process.
        directory = Path(os.environ["BENCH_PROBE_DIR"])
        self.pid = os.getpid()
        fd = os.open(directory / f"jobs-{self.pid}.bin", os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, LAYOUT.size)
        self.map = mmap.mmap(fd, LAYOUT.size)
        os.close(fd)
        self.samples = open(directory / f"latency-{self.pid}.txt", "a", buffering=1)  # noqa: SIM115
        self.count, self.first, self.last = 0, 0.0, 0.0

    def started(self, published: float | None) -> None:
        now = time.time()
        with self.lock:
            if self.pid != os.getpid():
                self._open()
            if not self.first or now < self.first:
                self.first = now
            if published is not None and self.samples is not None:
                self.samples.write(f"{published!r} {now!r}\n")

    def ended(self) -> None:
        now = time.time()
        with self.lock:
            self.count += 1
            self.last = max(self.last, now)
            assert self.map is not None
            LAYOUT.pack_into(self.map, 0, self.count, self.first, self.last)


_probe = _Probe()
started = _probe.started
ended = _probe.ended


def read(directory: Path) -> tuple[int, float, float]:
    """Jobs ended in every process, the earliest start and the latest end."""
    count, first, last = 0, 0.0, 0.0
    for path in directory.glob("jobs-*.bin"):
        data = path.read_bytes()
        if len(data) < LAYOUT.size:
            continue
        jobs, start, end = LAYOUT.unpack_from(data)
        if not jobs:
            continue
        count += jobs
        first = start if not first else min(first, start)
        last = max(last, end)
    return count, first, last


def latencies(directory: Path) -> list[float]:
    """Milliseconds from publish to start of every latency job."""
    samples: list[float] = []
    for path in directory.glob("latency-*.txt"):
        for line in path.read_text().splitlines():
            published, start = line.split()
            samples.append((float(start) - float(published)) * 1000)
    return sorted(samples)
