"""The base of every pod-runner component: `Controller` and the `Tasks` it spawns into.

The skeleton every pod-runner component shares: a controller per resource kind that
names the API paths it watches and reacts to their events, and the task set it spawns into.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from devcluster.runner.client import ApiClient, Handler

log = logging.getLogger("devcluster.podrunner")


class Tasks:
    """Background tasks that are logged when they fail and cancelled together on stop."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod runner task failed", exc_info=task.exception())

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every task; returns them, to be awaited."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        return tasks


class Controller:
    """One resource kind's controller: reacts to watch events, writes through the client."""

    def __init__(self, client: ApiClient, tasks: Tasks) -> None:
        self.client = client
        self.tasks = tasks

    def watches(self) -> Mapping[str, Handler]:
        """API path -> handler of its watch events (ADDED/MODIFIED/DELETED, object)."""
        return {}

    async def stop(self) -> list[asyncio.Task[Any]]:
        """Stop the controller's own work; returns tasks still to be awaited."""
        return []
