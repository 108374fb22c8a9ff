"""Tests of the reflector and informer over HttpKubeApi against a scripted aiohttp server.

Reflector + informer over HttpKubeApi against a scripted aiohttp server: list, watch,
relist on 410 in both forms, 429 Retry-After, 5xx backoff, dropped and silent streams,
paging, long lines."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from async_test import asynchronous

from prunejob_operator import connection
from prunejob_operator.cache import Index
from prunejob_operator.client import HttpKubeApi
from prunejob_operator.informer import Change, Informer
from prunejob_operator.kubeapi import ApiError, Gone
from prunejob_operator.reflector import Backoff, Reflector

PODS = "/api/v1/pods"
Step = dict[str, Any]


def pod(name: str, version: int, namespace: str = "ml", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": str(version),
            "labels": labels,
        }
    }


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def gone_status() -> dict[str, Any]:
    return {
        "kind": "Status",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version",
    }


class Script:
    """Answers each request with the next step; once the steps run out, a watch hangs
    (as a quiet stream does) until the test is done. Keeps every request's query."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.seen: list[dict[str, str]] = []
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.query))
        if not self.steps:
            await self.done.wait()
            return web.Response(status=503)
        step = self.steps.pop(0)
        is_watch = request.query.get("watch") == "true"
        assert step["kind"] == ("watch" if is_watch else "list"), (step, dict(request.query))
        if "status" in step:
            return web.Response(
                status=step["status"],
                text=json.dumps(step.get("body", {})),
                headers=step.get("headers", {}),
            )
        if not is_watch:
            metadata = {"resourceVersion": step["version"]}
            if step.get("continue"):
                metadata["continue"] = step["continue"]
            return web.json_response(
                {"kind": "PodList", "metadata": metadata, "items": step["items"]}
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for item in step.get("events", []):
            await response.write(json.dumps(item).encode() + b"\n")
        end = step.get("end", "close")
        if end == "drop":
            await response.write(b'{"type": "MODIFIED", "obj')
            assert request.transport is not None
            request.transport.abort()
            return response
        if end == "silent":
            await asyncio.sleep(step["silence"])
        await response.write_eof()
        return response


@asynccontextmanager
async def serving(steps: list[Step], **options: Any) -> AsyncIterator[tuple[HttpKubeApi, Script]]:
    script = Script(steps)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api = HttpKubeApi(connection.Connection(f"http://127.0.0.1:{port}"), **options)
    try:
        yield api, script
    finally:
        script.done.set()
        await api.aclose()
        await runner.cleanup()


class Harness:
    """A reflector on /api/v1/pods into an informer; records sleeps and changes."""

    def __init__(self, api: HttpKubeApi, **options: Any) -> None:
        self.changes: list[Change] = []
        self.slept: list[float] = []
        self.index = Index()
        self.informer = Informer(
            "pods",
            self.index,
            lambda body: {body["metadata"]["name"]: body["metadata"]["resourceVersion"]},
            self.changes.append,
        )
        self.reflector = Reflector(
            "pods",
            api,
            PODS,
            self.informer,
            label_selector="app=x",
            sleep=self.sleep,
            rng=random.Random(7),
            **options,
        )

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)

    def kinds(self) -> list[tuple[str, str]]:
        return [(change.type, change.name) for change in self.changes]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        task = asyncio.ensure_future(self.reflector.run())
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not check():
                if task.done():
                    task.result()
                assert asyncio.get_running_loop().time() < deadline, (self.kinds(), self.slept)
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@asynchronous
async def test_list_then_watch_and_rewatch_from_the_last_version() -> None:
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": [pod("a", 5), pod("b", 6)]},
        {
            "kind": "watch",
            "events": [event("MODIFIED", pod("a", 11)), event("ADDED", pod("c", 12))],
        },
        {"kind": "watch", "events": [event("DELETED", pod("b", 13))]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)
        await harness.until(lambda: len(harness.changes) == 5 and len(script.seen) == 4)
    assert harness.kinds() == [
        ("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "b"),
    ]  # fmt: skip
    listed, first, second, third = script.seen
    assert listed == {"labelSelector": "app=x", "limit": "500"}
    assert first["resourceVersion"] == "10" and first["labelSelector"] == "app=x"
    assert first["allowWatchBookmarks"] == "true" and 120 <= int(first["timeoutSeconds"]) <= 240
    assert second["resourceVersion"] == "12" and third["resourceVersion"] == "13"
    assert sorted(harness.index) == ["a", "c"]
    assert harness.slept == [] and harness.reflector.synced
    assert harness.reflector.counts["ended"] == 2


@pytest.mark.parametrize("form", ["http", "event"])
@asynchronous
async def test_410_in_either_form_relists_and_reports_what_vanished(form: str) -> None:
    if form == "http":
        expired: Step = {"kind": "watch", "status": 410, "body": gone_status()}
    else:
        expired = {"kind": "watch", "events": [event("ERROR", gone_status())]}
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": [pod("a", 5), pod("b", 6)]},
        expired,
        {"kind": "list", "version": "30", "items": [pod("a", 5), pod("c", 25)]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)
        await harness.until(lambda: len(script.seen) == 4)
    assert harness.kinds() == [
        ("ADDED", "a"), ("ADDED", "b"),
        ("SYNC", "a"), ("ADDED", "c"), ("DELETED", "b"),  # the relist: all of them, and b's end
    ]  # fmt: skip
    assert script.seen[3]["resourceVersion"] == "30"
    assert harness.reflector.counts["gone"] == 1 and harness.reflector.counts["lists"] == 2
    assert harness.slept == []  # a relist needs no pause


@asynchronous
async def test_429_waits_for_retry_after_and_5xx_back_off_with_jitter() -> None:
    too_many = {"kind": "Status", "code": 429, "reason": "TooManyRequests"}
    steps: list[Step] = [
        {"kind": "list", "status": 503, "body": {"code": 503}},
        {"kind": "list", "version": "10", "items": []},
        {"kind": "watch", "status": 429, "body": too_many, "headers": {"Retry-After": "3"}},
        {"kind": "watch", "status": 500, "body": {"code": 500, "message": "etcd"}},
        {"kind": "watch", "status": 503, "body": {"code": 503}},
        {"kind": "watch", "events": [event("ADDED", pod("a", 11))]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)
        await harness.until(lambda: len(script.seen) == 7)
    first, retry_after, second, third = harness.slept
    assert 0.8 <= first <= 1.6  # 0.8 s + jitter
    assert retry_after == 3.0  # the server's Retry-After, exactly
    assert 0.8 <= second <= 1.6 and 1.6 <= third <= 3.2  # the list's success reset it
    versions = [seen.get("resourceVersion") for seen in script.seen[2:]]
    assert versions == ["10", "10", "10", "10", "11"]  # the same version until an event came
    assert harness.reflector.counts["throttled"] == 1 and harness.reflector.counts["error"] == 2
    assert harness.kinds() == [("ADDED", "a")]


@asynchronous
async def test_a_dropped_stream_is_rewatched_from_the_last_event() -> None:
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": []},
        {"kind": "watch", "events": [event("ADDED", pod("a", 11))], "end": "drop"},
        {"kind": "watch", "events": [event("ADDED", pod("b", 12))]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)
        await harness.until(lambda: len(script.seen) == 4)
    assert harness.kinds() == [("ADDED", "a"), ("ADDED", "b")]
    assert script.seen[2]["resourceVersion"] == "11"
    assert harness.reflector.counts["dropped"] == 1
    assert len(harness.slept) == 1 and harness.slept[0] <= 1.6  # events came: fresh backoff


@asynchronous
async def test_a_silent_stream_is_given_up_and_watched_again() -> None:
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": []},
        {"kind": "watch", "events": [], "end": "silent", "silence": 30},
        {"kind": "watch", "events": [event("ADDED", pod("a", 11))]},
    ]
    async with serving(steps, watch_read_margin=0.3) as (api, script):
        harness = Harness(api, watch_timeout=(1, 1))
        await harness.until(lambda: len(script.seen) == 4)
    assert harness.reflector.counts["dropped"] == 1
    assert harness.kinds() == [("ADDED", "a")]


@asynchronous
async def test_paged_lists_and_long_lines() -> None:
    big = pod("big", 11)
    big["metadata"]["annotations"] = {"x": "y" * 300_000}  # beyond aiohttp's readline limit
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": [pod("a", 5)], "continue": "page2"},
        {"kind": "list", "version": "10", "items": [pod("b", 6)]},
        {"kind": "watch", "events": [event("ADDED", big)]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)
        await harness.until(lambda: len(harness.changes) == 3)
    assert script.seen[1]["continue"] == "page2"
    assert harness.kinds() == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "big")]
    assert harness.changes[-1].body == big


