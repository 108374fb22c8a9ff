"""The concurrency cap: which PruneJobs may run now. Pure.

With `max_running_jobs` > 0 at most that many worker Jobs run at once; the other
PruneJobs wait (status Pending/Queued) in order of creation: (creationTimestamp,
namespace, name) — timestamps have one-second resolution, names break ties. A
waiting PruneJob's Job is created suspended and unsuspended when its turn comes;
a PruneJob whose turn it already is gets its Job created running. The state lives
in the Jobs (`spec.suspend`) and the PruneJobs, so a restarted operator resumes
the queue as it was. Kueue-managed PruneJobs (`queueName`) are never counted or
touched: Kueue admits them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prunejob_operator.records import JobSummary

Order = tuple[str, str, str]


def is_running(job: JobSummary) -> bool:
    """Counts against the cap: started by us and not finished."""
    return not job.suspended and not job.finished and not job.kueue


def is_queued(job: JobSummary) -> bool:
    return job.suspended and not job.finished and not job.kueue


@dataclass(frozen=True)
class Waiting:
    """A PruneJob whose current generation has not started: no Job yet, or a queued one."""

    order: Order  # (creationTimestamp, namespace, name) of the PruneJob
    job: JobSummary | None = None


def count_running(
    jobs: Iterable[JobSummary], in_flight: frozenset[tuple[str, str]] = frozenset()
) -> int:
    """Running Jobs, plus `in_flight` ones we started whose watch event is still on its
    way ((namespace, name); listed in `jobs` as suspended, or not listed at all)."""
    running = 0
    counted: set[tuple[str, str]] = set()
    for job in jobs:
        key = (job.namespace, job.name)
        if is_running(job) or (key in in_flight and not job.finished):
            running += 1
            counted.add(key)
        elif key in in_flight:
            counted.add(key)  # finished meanwhile: frees its slot
    return running + len(in_flight - counted)


def turn_has_come(waiting: Iterable[Waiting], running: int, max_running_jobs: int) -> list[Waiting]:
    """The waiting PruneJobs that may start now, oldest first (all of them without a cap)."""
    ordered = sorted(waiting, key=lambda item: item.order)
    if max_running_jobs <= 0:
        return ordered
    return ordered[: max(0, max_running_jobs - running)]


def jobs_to_start(
    waiting: Iterable[Waiting], running: int, max_running_jobs: int
) -> list[JobSummary]:
    """The queued Jobs to unsuspend now."""
    return [
        item.job
        for item in turn_has_come(waiting, running, max_running_jobs)
        if item.job is not None and is_queued(item.job)
    ]


def may_start_now(
    waiting: Iterable[Waiting], running: int, max_running_jobs: int, *, mine: Order
) -> bool:
    """Whether the PruneJob `mine` (one of `waiting`) gets its Job created running."""
    return any(item.order == mine for item in turn_has_come(waiting, running, max_running_jobs))
