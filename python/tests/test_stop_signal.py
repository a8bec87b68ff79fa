"""A stop signal ends a worker's idle wait at once, wherever in that wait it arrives."""

from __future__ import annotations

import signal
import sys
import threading
import time

from conveyor import Conveyor

PROMPT = 3.0  # seconds from the signal to the worker's return; the idle wait lasts 30


class _SignalAfterTheLook(threading.Event):
    """The worker's stop flag, answering "not set" to the idle wait's look once and then
    delivering SIGTERM before the worker waits: a signal that arrives between the look and
    the wait, the window a real one hits by chance."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True
        self.signalled_at = 0.0  # time.monotonic() when the signal came

    def is_set(self) -> bool:
        seen = super().is_set()
        if self.armed and not seen and sys._getframe(1).f_code.co_name == "_wait":
            self.armed = False
            self.signalled_at = time.monotonic()
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler), "run() installs its handler before it waits"
            handler(signal.SIGTERM, None)  # as Python runs a handler: in the main thread
        return seen


def test_a_sigterm_between_the_idle_look_and_the_wait_stops_the_worker_at_once(
    app: Conveyor,
) -> None:
    worker = app.worker(idle_delay=30, handle_signals=True, presence_every=None)
    late = _SignalAfterTheLook()
    worker._stop = late  # type: ignore[attr-defined]
    stats = worker.run()
    assert not late.armed, "the idle wait never looked at the stop flag"
    assert stats.stop_reason.startswith("received SIGTERM")
    assert time.monotonic() - late.signalled_at < PROMPT


def test_conveyor_consume_s_handler_stops_an_idle_worker_at_once_too(app: Conveyor) -> None:
    """`conveyor consume` installs its own handler (a second signal hurries the stop): the
    same window, the same prompt stop."""
    from conveyor.cli.commands.worker import _stop_on_signals

    worker = app.worker(idle_delay=30, handle_signals=False, presence_every=None)
    late = _SignalAfterTheLook()
    worker._stop = late  # type: ignore[attr-defined]
    restore = _stop_on_signals(worker)
    try:
        stats = worker.run()
    finally:
        restore()
    assert not late.armed, "the idle wait never looked at the stop flag"
    assert stats.stop_reason.startswith("received SIGTERM")
    assert time.monotonic() - late.signalled_at < PROMPT
