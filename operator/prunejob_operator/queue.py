"""The concurrency cap: which PruneJobs may run now. Pure.

With `max_running_jobs` > 0 at most that many worker Jobs run at once; the other
PruneJobs wait (status Pending/Queued) by priority, then in order of creation:
(-priority, creationTimestamp, namespace, name). The priority is the value of the
PriorityClass `spec.priorityClassName` names; none, or one that does not exist, counts
as the globalDefault class's value (0 without one), as for pods. Timestamps have
one-second resolution, names break ties. A waiting PruneJob's Job is created suspended
and unsuspended when its turn comes; a PruneJob whose turn it already is gets its Job
created running. A running Job is never stopped for a higher priority one (no
preemption). The state lives in the Jobs (`spec.suspend`) and the PruneJobs, so a
restarted operator resumes the queue as it was. Kueue-managed PruneJobs (queue label
or `queueName`) and suspended ones (`spec.suspend`) are never counted or started.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prunejob_operator.records import JobSummary, PriorityClassSummary

Order = tuple[int, str, str, str]  # (-priority, creationTimestamp, namespace, name)


def priority_of(name: str | None, classes: Iterable[PriorityClassSummary]) -> int:
    """The value of PriorityClass `name`; of the globalDefault one when `name` is empty
    or unknown (the lowest, if several: as the Priority admission plugin picks); 0
    without either."""
    default: int | None = None
    for item in classes:
        if name and item.name == name:
            return item.value
        if item.global_default:
            default = item.value if default is None else min(default, item.value)
    return default or 0


def order_of(priority: int, created: str, namespace: str, name: str) -> Order:
    """Where a PruneJob waits: higher priorities first, then first come, first served."""
    return (-priority, created, namespace, name)


def is_running(job: JobSummary) -> bool:
    """Counts against the cap: started by us and not finished."""
    return not job.suspended and not job.finished and not job.kueue


def is_queued(job: JobSummary) -> bool:
    return job.suspended and not job.finished and not job.kueue


@dataclass(frozen=True)
class Waiting:
    """A PruneJob whose current generation has not started: no Job yet, or a queued one."""

    order: Order  # order_of(...) of the PruneJob
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
    """The waiting PruneJobs that may start now, in queue order (all without a cap)."""
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
