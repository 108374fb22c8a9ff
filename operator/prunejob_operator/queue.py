"""The concurrency cap: which suspended Jobs to start now. Pure.

With `max_running_jobs` > 0 the operator creates every Job suspended and starts
(unsuspends) the oldest queued ones while fewer than the cap are running; the queue
order is the PruneJob's creation time (annotation `prunejob.io/queued-at`), then
namespace and name. The state lives in the Jobs themselves (`spec.suspend`), so an
operator restart picks the queue up where it was. Kueue-managed Jobs (queue label)
are never touched: Kueue admits them.
"""

from __future__ import annotations

from collections.abc import Iterable

from prunejob_operator.status import JobSummary


def queue_order(job: JobSummary) -> tuple[str, str, str]:
    return (job.queued_at, job.namespace, job.name)


def is_running(job: JobSummary) -> bool:
    """Counts against the cap: started by us and not finished."""
    return not job.suspended and not job.finished and not job.kueue


def is_queued(job: JobSummary) -> bool:
    return job.suspended and not job.finished and not job.kueue


def plan_admissions(
    jobs: Iterable[JobSummary],
    max_running_jobs: int,
    *,
    in_flight: frozenset[tuple[str, str]] = frozenset(),
    superseded: frozenset[tuple[str, str]] = frozenset(),
) -> list[JobSummary]:
    """The queued Jobs to unsuspend now, oldest first.

    `in_flight`: (namespace, name) of Jobs already started whose watch event has not
    arrived yet (listed or not in `jobs`); they count as running. `superseded`: Jobs
    of an old generation, never started. `max_running_jobs` <= 0 means no cap.
    """
    running = 0
    queued: list[JobSummary] = []
    seen_in_flight: set[tuple[str, str]] = set()
    for job in jobs:
        key = (job.namespace, job.name)
        if key in in_flight:
            seen_in_flight.add(key)
        if key in superseded:
            continue
        if is_running(job) or (key in in_flight and not job.finished):
            running += 1
        elif is_queued(job):
            queued.append(job)
    running += len(in_flight - seen_in_flight)
    queued.sort(key=queue_order)
    if max_running_jobs <= 0:
        return queued
    return queued[: max(0, max_running_jobs - running)]


def may_start_now(
    jobs: Iterable[JobSummary],
    max_running_jobs: int,
    *,
    queued_at: str,
    namespace: str,
    name: str,
    in_flight: frozenset[tuple[str, str]] = frozenset(),
) -> bool:
    """Whether a new Job may be created running: a slot is free and no Job ahead
    of it in the queue order is waiting."""
    if max_running_jobs <= 0:
        return True
    mine = (queued_at, namespace, name)
    running = 0
    seen_in_flight: set[tuple[str, str]] = set()
    for job in jobs:
        key = (job.namespace, job.name)
        if key in in_flight:
            seen_in_flight.add(key)
        if is_queued(job) and key not in in_flight and queue_order(job) < mine:
            return False
        if is_running(job) or (key in in_flight and not job.finished):
            running += 1
    running += len(in_flight - seen_in_flight)
    return running < max_running_jobs
