"""An asyncio event loop in a daemon thread, for the parts of the cluster that run in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An asyncio event loop in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float | None = 30) -> T:
        async def runner() -> T:
            return await factory()

        future: Future[T] = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        return future.result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
