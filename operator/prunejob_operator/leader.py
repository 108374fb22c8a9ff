"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Every replica runs a `LeaderElector` on the same Lease. A standby reads it every
`retry_period` (2 s, a little jitter) and takes it when it is free (no holder: a
graceful release) or expired: nobody renewed it for `leaseDurationSeconds` (15 s),
measured on this replica's own clock from when it last saw the Lease change, never
from the timestamps in it (clocks differ). The leader renews every `retry_period`
(optimistically: a PUT at the resourceVersion it holds; on a conflict it reads the
Lease again); every write is a PUT at the resourceVersion read, so of two replicas
racing for it one gets 409 Conflict and stays standby. A leader that cannot renew for
`renew_deadline` (10 s, shorter than the lease duration, so it stops before anyone
else may start) or finds another holder stops leading, and `leading` turns False at
once (the write fence). `release()` on a graceful stop empties the holder so a
standby takes over within one retry period.

One extension: the identity is `<pod name>_<random>`, and a Lease held by another
identity of the same pod name is taken at once. Kubernetes never runs two containers
of one pod name at a time (a restarted container's previous instance has exited), so
that holder is this pod's dead predecessor; a container restart after a crash then
resumes at once instead of after the lease duration. Only with a pod name from the
downward API (POD_NAME), never with a host name.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prunejob_operator.kubeapi import ApiError, Conflict, LeaseApi

LOG = logging.getLogger("prunejob_operator.leader")

LEASE_DURATION = 15.0  # seconds a Lease stays valid after its last renewal (client-go's default)
RENEW_DEADLINE = 10.0  # a leader that has not renewed for this long stops leading
RETRY_PERIOD = 2.0  # seconds between attempts, to acquire and to renew
JITTER = 0.1  # a standby waits retry_period * (1 + up to JITTER) between attempts


def identity(pod_name: str | None) -> str:
    """This process's holderIdentity: the pod (or host) name, "_", a random suffix."""
    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The leader-election part of a Lease."""

    holder: str
    duration: float
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str
    body: Mapping[str, Any]

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        metadata = lease.get("metadata") or {}
        try:
            duration = float(spec.get("leaseDurationSeconds") or LEASE_DURATION)
        except (TypeError, ValueError):
            duration = LEASE_DURATION
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(metadata.get("resourceVersion") or ""),
            body=lease,
        )

    def same_as(self, other: LeaseRecord | None) -> bool:
        return other is not None and (
            self.resource_version,
            self.holder,
            self.renew_time,
        ) == (other.resource_version, other.holder, other.renew_time)


class LeaderElector:
    """One replica's side of the election (see the module docstring)."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        pod_name: str | None = None,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`pod_name`: set only from the downward API (enables the same-pod takeover);
        `on_started()` when it takes the lead, `on_stopped(reason)` when it loses it."""
        if not renew_deadline < lease_duration:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.pod_name = pod_name
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # our clock when the observed record last changed
        self._holding = False  # we hold the Lease (last write was ours)
        self._renewed_at = 0.0  # our clock when the last successful write began
        self.acquired_at: float | None = None  # our clock when we took the lead
        self.first_attempt = asyncio.Event()  # set after the first try (won or not)

    # -- what the rest of the operator reads ----------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this replica leads right now: it holds the Lease and renewed it within
        the renew deadline (so it turns False by itself if renewing stalls)."""
        return self._holding and self._clock() - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str:
        """The holder this replica last saw ("" for none)."""
        return self._observed.holder if self._observed is not None else ""

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, then renew until the lead is lost (then `on_stopped` and return)."""
        while not await self._attempt(self.retry_period * 2.5):
            self.first_attempt.set()
            await self._sleep(self.retry_period * (1 + JITTER * self._rng.random()))
        self.first_attempt.set()
        self.acquired_at = self._clock()
        LOG.info("leading: took Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self._on_started()
        reason = await self._keep()
        self._holding = False
        LOG.error("stopped leading: %s", reason)
        self._on_stopped(reason)

    async def _keep(self) -> str:
        while True:
            await self._sleep(self.retry_period)
            remaining = self._renewed_at + self.renew_deadline - self._clock()
            if remaining > 0 and await self._attempt(remaining):
                continue
            holder = self.holder
            if holder and holder != self.identity:
                return f"Lease {self.namespace}/{self.name} is held by {holder}"
            if self._clock() - self._renewed_at >= self.renew_deadline:
                where = f"{self.namespace}/{self.name}"
                return f"could not renew Lease {where} within {self.renew_deadline:.0f}s"

    async def _attempt(self, budget: float) -> bool:
        """One try to acquire or renew, within `budget` seconds; True when we hold it."""
        started = self._clock()
        try:
            won = await asyncio.wait_for(self._try(budget), budget)
        except (ApiError, TimeoutError) as err:
            LOG.warning("Lease %s/%s: %s", self.namespace, self.name, err or "timed out")
            return False
        if won:
            self._holding = True
            self._renewed_at = started
        return won

    def _observe(self, record: LeaseRecord) -> None:
        if not record.same_as(self._observed):
            self._observed_at = self._clock()
        self._observed = record

    def _spec(self, *, holder: str, acquire: str | None, transitions: int) -> dict[str, Any]:
        stamp = micro_time(self._now())
        return {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquire or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    def _updated(self, record: LeaseRecord, spec: Mapping[str, Any]) -> dict[str, Any]:
        metadata = dict(record.body.get("metadata") or {})
        metadata.update(namespace=self.namespace, name=self.name)
        metadata["resourceVersion"] = record.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {**(record.body.get("spec") or {}), **spec},
        }

    async def _try(self, budget: float) -> bool:
        mine = self._observed
        if self._holding and mine is not None and mine.holder == self.identity:
            # Renew optimistically at the version we wrote; a conflict: read it again.
            spec = self._spec(
                holder=self.identity, acquire=mine.acquire_time, transitions=mine.transitions
            )
            try:
                self._observe(
                    LeaseRecord.of(
                        await self.api.replace_lease(self._updated(mine, spec), timeout=budget)
                    )
                )
                return True
            except Conflict:
                LOG.info(
                    "Lease %s/%s changed under us; reading it again", self.namespace, self.name
                )
        lease = await self.api.get_lease(self.namespace, self.name, timeout=budget)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"namespace": self.namespace, "name": self.name},
                "spec": self._spec(holder=self.identity, acquire=None, transitions=0),
            }
            try:
                created = await self.api.create_lease(body, timeout=budget)
            except Conflict:
                return False  # another replica created it first
            self._observe(LeaseRecord.of(created))
            return True
        record = LeaseRecord.of(lease)
        self._observe(record)
        if record.holder == self.identity:
            spec = self._spec(
                holder=self.identity, acquire=record.acquire_time, transitions=record.transitions
            )
        elif record.holder and not self._expired(record) and not self._predecessor(record):
            return False  # somebody else leads
        else:
            if record.holder:
                why = "expired" if self._expired(record) else "this pod's previous container"
                LOG.info(
                    "taking Lease %s/%s from %s (%s)", self.namespace, self.name, record.holder, why
                )
            spec = self._spec(
                holder=self.identity, acquire=None, transitions=record.transitions + 1
            )
        try:
            replaced = await self.api.replace_lease(self._updated(record, spec), timeout=budget)
        except Conflict:
            return False  # somebody wrote it since we read it
        self._observe(LeaseRecord.of(replaced))
        return True

    def _expired(self, record: LeaseRecord) -> bool:
        return self._clock() >= self._observed_at + record.duration

    def _predecessor(self, record: LeaseRecord) -> bool:
        """Held by another identity of this same pod: a container of it that has exited."""
        return bool(self.pod_name) and record.holder.rsplit("_", 1)[0] == self.pod_name

    # -- stopping -------------------------------------------------------------------

    async def release(self, timeout: float = 3.0) -> bool:
        """Give the Lease up (empty holder), if we hold it: a standby takes it at its
        next attempt. Call after the loop is stopped. True when released."""
        record = self._observed
        was_leading = self.leading
        self._holding = False  # the fence closes first
        if not was_leading or record is None or record.holder != self.identity:
            return False
        spec = self._spec(holder="", acquire=None, transitions=record.transitions)
        spec["leaseDurationSeconds"] = 1
        try:
            await self.api.replace_lease(self._updated(record, spec), timeout=timeout)
        except ApiError as err:
            LOG.warning("could not release Lease %s/%s: %s", self.namespace, self.name, err)
            return False
        LOG.info("released Lease %s/%s", self.namespace, self.name)
        return True
