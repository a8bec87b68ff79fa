"""Progress while a run goes on, on stderr so that stdout keeps only the summary.

On a terminal, one line rewrites itself: the vector file and a counter, then the stateful
example. Elsewhere (a CI log, a pipe) it prints one line per part of the run as the part ends,
so a log gains a few lines, not hundreds. ``--quiet`` or ``--progress off`` silence it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MODES = ("auto", "live", "lines", "off")


class Progress:
    """Counts the vectors and stateful examples of a run and shows how far it got."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "live" if self.stream.isatty() else "lines"
        self.mode = mode
        self.started = time.monotonic()
        self.counts: dict[str, int] = {}
        self.total = 0
        self.done = 0
        self.examples = 0
        self.max_examples = 0
        self._live = False

    # -- vectors --------------------------------------------------------------------------

    def vectors_start(self, total: int) -> None:
        self.total, self.done, self.counts = total, 0, {}
        self.started = time.monotonic()

    def vector_done(self, file: str, status: str) -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        failed = self.counts.get("fail", 0) + self.counts.get("error", 0)
        self._show(
            f"vectors {self.done}/{self.total}  {file}" + (f"  ({failed} failed)" if failed else "")
        )

    def vectors_end(self) -> None:
        counts = ", ".join(
            f"{self.counts[s]} {word}"
            for s, word in (("pass", "passed"), ("fail", "failed"), ("skip", "skipped"))
            if self.counts.get(s)
        )
        errored = self.counts.get("error", 0)
        self._line(
            f"vectors: {self.done} in {self._elapsed()}: {counts or 'none'}"
            + (f", {errored} errored" if errored else "")
        )

    # -- stateful suite ---------------------------------------------------------------------

    def stateful_start(self, examples: int, steps: int, seed: int) -> None:
        self.examples, self.max_examples = 0, examples
        self.started = time.monotonic()
        if self.mode == "lines":
            self._line(f"stateful: up to {examples} examples of {steps} steps, seed {seed} ...")

    def example(self, count: int) -> None:
        self.examples = count
        if count <= self.max_examples:
            self._show(f"stateful example {count}/{self.max_examples}")
        else:
            self._show(f"stateful: shrinking a failure, example {count}")

    def stateful_end(self, status: str) -> None:
        word = {"pass": "passed", "fail": "failed", "error": "broke the adapter"}.get(
            status, status
        )
        self._line(f"stateful: {word} after {self.examples} examples in {self._elapsed()}")

    # -- output -------------------------------------------------------------------------------

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f} s"

    def _show(self, text: str) -> None:
        """A live line that the next one replaces; nothing outside a terminal."""
        if self.mode != "live":
            return
        self.stream.write("\r\x1b[2K" + text[:100])
        self.stream.flush()
        self._live = True

    def _line(self, text: str) -> None:
        if self.mode == "off":
            return
        if self._live:
            self.stream.write("\r\x1b[2K")
            self._live = False
        self.stream.write(text + "\n")
        self.stream.flush()