@asynchronous
async def test_a_relist_request_ends_the_watch_and_lists_again() -> None:
    steps: list[Step] = [
        {"kind": "list", "version": "10", "items": [pod("a", 5)]},
        {"kind": "watch", "events": [], "end": "silent", "silence": 30},
        {"kind": "list", "version": "20", "items": [pod("a", 5)]},
    ]
    async with serving(steps) as (api, script):
        harness = Harness(api)

        def relisted() -> bool:
            if len(script.seen) == 2 and harness.reflector.counts["lists"] == 1:
                harness.reflector.relist()
            return harness.reflector.counts["lists"] == 2

        await harness.until(relisted)
    assert harness.kinds() == [("ADDED", "a"), ("SYNC", "a")]


@asynchronous
async def test_watch_errors_are_typed_one_line_api_errors() -> None:
    steps: list[Step] = [
        {"kind": "watch", "status": 410, "body": gone_status()},
        {"kind": "watch", "events": [event("ERROR", {"code": 500, "message": "boom\nx"})]},
        {"kind": "watch", "status": 429, "body": {}, "headers": {"Retry-After": "2"}},
    ]
    async with serving(steps) as (api, _):
        for expected in (Gone, ApiError, ApiError):
            with pytest.raises(ApiError) as caught:
                await api.watch(PODS, resource_version="1", timeout_seconds=5, on_event=print)
            assert type(caught.value) is expected and "\n" not in str(caught.value)
        assert caught.value.retry_after == 2.0 and caught.value.code == 429


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base <= delay <= base * 1.5
    backoff.reset()
    assert backoff.next() <= 1.5


class EndsAtOnce:
    """A watch source whose every watch ends at once (the server closed the stream)."""

    async def watch(self, where: str, **options: Any) -> None:
        return None


@asynchronous
async def test_a_cancelled_reflector_stops_whenever_the_cancel_lands() -> None:
    # A cancel that lands while a finished watch's sibling task is being cancelled
    # must still stop the reflector (a stop swallowed there left it watching forever).
    landed = 0
    for steps in range(8):
        reflector = Harness(EndsAtOnce()).reflector  # type: ignore[arg-type]
        once = asyncio.ensure_future(reflector._watch_once(5))
        for _ in range(steps):
            await asyncio.sleep(0)
        if once.done():
            break
        once.cancel()
        await asyncio.wait({once}, timeout=5)
        assert once.cancelled(), f"cancelled after {steps} loop steps, yet it returned"
        landed += 1
    assert landed >= 3
