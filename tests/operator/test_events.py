"""EventRecorder: background posting, in order per object, a bounded number at a time."""

from __future__ import annotations

import asyncio

from prunejob_operator.events import EventRecorder
from prunejob_operator.kubeapi import ApiError, ObjectRef


class SlowApi:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def emit_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01 if reason == "first" else 0)
            if reason == "broken":
                raise ApiError("POST /api/v1/namespaces/ml/events: HTTP 403 Forbidden")
            self.posted.append((ref.name, reason))
        finally:
            self.in_flight -= 1


def ref(name: str) -> ObjectRef:
    return ObjectRef("prunejob.io/v1alpha1", "PruneJob", "ml", name, f"uid-{name}")


def test_events_of_one_object_keep_their_order_and_failures_are_dropped() -> None:
    async def test() -> None:
        api = SlowApi()
        recorder = EventRecorder(api, workers=3)  # type: ignore[arg-type]
        for reason in ("first", "broken", "second", "third"):
            recorder.record(ref("a"), type="Normal", reason=reason, message="")
        for i in range(20):
            recorder.record(ref(f"other-{i}"), type="Normal", reason="x", message="")
        assert recorder.pending() == 24
        await recorder.drain(timeout=5)
        mine = [reason for name, reason in api.posted if name == "a"]
        assert mine == ["first", "second", "third"]
        assert len(api.posted) == 23 and recorder.pending() == 0
        assert api.most_in_flight <= 3

    asyncio.run(test())
