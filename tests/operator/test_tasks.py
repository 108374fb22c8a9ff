"""cancel_and_wait: the tasks end, their errors come back, the caller's own cancel stays."""

from __future__ import annotations

import asyncio

from async_test import asynchronous

from prunejob_operator.tasks import cancel_and_wait


@asynchronous
async def test_cancels_waits_and_returns_what_the_tasks_raised() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("a bug")

    running = asyncio.create_task(forever())
    failed = asyncio.create_task(broken())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    errors = await cancel_and_wait([running, failed, finished])
    assert running.cancelled() and not finished.cancelled()
    assert [str(error) for error in errors] == ["a bug"]
    assert await cancel_and_wait([]) == []


@asynchronous
async def test_a_cancel_of_the_caller_is_not_swallowed() -> None:
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await asyncio.shield(asyncio.sleep(0.3))

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait([task]))
    await asyncio.wait_for(stopping.wait(), timeout=5)
    stopper.cancel()
    await asyncio.wait([stopper], timeout=5)
    assert stopper.cancelled()
