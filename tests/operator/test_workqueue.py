"""The work queue: one run per key, a trigger meanwhile = one more run, retries, later, close."""

from __future__ import annotations

import asyncio

from async_test import asynchronous

from prunejob_operator.workqueue import WorkQueue


@asynchronous
async def test_triggers_during_a_run_cost_one_more_run() -> None:
    queue: WorkQueue[str] = WorkQueue()
    release = asyncio.Event()
    runs: list[int] = []

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            await release.wait()

    first = asyncio.create_task(queue.run("a", work))
    await asyncio.sleep(0)
    for _ in range(5):  # a burst while the first run is in progress
        await queue.run("a", work)
    assert runs == [0] and queue.busy()
    release.set()
    await first
    assert runs == [0, 1] and not queue.busy()


@asynchronous
async def test_a_failing_run_is_retried_with_growing_delays_and_a_success_resets() -> None:
    slept: list[float] = []
    heard: list[tuple[str, float, str]] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    queue: WorkQueue[str] = WorkQueue(
        delays=(1.0, 2.0, 5.0),
        on_failure=lambda key, delay, err: heard.append((key, delay, str(err))),
        sleep=sleep,
    )
    outcomes = iter([RuntimeError("one"), RuntimeError("two"), None])

    async def work() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    await queue.run("a", work)
    for _ in range(20):
        if not queue.busy():
            break
        await asyncio.sleep(0)
    assert heard == [("a", 1.0, "one"), ("a", 2.0, "two")]
    assert slept == [1.0, 2.0]
    assert queue.failures("a") == 0 and not queue.busy()


@asynchronous
async def test_aclose_cancels_the_pending_retries() -> None:
    queue: WorkQueue[str] = WorkQueue(delays=(3600.0,))

    async def work() -> None:
        raise RuntimeError("down")

    await queue.run("a", work)
    assert queue.busy() and queue.failures("a") == 1
    await asyncio.wait_for(queue.aclose(), timeout=5)
    await asyncio.sleep(0)
    assert not queue.busy()


@asynchronous
async def test_a_cancelled_aclose_stays_cancelled() -> None:
    # A retry that takes its time to stop; the aclose awaiting it is cancelled meanwhile
    # (a shutdown that itself times out). The cancel must reach the aclose's caller: an
    # `await task` under suppress(CancelledError) would swallow it and return normally.
    stopping = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        finally:
            stopping.set()
            await asyncio.shield(asyncio.sleep(0.5))

    queue: WorkQueue[str] = WorkQueue(delays=(3600.0,), sleep=slow_sleep)

    async def work() -> None:
        raise RuntimeError("down")

    await queue.run("a", work)
    await asyncio.sleep(0)
    closing = asyncio.create_task(queue.aclose())
    await asyncio.wait_for(stopping.wait(), timeout=5)
    closing.cancel()
    done, _ = await asyncio.wait([closing], timeout=5)
    assert done and closing.cancelled()


@asynchronous
async def test_later_runs_once_after_its_delay_and_keeps_the_earliest_per_key() -> None:
    slept: list[float] = []
    go = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await go.wait()

    queue: WorkQueue[str] = WorkQueue(sleep=sleep)
    runs: list[str] = []

    def work(tag: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            runs.append(tag)

        return run

    queue.later("a", 60.0, work("first"))
    queue.later("a", 90.0, work("due later: dropped"))
    queue.later("a", 30.0, work("due sooner: replaces"))
    queue.later("b", 5.0, work("another key"))
    await asyncio.sleep(0)
    assert sorted(slept) == [5.0, 30.0] and queue.busy()  # the replaced one never slept
    go.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sorted(runs) == ["another key", "due sooner: replaces"]
    assert not queue.busy()
    queue.later("a", 1.0, work("after the first ran: a new one"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert runs[-1] == "after the first ran: a new one"


@asynchronous
async def test_aclose_cancels_the_pending_later_runs() -> None:
    queue: WorkQueue[str] = WorkQueue()
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)

    queue.later("a", 3600.0, work)
    assert queue.busy()
    await asyncio.wait_for(queue.aclose(), timeout=5)
    await asyncio.sleep(0)
    assert not queue.busy() and runs == []
