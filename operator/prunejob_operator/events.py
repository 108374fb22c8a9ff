"""Events on PruneJobs, posted in the background and in order per object.

Events are auxiliary: a reconcile never waits for one, and one that cannot be
posted (after the client's retries) is logged and dropped. A few workers post them
(`WORKERS` requests at most at a time, so a burst of Events never crowds out the Job
and status writes); each object's Events go through the same worker, in the order
they were recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from dataclasses import dataclass

from prunejob_operator.kubeapi import ApiError, KubeApi, ObjectRef
from prunejob_operator.tasks import cancel_and_wait

LOG = logging.getLogger("prunejob_operator")
WORKERS = 4


@dataclass(frozen=True)
class _Event:
    ref: ObjectRef
    type: str
    reason: str
    message: str


class EventRecorder:
    def __init__(self, api: KubeApi, *, workers: int = WORKERS) -> None:
        self.api = api
        self._queues: list[asyncio.Queue[_Event]] = [asyncio.Queue() for _ in range(workers)]
        self._workers: list[asyncio.Task[None]] = []
        self._pending = 0

    def record(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        """Queue an Event (on the event loop); it is posted after the object's earlier ones."""
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [loop.create_task(self._work(queue)) for queue in self._queues]
        key = (ref.uid or f"{ref.namespace}/{ref.name}").encode()
        shard = self._queues[zlib.crc32(key) % len(self._queues)]
        shard.put_nowait(_Event(ref, type, reason, message))
        self._pending += 1

    async def _work(self, queue: asyncio.Queue[_Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self.api.emit_event(
                    event.ref, type=event.type, reason=event.reason, message=event.message
                )
            except ApiError as err:
                ref = event.ref
                LOG.warning(
                    "Event %s on %s/%s not posted: %s", event.reason, ref.namespace, ref.name, err
                )
            finally:
                self._pending -= 1
                queue.task_done()

    def pending(self) -> int:
        """Events recorded and not yet posted (or given up)."""
        return self._pending

    async def drain(self, timeout: float | None = None) -> None:
        """Post what is queued (for at most `timeout` seconds), then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), timeout)
        for error in await cancel_and_wait(self._workers):
            LOG.error("an Event worker had failed: %r", error)
        self._workers = []
