"""The read-only view of the watched objects the reconciler decides from.

The reflectors (`informer.py`) keep the indices: PruneJob records by (namespace,
name), Job summaries by name and by owner, Pod summaries by Job and by owner,
PriorityClasses by name (plain dicts in tests). The `*_entries` functions say what an
object is filed under, `Index` files it, `IndexedCache` reads the same keys back.
Nothing here writes to the cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Mapping
from typing import Any, Protocol

from prunejob_operator.records import (
    JobSummary,
    PodSummary,
    PriorityClassSummary,
    PruneJobRecord,
)

# key -> the objects filed under it (an `Index`, or a plain dict of lists in tests)
IndexView = Mapping[Any, Collection[Any]]
ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


class Cache(Protocol):
    """What the reconciler may read: the last watched state, never the API server."""

    def prunejob(self, namespace: str, name: str) -> PruneJobRecord | None: ...

    def prunejobs(self) -> Iterator[PruneJobRecord]: ...

    def job(self, namespace: str, name: str) -> JobSummary | None: ...

    def jobs(self) -> Iterator[JobSummary]: ...

    def jobs_of(self, namespace: str, owner: str) -> list[JobSummary]: ...

    def pods_of(self, namespace: str, job_name: str) -> list[PodSummary]: ...

    def pods_of_prunejob(self, namespace: str, name: str) -> list[PodSummary]:
        """Every managed pod whose owner annotation names the PruneJob (its Jobs may be
        gone: pods outlive them until their result finalizer is removed)."""
        ...

    def priority_classes(self) -> Iterator[PriorityClassSummary]: ...


def prunejob_entries(record: PruneJobRecord) -> dict[Hashable, PruneJobRecord]:
    return {(record.namespace, record.name): record}


def job_entries(job: JobSummary) -> dict[Hashable, JobSummary]:
    return {("job", job.namespace, job.name): job, ("owner", job.namespace, job.owner): job}


def pod_entries(namespace: str, job_name: str, pod: PodSummary) -> dict[Hashable, PodSummary]:
    entries: dict[Hashable, PodSummary] = {(namespace, job_name): pod}
    if pod.owner:
        entries["owner", namespace, pod.owner] = pod
    return entries


def priority_class_entries(item: PriorityClassSummary) -> dict[Hashable, PriorityClassSummary]:
    return {item.name: item}


class Index:
    """Objects filed under keys, as the `*_entries` functions say; a key -> values
    mapping for `IndexedCache`. Filing an object again replaces its old entries."""

    def __init__(self) -> None:
        self._entries: dict[ObjectKey, Mapping[Hashable, Any]] = {}
        self._filed: dict[Hashable, dict[ObjectKey, Any]] = {}

    def file(
        self, obj: ObjectKey, entries: Mapping[Hashable, Any] | None
    ) -> Mapping[Hashable, Any] | None:
        """File `obj` under `entries` (None or empty: under nothing); its old entries."""
        old = self.unfile(obj)
        if entries:
            self._entries[obj] = entries
            for key, value in entries.items():
                self._filed.setdefault(key, {})[obj] = value
        return old

    def unfile(self, obj: ObjectKey) -> Mapping[Hashable, Any] | None:
        """Forget `obj`; its old entries (None if it was not filed)."""
        old = self._entries.pop(obj, None)
        for key in old or ():
            filed = self._filed.get(key)
            if filed is not None:
                filed.pop(obj, None)
                if not filed:
                    del self._filed[key]
        return old

    def entries(self, obj: ObjectKey) -> Mapping[Hashable, Any] | None:
        return self._entries.get(obj)

    def objects(self) -> list[ObjectKey]:
        return list(self._entries)

    def __getitem__(self, key: Hashable) -> Collection[Any]:
        return list(self._filed[key].values())

    def __contains__(self, key: object) -> bool:
        return key in self._filed

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._filed))

    def __len__(self) -> int:
        return len(self._filed)


class IndexedCache:
    """`Cache` over the indices filed by the `*_entries` functions above."""

    def __init__(
        self,
        prunejobs: IndexView,
        jobs: IndexView,
        pods: IndexView,
        priority_classes: IndexView | None = None,
    ) -> None:
        self._prunejobs = prunejobs
        self._jobs = jobs
        self._pods = pods
        self._priority_classes: IndexView = {} if priority_classes is None else priority_classes

    @staticmethod
    def _one(index: IndexView, key: Hashable) -> Any:
        return next(iter(index[key]), None) if key in index else None

    @staticmethod
    def _all(index: IndexView, key: Hashable) -> list[Any]:
        return list(index[key]) if key in index else []

    def prunejob(self, namespace: str, name: str) -> PruneJobRecord | None:
        return self._one(self._prunejobs, (namespace, name))

    def prunejobs(self) -> Iterator[PruneJobRecord]:
        for key in list(self._prunejobs):
            record = self._one(self._prunejobs, key)
            if record is not None:
                yield record

    def job(self, namespace: str, name: str) -> JobSummary | None:
        return self._one(self._jobs, ("job", namespace, name))

    def jobs(self) -> Iterator[JobSummary]:
        for key in list(self._jobs):
            if key[0] == "job":
                yield from self._all(self._jobs, key)

    def jobs_of(self, namespace: str, owner: str) -> list[JobSummary]:
        return self._all(self._jobs, ("owner", namespace, owner))

    def pods_of(self, namespace: str, job_name: str) -> list[PodSummary]:
        return self._all(self._pods, (namespace, job_name))

    def pods_of_prunejob(self, namespace: str, name: str) -> list[PodSummary]:
        return self._all(self._pods, ("owner", namespace, name))

    def priority_classes(self) -> Iterator[PriorityClassSummary]:
        for key in list(self._priority_classes):
            yield from self._all(self._priority_classes, key)
