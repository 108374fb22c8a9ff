"""The read-only view of the watched objects the reconciler decides from.

The watch streams keep three indices (kopf's `@kopf.index` in the operator; plain
dicts in tests): PruneJob records by (namespace, name), Job summaries by name and by
owner, Pod summaries by Job. The `*_entries` functions say what an object is filed
under, `IndexedCache` reads the same keys back. Nothing here writes to the cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Mapping
from typing import Any, Protocol

from prunejob_operator.records import JobSummary, PodSummary, PruneJobRecord

# key -> the objects filed under it (kopf.Index is such a mapping)
Index = Mapping[Any, Collection[Any]]


class Cache(Protocol):
    """What the reconciler may read: the last watched state, never the API server."""

    def prunejob(self, namespace: str, name: str) -> PruneJobRecord | None: ...

    def prunejobs(self) -> Iterator[PruneJobRecord]: ...

    def job(self, namespace: str, name: str) -> JobSummary | None: ...

    def jobs(self) -> Iterator[JobSummary]: ...

    def jobs_of(self, namespace: str, owner: str) -> list[JobSummary]: ...

    def pods_of(self, namespace: str, job_name: str) -> list[PodSummary]: ...


def prunejob_entries(record: PruneJobRecord) -> dict[Hashable, PruneJobRecord]:
    return {(record.namespace, record.name): record}


def job_entries(job: JobSummary) -> dict[Hashable, JobSummary]:
    return {("job", job.namespace, job.name): job, ("owner", job.namespace, job.owner): job}


def pod_entries(namespace: str, job_name: str, pod: PodSummary) -> dict[Hashable, PodSummary]:
    return {(namespace, job_name): pod}


class IndexedCache:
    """`Cache` over three indices filed by the `*_entries` functions above."""

    def __init__(self, prunejobs: Index, jobs: Index, pods: Index) -> None:
        self._prunejobs = prunejobs
        self._jobs = jobs
        self._pods = pods

    @staticmethod
    def _one(index: Index, key: Hashable) -> Any:
        return next(iter(index[key]), None) if key in index else None

    @staticmethod
    def _all(index: Index, key: Hashable) -> list[Any]:
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
