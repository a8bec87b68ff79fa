"""The I/O benchmark's wait alone, with no queue: how many 10 ms waits per second ``slots``
waiters reach on this machine, as 32 threads in ``time.sleep`` or 32 tasks in
``asyncio.sleep`` on one event loop.

No worker can beat the ceiling of its own kind of wait. ``slots / SLEEP_SECONDS`` assumes
each wait lasts exactly its 10 ms; it lasts longer, and for tasks noticeably so: an event
loop waits for its next timer in ``epoll_wait``, whose timeout is whole milliseconds rounded
up, so each wake-up of a loop with many timers comes up to 1 ms late.

    python ceiling.py def 32 9600     # prints one JSON object
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

from settings import SLEEP_SECONDS


def threads(slots: int, waits: int) -> float:
    each = waits // slots

    def wait() -> None:
        for _ in range(each):
            time.sleep(SLEEP_SECONDS)

    started = time.perf_counter()
    pool = [threading.Thread(target=wait) for _ in range(slots)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return each * slots / (time.perf_counter() - started)


def tasks(slots: int, waits: int) -> float:
    each = waits // slots

    async def wait() -> None:
        for _ in range(each):
            await asyncio.sleep(SLEEP_SECONDS)

    async def every() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(wait() for _ in range(slots)))
        return each * slots / (time.perf_counter() - started)

    return asyncio.run(every())


def main() -> None:
    handler, slots, waits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate = (tasks if handler == "async def" else threads)(slots, waits)
    print(json.dumps({"jobs_per_s": round(rate, 1), "jobs": waits}))


if __name__ == "__main__":
    main()
