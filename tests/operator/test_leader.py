"""Tests of the Lease elector on virtual time against an in-memory Lease store.

The Lease elector on virtual time against an in-memory Lease store with optimistic
concurrency: one leader, takeover bounds after a crash and after a release, renew
deadline, races, the same-pod takeover."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from async_test import asynchronous

from prunejob_operator.kubeapi import ApiError, Conflict
from prunejob_operator.leader import (
    JITTER,
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    LeaderElector,
    LeaseRecord,
    identity,
    micro_time,
)

NS, NAME = "prunejob-system", "prunejob-operator"


class VirtualTime:
    """asyncio sleeps on a virtual clock: `advance(t)` runs everything due within t."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            await self.settle()
            if not self._due or self._due[0][0] > end:
                self.now = end
                return
            when, _, future = heapq.heappop(self._due)
            self.now = max(self.now, when)
            if not future.done():
                future.set_result(None)

    async def until(self, check: Callable[[], bool], limit: float, step: float = 0.05) -> float:
        """Advance until `check()`; the virtual seconds it took."""
        start = self.now
        while not check():
            assert self.now - start < limit, f"not within {limit}s"
            await self.advance(step)
        return self.now - start


class LeaseStore:
    """One Lease per name, with resourceVersions: a stale write is a 409 Conflict."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[str] = []  # holderIdentity of every write

    def _stamp(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(stored["spec"].get("holderIdentity", ""))
        return stored


class Api:
    """The LeaseApi of one replica on the shared store; `down` makes every call fail."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiError("connection refused")

    async def get_lease(
        self, namespace: str, name: str, *, timeout: float
    ) -> dict[str, Any] | None:
        self._check()
        lease = self.store.leases.get(name)
        return copy.deepcopy(lease) if lease else None

    async def create_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        if name in self.store.leases:
            raise Conflict("exists", code=409)
        self.store.leases[name] = self.store._stamp(body)
        return copy.deepcopy(self.store.leases[name])

    async def replace_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        current = self.store.leases.get(name)
        if current is None or current["metadata"]["resourceVersion"] != body["metadata"].get(
            "resourceVersion"
        ):
            raise Conflict("stale", code=409)
        self.store.leases[name] = self.store._stamp(body)
        return copy.deepcopy(self.store.leases[name])


class Replica:
    def __init__(self, store: LeaseStore, time: VirtualTime, pod: str, seed: int) -> None:
        self.api = Api(store)
        self.stopped: list[str] = []
        self.elector = LeaderElector(
            self.api,
            namespace=NS,
            name=NAME,
            identity=identity(pod),
            pod_name=pod,
            on_stopped=self.stopped.append,
            clock=time.clock,
            now=time.wall,
            sleep=time.sleep,
            rng=random.Random(seed),
        )
        self.task: asyncio.Task[None] = asyncio.ensure_future(self.elector.run())

    def crash(self) -> None:
        self.task.cancel()


def holder(store: LeaseStore) -> str:
    return store.leases[NAME]["spec"]["holderIdentity"]


async def leader_and_standby(
    after: float,
) -> tuple[VirtualTime, LeaseStore, Replica, Replica]:
    """Replica op-a, then op-b a moment later (so op-a leads), `after` virtual seconds on."""
    time, store = VirtualTime(), LeaseStore()
    first = Replica(store, time, "op-a", 1)
    await time.advance(0.1)
    second = Replica(store, time, "op-b", 2)
    await time.advance(after)
    return time, store, first, second


# The worst case after a crash: the standby saw the last renewal up to one of its
# periods late, waits the lease duration from then, and tries once more a period later.
TAKEOVER_BOUND = LEASE_DURATION + 2 * RETRY_PERIOD * (1 + JITTER)


@asynchronous
async def test_one_leader_then_the_standby_takes_over_within_the_bound_after_a_crash() -> None:
    time, store, first, second = await leader_and_standby(60)
    assert first.elector.leading and not second.elector.leading
    assert holder(store) == first.elector.identity
    renewals = store.writes.count(first.elector.identity)
    assert renewals >= 60 / RETRY_PERIOD - 2  # renewed every retry period
    assert second.elector.identity not in store.writes  # the standby never wrote

    first.crash()
    took = await time.until(lambda: second.elector.leading, limit=TAKEOVER_BOUND + 1)
    assert LEASE_DURATION - RETRY_PERIOD <= took <= TAKEOVER_BOUND, took
    print(f"takeover after a crash: {took:.2f} virtual seconds")
    spec = store.leases[NAME]["spec"]
    assert spec["holderIdentity"] == second.elector.identity and spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 15
    second.crash()


