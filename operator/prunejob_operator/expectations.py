"""Own-write expectations: what we wrote, trusted until the watch catches up.

A watch event of our own write arrives after the write returns, so for a while the
cache is behind: a Job we just created is not in it, a status we just patched is the
old one there, a Job we just started still shows suspended. Like the Kubernetes Job
controller's expectations, each write is remembered until the cache shows it (or a
grace period passes, in case the event was lost), and the reconciler reads through:

- `statuses`: PruneJob uid -> (resourceVersion, status) of our last status patch;
- `jobs`: (namespace, name) -> summary of a Job we created;
- `starts`: (namespace, name) of Jobs we created running or unsuspended, not yet
  seen running: they count against the concurrency cap meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prunejob_operator.models import PruneJobStatus
from prunejob_operator.records import JobSummary

GRACE = 30.0  # seconds to trust our own writes over a lagging watch

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
JobKey = tuple[str, str]  # (namespace, name)


@dataclass
class Expiring(Generic[K, V]):
    """Values remembered for `grace` seconds of `clock`."""

    grace: float = GRACE
    clock: Callable[[], float] = time.monotonic
    _items: dict[K, tuple[V, float]] = field(default_factory=dict)

    def put(self, key: K, value: V) -> None:
        self._items[key] = (value, self.clock())

    def peek(self, key: K) -> V | None:
        """The value, expired or not (None when absent)."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def fresh(self, key: K) -> V | None:
        """The value while it is fresh; an expired one is dropped."""
        item = self._items.get(key)
        if item is None:
            return None
        if self.clock() - item[1] > self.grace:
            del self._items[key]
            return None
        return item[0]

    def drop(self, key: K) -> None:
        self._items.pop(key, None)

    def known(self) -> list[K]:
        """The keys, expired or not."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


def newer_or_same(seen: str, written: str) -> bool:
    """Whether resourceVersion `seen` is at least `written`."""
    if seen == written:
        return True
    if seen.isdigit() and written.isdigit():  # etcd's are integers; others: trust time
        return int(seen) > int(written)
    return False


class Expectations:
    """Our writes that the cache may not show yet (see the module docstring)."""

    def __init__(self, *, grace: float = GRACE, clock: Callable[[], float] = time.monotonic):
        self.statuses: Expiring[str, tuple[str, PruneJobStatus]] = Expiring(grace, clock)
        self.jobs: Expiring[JobKey, JobSummary] = Expiring(grace, clock)
        self.starts: Expiring[JobKey, bool] = Expiring(grace, clock)

    # -- status patches --------------------------------------------------------------

    def wrote_status(self, uid: str, resource_version: str, status: PruneJobStatus) -> None:
        self.statuses.put(uid, (resource_version, status))

    def status(self, uid: str, seen_version: str, seen: PruneJobStatus) -> PruneJobStatus:
        """The status as last written: our own patch until the cache has caught up."""
        written = self.statuses.peek(uid)
        if written is None:
            return seen
        if newer_or_same(seen_version, written[0]) or self.statuses.fresh(uid) is None:
            self.statuses.drop(uid)
            return seen
        return written[1]

    def is_own_status(self, uid: str, resource_version: str) -> bool:
        """The watch event of our own status patch: nothing new in it."""
        written = self.statuses.peek(uid)
        return written is not None and written[0] == resource_version

    def forget(self, uid: str) -> None:
        self.statuses.drop(uid)

    # -- Job creations ---------------------------------------------------------------

    def created_job(self, job: JobSummary) -> None:
        self.jobs.put((job.namespace, job.name), job)

    def job(self, key: JobKey, seen: JobSummary | None) -> JobSummary | None:
        """The cached Job, else the one we created while it is fresh."""
        if seen is not None:
            self.jobs.drop(key)
            return seen
        return self.jobs.fresh(key)

    # -- starts (the concurrency cap) ------------------------------------------------

    def starting(self, key: JobKey) -> None:
        self.starts.put(key, True)

    def not_starting(self, key: JobKey) -> None:
        self.starts.drop(key)

    def in_flight(self, lookup: Callable[[JobKey], JobSummary | None]) -> frozenset[JobKey]:
        """Jobs we started that the cache (`lookup`) does not show running or done yet."""
        for key in self.starts.known():
            job = lookup(key)
            landed = job is not None and (not job.suspended or job.finished)
            if landed or self.starts.fresh(key) is None:
                self.starts.drop(key)
        return frozenset(self.starts.known())
