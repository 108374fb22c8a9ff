"""Throughput of the local API server (devcluster) vs stock kmock, measured in the same run.

    python bench/apiserver_bench.py [--objects 1000] [--baseline-objects 100]

Creates N custom objects over HTTP (16 concurrent clients), reads each, patches each
one's status, lists them and replays them through a watch; prints seconds and requests/s
per phase. The baseline runs the same create+get phases against stock
``kmock.KubernetesEmulator`` with fewer objects (it matches each request against the whole
request history, so it slows down as it goes). Progress goes to stderr; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import kmock

from devcluster.apiserver.server import new_api_server, start_http, stop_http
from devcluster.loop import BackgroundLoop

CRD = Path(__file__).resolve().parent.parent / "tests" / "devcluster" / "data" / "widgets.yaml"
BASE = "/apis/example.com/v1/namespaces/default/widgets"
CONCURRENCY = 16


async def run_phase(
    name: str, count: int, request: Callable[[int], Awaitable[None]]
) -> tuple[str, int, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            await request(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    print(f"  {name}: {count} requests in {elapsed:.2f}s", file=sys.stderr)
    return name, count, elapsed


async def exercise(url: str, count: int, full: bool) -> list[tuple[str, int, float]]:
    results = []
    async with aiohttp.ClientSession(url) as session:

        async def create(index: int) -> None:
            body = {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": f"w-{index}", "namespace": "default"},
                "spec": {"size": 1 + index % 10},
            }
            async with session.post(BASE, json=body) as response:
                assert response.status in (200, 201), await response.text()

        async def get(index: int) -> None:
            async with session.get(f"{BASE}/w-{index}") as response:
                assert response.status == 200, await response.text()

        async def patch_status(index: int) -> None:
            headers = {"Content-Type": "application/merge-patch+json"}
            body = json.dumps({"status": {"phase": "Done"}})
            async with session.patch(f"{BASE}/w-{index}/status", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()

        results.append(await run_phase("create", count, create))
        results.append(await run_phase("get", count, get))
        if not full:
            return results
        results.append(await run_phase("patch status", count, patch_status))
        started = time.perf_counter()
        async with session.get(BASE) as response:
            listing = await response.json()
        assert len(listing["items"]) == count
        results.append(("list", 1, time.perf_counter() - started))
        started = time.perf_counter()
        events = 0
        async with session.get(BASE, params={"watch": "true", "timeoutSeconds": "1"}) as response:
            async for line in response.content:
                if line.strip():
                    events += 1
        watch_time = time.perf_counter() - started - 1.0  # minus the server-side timeout
        assert events == count, events
        results.append((f"watch replay ({events} events)", events, watch_time))
    return results


def report(title: str, results: list[tuple[str, int, float]]) -> dict[str, float]:
    print(title)
    rates: dict[str, float] = {}
    for name, count, elapsed in results:
        rate = count / elapsed if elapsed > 0 else float("inf")
        rates[name] = rate
        print(f"  {name:<28} {count:>6} in {elapsed:7.3f}s  {rate:10.0f}/s")
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--baseline-objects", type=int, default=100)
    args = parser.parse_args()

    loop = BackgroundLoop("bench-apiserver")
    try:
        print(f"devcluster: {args.objects} objects", file=sys.stderr)

        async def new_server():  # type: ignore[no-untyped-def]
            return new_api_server([CRD])

        server = loop.call(new_server)
        runner, url = loop.call(lambda: start_http(server))
        ours = asyncio.run(exercise(url, args.objects, full=True))
        loop.call(lambda: stop_http(server, runner))

        print(f"stock kmock: {args.baseline_objects} objects", file=sys.stderr)

        async def stock() -> tuple[kmock.KubernetesEmulator, kmock.Server]:
            emulator = kmock.KubernetesEmulator()
            emulator.resources["example.com/v1/widgets"] = kmock.ResourceInfo(
                kind="Widget", namespaced=True, verbs={"create", "get", "list", "watch"}
            )
            await emulator.__aenter__()
            http = kmock.Server(emulator)
            await http.__aenter__()
            return emulator, http

        emulator, http = loop.call(stock)
        baseline = asyncio.run(exercise(str(http.url).rstrip("/"), args.baseline_objects, False))

        async def stop_stock() -> None:
            await http.__aexit__(None, None, None)
            await emulator.__aexit__(None, None, None)

        loop.call(stop_stock)
    finally:
        loop.close()

    ours_rates = report(f"devcluster ({args.objects} objects)", ours)
    stock_rates = report(f"stock kmock baseline ({args.baseline_objects} objects)", baseline)
    for phase in ("create", "get"):
        print(
            f"{phase}: devcluster {ours_rates[phase]:.0f}/s at {args.objects} objects vs stock "
            f"{stock_rates[phase]:.0f}/s at {args.baseline_objects} "
            f"({ours_rates[phase] / stock_rates[phase]:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
