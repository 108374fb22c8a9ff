"""The API server's watch streams: the backlog, then live events, filtered, one per line.

Watch streams: the backlog from a resourceVersion (or the current objects), then live
events, filtered by namespace, name and selectors; 410 Gone for a compacted version.

One JSON event per line, as the API server writes them; objects entering or leaving a
filtered watch's selection arrive as ADDED/DELETED. A watch that asks for tables
(``Accept: ...;as=Table``, as ``kubectl get -w`` does) gets each event's object as a
one-row Table with the type's columns, as a list would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web

from devcluster.apiserver.errors import BadRequest, Gone
from devcluster.apiserver.faults import WatchFault, abort
from devcluster.apiserver.resources import ResourceType
from devcluster.apiserver.selectors import parse_field_selector, parse_label_selector
from devcluster.apiserver.store import END_OF_WATCH, Store, WatchEvent
from devcluster.apiserver.tables import render_table, wants_table

Matcher = Callable[[Mapping[str, Any] | None], bool]


def translate(event: WatchEvent, matches: Matcher) -> tuple[str, dict[str, Any]] | None:
    """What a filtered watcher sees: objects entering/leaving the filter are ADDED/DELETED."""
    now, before = matches(event.obj), matches(event.old)
    if event.type == "ADDED":
        return ("ADDED", event.obj) if now else None
    if event.type == "DELETED":
        return ("DELETED", event.obj) if now or before else None
    if now and before:
        return ("MODIFIED", event.obj)
    if now:
        return ("ADDED", event.obj)
    if before:
        return ("DELETED", event.obj)
    return None


def matcher(ns: str | None, name: str | None, query: Mapping[str, str]) -> Matcher:
    labels = parse_label_selector(query.get("labelSelector"))
    fields = parse_field_selector(query.get("fieldSelector"))

    def matches(obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        return (
            (ns is None or meta.get("namespace") == ns)
            and (name is None or meta.get("name") == name)
            and labels(obj)
            and fields(obj)
        )

    return matches


def _timeout(query: Mapping[str, str]) -> float | None:
    if not query.get("timeoutSeconds"):
        return None
    try:
        return float(query["timeoutSeconds"])
    except ValueError as exc:
        raise BadRequest(f"invalid timeoutSeconds {query['timeoutSeconds']!r}") from exc


async def write_event(
    response: aiohttp.web.StreamResponse, event_type: str, obj: Mapping[str, Any]
) -> None:
    line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
    await response.write(line.encode() + b"\n")


async def serve_watch(
    raw: aiohttp.web.BaseRequest,
    store: Store,
    resource: ResourceType,
    version: str,
    ns: str | None,
    name: str | None,
    fault: WatchFault | None = None,
) -> aiohttp.web.StreamResponse:
    """Answer a ``?watch=true`` request until its timeout, the client leaving, or shutdown;
    an injected ``fault`` ends it early (an ERROR 410 event, or a cut connection)."""
    query = raw.query
    matches = matcher(ns, name, query)
    as_table = wants_table(raw.headers.get("Accept", ""))

    def served(obj: dict[str, Any]) -> dict[str, Any]:
        shown = resource.versioned(obj, version)
        if not as_table:
            return shown
        rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
        return render_table(resource, [shown], rv, query)

    timeout = _timeout(query)
    since = query.get("resourceVersion") or ""
    backlog: list[tuple[str, dict[str, Any]]] = []
    expired: int | None = None
    # Synchronous from here to subscribing: no write can slip between backlog and live.
    if since in ("", "0"):
        current = sorted(
            store.items(resource.key), key=lambda o: int(o["metadata"]["resourceVersion"])
        )
        backlog = [("ADDED", obj) for obj in current if matches(obj)]
    else:
        try:
            since_rv = int(since)
        except ValueError as exc:
            raise BadRequest(f"invalid resourceVersion {since!r}: must be a number") from exc
        if since_rv < store.compacted(resource.key):
            expired = since_rv
        else:
            for event in store.events_since(resource.key, since_rv):
                translated = translate(event, matches)
                if translated:
                    backlog.append(translated)
    queue, unsubscribe = store.subscribe(resource.key)

    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(raw)
        if expired is not None:
            gone = Gone(f"too old resource version: {expired} ({store.compacted(resource.key)})")
            await write_event(response, "ERROR", gone.status())
            return response
        for event_type, obj in backlog:
            await write_event(response, event_type, served(obj))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        fault_at = None if fault is None else loop.time() + fault.after
        wakes = [t for t in (deadline, fault_at) if t is not None]
        while not store.stopping:
            now = loop.time()
            if fault is not None and fault_at is not None and now >= fault_at:
                if fault.kind == "drop":
                    abort(raw)
                    return response
                gone = Gone(f"too old resource version: {since or 0} ({store.resource_version})")
                await write_event(response, "ERROR", gone.status())
                break
            if deadline is not None and now >= deadline:
                break
            wait = max(min(wakes) - now, 0.0) if wakes else None
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                continue
            if item is END_OF_WATCH:
                break
            translated = translate(item, matches)
            if translated:
                event_type, obj = translated
                await write_event(response, event_type, served(obj))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client went away
    finally:
        unsubscribe()
    return response
