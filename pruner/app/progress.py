"""Progress lines with timings on stderr, and the timings themselves for the report."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Announces each pipeline step on `stream` and records how long it took.

    `timings` maps step name -> seconds (rounded to ms), in the order the steps ran;
    it goes into the JSON report as is.
    """

    def __init__(self, prog: str, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.prog = prog
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.prog}: {message}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        # Warnings are shown even when quiet: they change what the user gets.
        print(f"{self.prog}: warning: {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        """Time the body as step `name`; a failing body records nothing."""
        self.say(f"{name} {detail}".rstrip() + " ...")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.timings[name] = round(elapsed, 3)
        self.say(f"{name} done in {elapsed:.2f} s")

    def elapsed(self) -> float:
        return time.perf_counter() - self._started
