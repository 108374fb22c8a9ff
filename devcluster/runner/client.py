"""The pod runner's HTTP client to the API server (`ApiClient`), with list-then-watch loops.

The pod runner's HTTP client to the API server: JSON requests, status patches, Events,
and list-then-watch loops (an informer without a cache) that relist on 410 or errors.

The runner talks to the API only through this client, as a real kubelet and Job
controller do; it never reaches into the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from devcluster.clock import utc_now

log = logging.getLogger("devcluster.podrunner")

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
MERGE_PATCH = "application/merge-patch+json"

# The kinds the runner writes: (apiVersion, plural, the component its Events come from).
KINDS: Mapping[str, tuple[str, str, str]] = {
    "Pod": ("v1", "pods", "kubelet"),
    "Job": ("batch/v1", "jobs", "job-controller"),
}


RETRIES = 20
RETRIED_STATUSES = (429, 500, 503)


class ObjectGone(Exception):
    """The object was deleted while we were working on it."""


class ApiRefused(RuntimeError):
    """The API server answered an error (a 4xx other than 404, or a 5xx after retries)."""

    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {text[:300]}")
        self.status = status
        try:
            self.message = str(json.loads(text).get("message", text))
        except ValueError:
            self.message = text


def collection_path(kind: str, namespace: str) -> str:
    api_version, plural, _ = KINDS[kind]
    prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(kind: str, namespace: str, name: str, subresource: str = "") -> str:
    path = f"{collection_path(kind, namespace)}/{name}"
    return f"{path}/{subresource}" if subresource else path


class ApiClient:
    """One aiohttp session to the API server; ``open()`` inside the loop, ``close()`` after."""

    def __init__(self, url: str, *, retry_interval: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.retry_interval = retry_interval
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """JSON request; ``None`` on 404 (and on 409 for creations). Retried while the server
        cannot be reached or answers 429/500/503 (it did nothing then); ``ApiRefused`` for
        other errors."""
        assert self._session is not None
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(RETRIES + 1):
            try:
                async with self._session.request(
                    method, self.url + path, data=data, headers={"Content-Type": content_type}
                ) as response:
                    if response.status == 404:
                        return None
                    if response.status == 409 and method == "POST":
                        return None
                    if response.status in RETRIED_STATUSES and attempt < RETRIES:
                        delay = float(response.headers.get("Retry-After") or self.retry_interval)
                        await asyncio.sleep(min(delay, 5.0))
                        continue
                    if response.status >= 400:
                        text = await response.text()
                        raise ApiRefused(method, path, response.status, text)
                    result: dict[str, Any] = await response.json()
                    return result
            except aiohttp.ClientConnectorError:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(self.retry_interval)
        raise AssertionError("unreachable")

    async def read(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        """A core/v1 object (Secret, ConfigMap), or ``None`` if it does not exist."""
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")

    async def patch(self, kind: str, obj: Mapping[str, Any], patch: Any) -> dict[str, Any]:
        """Merge-patch the object's main URL; ``ObjectGone`` if it was deleted."""
        meta = obj["metadata"]
        path = object_path(kind, meta["namespace"], meta["name"])
        result = await self.request("PATCH", path, patch, MERGE_PATCH)
        if result is None:
            raise ObjectGone(meta["name"])
        return result

    async def patch_status(self, kind: str, obj: Mapping[str, Any], status: Any) -> dict[str, Any]:
        """Merge-patch the status subresource; ``ObjectGone`` if the object was deleted."""
        meta = obj["metadata"]
        path = object_path(kind, meta["namespace"], meta["name"], "status")
        result = await self.request("PATCH", path, {"status": status}, MERGE_PATCH)
        if result is None:
            raise ObjectGone(meta["name"])
        return result

    async def delete(
        self, kind: str, namespace: str, name: str, options: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """DELETE with these DeleteOptions; the object as the API answered (terminating, or
        as it was when it went), ``None`` if it was not there."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **(options or {})}
        return await self.request("DELETE", object_path(kind, namespace, name), body)

    async def create(self, kind: str, namespace: str, body: Any) -> dict[str, Any] | None:
        """Create in the namespace; ``None`` when it already exists or the namespace is gone."""
        return await self.request("POST", collection_path(kind, namespace), body)

    async def event(
        self, obj: Mapping[str, Any], kind: str, reason: str, message: str, warning: bool = False
    ) -> None:
        """Record an Event about the object (best effort, as components do)."""
        meta = obj["metadata"]
        api_version, _, component = KINDS[kind]
        now = utc_now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": component},
            "reportingComponent": "devcluster",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body)
        except Exception as exc:  # events are best effort
            log.debug("event %s for %s not written: %s", reason, meta["name"], exc)

    async def watch(self, path: str, handler: Handler, ready: asyncio.Event | None = None) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 or errors."""
        assert self._session is not None
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    listing = await self.request("GET", path)
                    assert listing is not None
                    for item in listing["items"]:
                        await handler("ADDED", item)
                    resource_version = listing["metadata"]["resourceVersion"]
                    if ready is not None:
                        ready.set()
                params = {
                    "watch": "true",
                    "resourceVersion": resource_version,
                    "timeoutSeconds": "300",
                }
                async with self._session.get(self.url + path, params=params) as response:
                    while True:
                        line = await response.content.readline()
                        if not line:
                            break
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            resource_version = None
                            break
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        await handler(event["type"], event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch %s failed (%s); retrying", path, exc)
                await asyncio.sleep(self.retry_interval)
