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

    `in_flight`: (namespace, name) of Jobs already unsuspended whose watch event has
    not arrived yet; they count as running. `superseded`: Jobs of an old generation,
    never started. `max_running_jobs` <= 0 means no cap.
    """
    running = 0
    queued: list[JobSummary] = []
    for job in jobs:
        key = (job.namespace, job.name)
        if key in superseded:
            continue
        if is_running(job) or (key in in_flight and not job.finished):
            running += 1
        elif is_queued(job):
            queued.append(job)
    queued.sort(key=lambda job: (job.queued_at, job.namespace, job.name))
    if max_running_jobs <= 0:
        return queued
    return queued[: max(0, max_running_jobs - running)]
