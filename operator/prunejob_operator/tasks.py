"""Stopping asyncio tasks: cancel, then wait, without swallowing the stopper's own cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> list[BaseException]:
    """Cancel `tasks` (those already done stay as they are) and wait until all have
    ended; returns what they raised other than their cancellation. Only a cancel of the
    caller itself is raised: an `await task` under suppress(CancelledError) would swallow
    that one too, and the caller would go on as if it had not been stopped."""
    waiting = list(tasks)
    for task in waiting:
        task.cancel()
    if waiting:
        await asyncio.wait(waiting)
    return [
        error
        for task in waiting
        if not task.cancelled() and (error := task.exception()) is not None
    ]