@asynchronous
async def test_a_release_hands_over_within_one_retry_period() -> None:
    time, store, first, second = await leader_and_standby(10)
    first.crash()
    await time.settle()
    assert await first.elector.release() is True
    assert not first.elector.leading and holder(store) == ""
    took = await time.until(lambda: second.elector.leading, limit=5)
    assert took <= RETRY_PERIOD * (1 + JITTER) + 0.1
    assert await first.elector.release() is False  # not ours any more: nothing written
    assert holder(store) == second.elector.identity
    second.crash()


@asynchronous
async def test_a_leader_that_cannot_renew_stops_before_anyone_may_take_over() -> None:
    time, _, first, second = await leader_and_standby(10)
    first.api.down = True  # partitioned from the API server
    stopped_after = await time.until(lambda: not first.elector.leading, limit=RENEW_DEADLINE + 1)
    assert stopped_after <= RENEW_DEADLINE
    await time.until(lambda: bool(first.stopped), limit=RETRY_PERIOD + 1)
    assert "could not renew" in first.stopped[0]
    assert not second.elector.leading  # nobody else yet: the lease is still valid
    await time.until(lambda: second.elector.leading, limit=LEASE_DURATION + 5)
    assert first.task.done()  # the elector returned after losing the lead
    second.crash()


@asynchronous
async def test_a_leader_that_finds_another_holder_stops_at_once() -> None:
    time, store = VirtualTime(), LeaseStore()
    first = Replica(store, time, "op-a", 1)
    await time.advance(3)
    lease = store.leases[NAME]
    lease["spec"]["holderIdentity"] = "intruder_1"
    store.leases[NAME] = store._stamp(lease)
    await time.until(lambda: bool(first.stopped), limit=RETRY_PERIOD * 2)
    assert "held by intruder_1" in first.stopped[0] and not first.elector.leading


@asynchronous
async def test_of_many_replicas_racing_for_a_new_lease_exactly_one_wins() -> None:
    time, store = VirtualTime(), LeaseStore()
    replicas = [Replica(store, time, f"op-{i}", i) for i in range(5)]
    await time.advance(30)
    assert sum(r.elector.leading for r in replicas) == 1
    assert len(set(store.writes)) == 1
    for replica in replicas:
        replica.crash()


@asynchronous
async def test_a_restarted_container_of_the_same_pod_takes_over_at_once() -> None:
    time, store = VirtualTime(), LeaseStore()
    standby_elsewhere = None
    first = Replica(store, time, "op-a", 1)
    await time.advance(5)
    first.crash()  # SIGKILL; the kubelet restarts the container in the same pod
    restarted = Replica(store, time, "op-a", 3)
    standby_elsewhere = Replica(store, time, "op-b", 4)
    took = await time.until(lambda: restarted.elector.leading, limit=5)
    assert took <= 0.1 and restarted.elector.identity != first.elector.identity
    assert not standby_elsewhere.elector.leading
    restarted.crash()
    standby_elsewhere.crash()


@asynchronous
async def test_without_a_pod_name_there_is_no_same_pod_takeover() -> None:
    time, store = VirtualTime(), LeaseStore()
    api = Api(store)
    common: dict[str, Any] = dict(
        namespace=NS, name=NAME, clock=time.clock, now=time.wall, sleep=time.sleep
    )
    first = LeaderElector(api, identity=identity(None), **common)
    task = asyncio.ensure_future(first.run())
    await time.advance(3)
    task.cancel()
    second = LeaderElector(api, identity=identity(None), **common)  # same host name
    other = asyncio.ensure_future(second.run())
    took = await time.until(lambda: second.leading, limit=TAKEOVER_BOUND + 1)
    assert took >= LEASE_DURATION - RETRY_PERIOD
    other.cancel()


def test_records_times_and_identities() -> None:
    stamp = micro_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert stamp == "2026-01-02T03:04:05.000006Z"
    record = LeaseRecord.of({"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": "x"}})
    assert (record.holder, record.duration, record.transitions) == ("x", 15.0, 0)
    assert identity("op-a").startswith("op-a_") and identity("op-a") != identity("op-a")
    with pytest.raises(ValueError):
        LeaderElector(Api(LeaseStore()), namespace=NS, name=NAME, identity="x", renew_deadline=20)
