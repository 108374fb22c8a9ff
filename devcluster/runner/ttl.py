"""The pod runner's TTL-after-finished controller, which deletes finished Jobs when due.

The TTL-after-finished controller: a finished Job (``Complete`` or ``Failed``) with
``spec.ttlSecondsAfterFinished`` is deleted that many seconds after it finished (the
condition's ``lastTransitionTime``), with ``propagationPolicy: Foreground`` and a uid
precondition, re-reading the Job first, as Kubernetes' controller does."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Mapping
from typing import Any

from devcluster.clock import parse_time
from devcluster.runner.client import ApiClient, ApiRefused, Handler
from devcluster.runner.conditions import is_true
from devcluster.runner.controller import Controller, Tasks


def expires_in(job: Mapping[str, Any], now: datetime.datetime | None = None) -> float | None:
    """Seconds until the Job's TTL runs out (<= 0: now); ``None``: it has none to run."""
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    meta = job.get("metadata") or {}
    if ttl is None or meta.get("deletionTimestamp"):
        return None
    conditions = (job.get("status") or {}).get("conditions") or []
    finished = [
        c
        for c in conditions
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
    ]
    if not finished or not finished[0].get("lastTransitionTime"):
        return None
    at = parse_time(finished[0]["lastTransitionTime"]) + datetime.timedelta(seconds=int(ttl))
    return (at - (now or datetime.datetime.now(tz=datetime.UTC))).total_seconds()


class TtlController(Controller):
    """Watches Jobs; deletes each finished one when its TTL runs out."""

    def __init__(self, client: ApiClient, tasks: Tasks) -> None:
        super().__init__(client, tasks)
        self._timers: dict[str, asyncio.TimerHandle] = {}  # job uid -> its expiry

    def watches(self) -> Mapping[str, Handler]:
        return {"/apis/batch/v1/jobs": self.on_job}

    async def stop(self) -> list[asyncio.Task[Any]]:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        return []

    async def on_job(self, event_type: str, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        timer = self._timers.pop(meta["uid"], None)
        if timer is not None:
            timer.cancel()
        remaining = None if event_type == "DELETED" else expires_in(job)
        if remaining is None:
            return
        loop = asyncio.get_running_loop()
        self._timers[meta["uid"]] = loop.call_later(
            max(remaining, 0.0), lambda: self.tasks.spawn(self._expire(job))
        )

    async def _expire(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        self._timers.pop(meta["uid"], None)
        path = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}"
        fresh = await self.client.request("GET", path)
        if fresh is None or fresh["metadata"]["uid"] != meta["uid"]:
            return
        remaining = expires_in(fresh)
        conditions = (fresh.get("status") or {}).get("conditions")
        if remaining is None or not (
            is_true(conditions, "Complete") or is_true(conditions, "Failed")
        ):
            return
        if remaining > 0:  # the TTL was raised meanwhile
            await self.on_job("MODIFIED", fresh)
            return
        options = {"propagationPolicy": "Foreground", "preconditions": {"uid": meta["uid"]}}
        with contextlib.suppress(ApiRefused):  # another Job of that name by now
            await self.client.delete("Job", meta["namespace"], meta["name"], options)
