"""Events on PruneJobs, posted in the background and in order per object.

Events are auxiliary: a reconcile never waits for one, and one that cannot be
posted (after the client's retries) is logged and dropped. Events of one object are
posted one after the other, in the order they were recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prunejob_operator.kubeapi import ApiError, KubeApi, ObjectRef

LOG = logging.getLogger("prunejob_operator")


class EventRecorder:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._last: dict[str, asyncio.Task[None]] = {}  # per object: its newest post

    def record(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        """Queue an Event (from the event loop); it is posted after the object's earlier ones."""
        key = ref.uid or f"{ref.namespace}/{ref.name}"
        before = self._last.get(key)
        task = asyncio.get_running_loop().create_task(
            self._post(before, ref, type=type, reason=reason, message=message)
        )
        self._last[key] = task
        task.add_done_callback(lambda done: self._done(key, done))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._last.get(key) is task:
            del self._last[key]

    async def _post(
        self,
        before: asyncio.Task[None] | None,
        ref: ObjectRef,
        *,
        type: str,
        reason: str,
        message: str,
    ) -> None:
        if before is not None:
            await asyncio.wait({before})  # its outcome is its own; ours is the order
        try:
            await self.api.emit_event(ref, type=type, reason=reason, message=message)
        except ApiError as err:
            LOG.warning("Event %s on %s/%s not posted: %s", reason, ref.namespace, ref.name, err)

    def pending(self) -> int:
        """Objects with Events still being posted."""
        return len(self._last)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every recorded Event is posted (or `timeout` passes: then cancel)."""
        tasks = list(self._last.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
