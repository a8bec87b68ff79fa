"""A pool of daemon threads for sync handlers.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so a
handler that cannot be stopped (blocked on a socket with no timeout) would keep a worker
process alive for ever after its grace period. These threads are daemons: the process exits
once the worker has handed the job back, and the thread ends with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None
_Task = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonThreads:
    """Up to ``size`` daemon threads, started as work arrives; ``on_exit`` runs in each
    thread as it ends (to return its database connection)."""

    def __init__(self, size: int, name: str, on_exit: Callable[[], None] | None = None) -> None:
        self._size = size
        self._name = name
        self._on_exit = on_exit
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # an idle thread takes it
            elif len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._tasks.put((future, function, args))
        return future

    def _serve(self) -> None:
        try:
            while True:
                task = self._tasks.get()
                if task is _STOP:
                    return
                future, function, args = task
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(*args))
                    except BaseException as error:
                        future.set_exception(error)
                with self._lock:
                    self._idle += 1
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def shutdown(self) -> None:
        """Let every thread end once it is idle; never waits for a running handler."""
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._tasks.put(_STOP)
