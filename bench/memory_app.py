"""The app ``bench/memory.py`` runs under ``conveyor consume``: one no-op handler that, every
``CONVEYOR_BENCH_EVERY`` jobs, notes the process's resident memory in ``CONVEYOR_BENCH_RSS``."""

from __future__ import annotations

import itertools
import os
import time

from conveyor import Conveyor

URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PREFIX = os.environ.get("CONVEYOR_BENCH_PREFIX", "memory_")
EVERY = int(os.environ.get("CONVEYOR_BENCH_EVERY", "100000"))
NOTES = os.environ.get("CONVEYOR_BENCH_RSS", os.devnull)

app = Conveyor(URL, table_prefix=PREFIX)
_done = itertools.count(1)  # next() is atomic under the GIL: the handler threads share it


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def note(jobs: int) -> None:
    with open(NOTES, "a", encoding="ascii") as notes:
        memory = memory_kib()
        notes.write(f"{jobs} {time.time():.3f} {memory['VmRSS']} {memory['VmHWM']}\n")


@app.handler("noop")
def noop() -> None:
    done = next(_done)
    if done == 1 or done % EVERY == 0:
        note(done)
