"""The work queue: one run per key at a time, retries with exponential backoff.

`run(key, work)` runs `work` now unless a run of `key` is in progress; then it marks
the key dirty and the running one goes round once more when it ends (so a burst of
triggers costs at most one extra run, and the last trigger is always seen). A run
that raises is retried after a delay that grows with the key's consecutive failures
(`RETRY_DELAYS`, the last one repeating); a success resets the count. `later(key,
delay, work)` runs it once more after `delay` (a wait with a deadline; one pending per
key, the earliest kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from prunejob_operator.tasks import cancel_and_wait

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

K = TypeVar("K", bound=Hashable)
Work = Callable[[], Awaitable[None]]


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        delays: tuple[float, ...] = RETRY_DELAYS,
        on_failure: Callable[[K, float, Exception], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`on_failure(key, delay, error)` hears of every failed run before its retry."""
        self.delays = delays
        self._on_failure = on_failure
        self._sleep = sleep
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._waiting: set[asyncio.Task[None]] = set()
        self._later: dict[K, tuple[float, asyncio.Task[None]]] = {}

    async def run(self, key: K, work: Work) -> None:
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            while True:
                self._dirty.discard(key)
                try:
                    await work()
                    self._failures.pop(key, None)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    self._retry_later(key, work, err)
                if key not in self._dirty:
                    break
        finally:
            self._running.discard(key)

    def failures(self, key: K) -> int:
        """Consecutive failed runs of `key` (0 after a success)."""
        return self._failures.get(key, 0)

    def busy(self) -> bool:
        """Whether a run, a retry or a later run is pending."""
        return bool(self._running or self._waiting)

    def later(self, key: K, delay: float, work: Work) -> None:
        """Run `work` for `key` after `delay` seconds (as `run` does: after the run in
        progress, if any). One pending per key; a later one due first replaces it."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._later.get(key)
        if pending is not None and not pending[1].done():
            if pending[0] <= due:
                return
            pending[1].cancel()

        async def then() -> None:
            await self._sleep(delay)
            current = self._later.get(key)
            if current is not None and current[1] is task:
                del self._later[key]  # from now on, a new later() is a run of its own
            await self.run(key, work)

        task = self._spawn(then())
        self._later[key] = (due, task)

    def _retry_later(self, key: K, work: Work, err: Exception) -> None:
        attempt = self._failures.get(key, 0)
        self._failures[key] = attempt + 1
        delay = self.delays[min(attempt, len(self.delays) - 1)]
        if self._on_failure is not None:
            self._on_failure(key, delay, err)

        async def again() -> None:
            await self._sleep(delay)
            await self.run(key, work)

        self._spawn(again())

    def _spawn(self, waiting: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that waits to run (a retry, a later run); aclose cancels it."""
        task = asyncio.get_running_loop().create_task(waiting)
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return task

    async def aclose(self) -> None:
        """Cancel the pending retries and `later` runs (at shutdown)."""
        await cancel_and_wait(list(self._waiting))
        self._later.clear()
