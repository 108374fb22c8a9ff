"""The reconcile: a PruneJob's cached state in, its Job and status out. No kopf here.

Every watch event — a PruneJob, one of its Jobs, one of their Pods — names a PruneJob
to reconcile. `reconcile()` reads the cache (never the API server), creates the Job
for the current generation if it is missing (deterministic name: a 409 means it
exists), deletes a superseded Job that never started, and patches the status when the
derived one differs. What it wrote itself it trusts over the cache until the watch
catches up (`expectations`). Runs of one PruneJob never overlap and failures are
retried with backoff (`workqueue`). With a concurrency cap, `admit()` unsuspends
queued Jobs in their turn (`queue`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime

from prunejob_operator import manifests, models, queue
from prunejob_operator.cache import Cache
from prunejob_operator.events import EventRecorder
from prunejob_operator.expectations import Expectations
from prunejob_operator.kubeapi import KubeApi, ObjectRef
from prunejob_operator.metrics import Metrics
from prunejob_operator.records import JobSummary, PruneJobRecord, summarize_job
from prunejob_operator.settings import OperatorConfig
from prunejob_operator.status import (
    Observation,
    build_status,
    derive,
    invalid_spec,
    transition_event,
)
from prunejob_operator.workqueue import RETRY_DELAYS, WorkQueue

LOG = logging.getLogger("prunejob_operator")
ADMISSION = "admission"  # the work-queue key of the concurrency queue's admission


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_ref(record: PruneJobRecord) -> ObjectRef:
    return ObjectRef(models.API_VERSION, models.KIND, record.namespace, record.name, record.uid)


class Reconciler:
    def __init__(
        self,
        config: OperatorConfig,
        api: KubeApi,
        cache: Cache,
        *,
        metrics: Metrics | None = None,
        expectations: Expectations | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], str] = utc_now,
    ) -> None:
        self.config = config
        self.api = api
        self.cache = cache
        self.metrics = metrics or Metrics()
        self.expectations = expectations or Expectations()
        self.events = EventRecorder(api)
        self.queue: WorkQueue[Hashable] = WorkQueue(
            delays=retry_delays, on_failure=self._failed, sleep=sleep
        )
        self._now = now

    # -- what the watch events ask for ------------------------------------------------

    async def prunejob_event(self, event_type: str | None, record: PruneJobRecord) -> None:
        if event_type == "DELETED":
            self.forget(record)
            return  # its Jobs and Pods go with it (ownerReferences); their events free slots
        if not self.expectations.is_own_status(record.uid, record.resource_version):
            await self.trigger(record.namespace, record.name)
        if self.config.max_running_jobs > 0:
            await self.trigger_admission()

    async def job_event(
        self, event_type: str | None, namespace: str, owner: str | None, job: JobSummary | None
    ) -> None:
        await self.owned_event(event_type, namespace, owner)
        # Without a cap, only leftovers of a capped run can be queued: start them too.
        if self.config.max_running_jobs > 0 or (job is not None and queue.is_queued(job)):
            await self.trigger_admission()

    async def owned_event(self, event_type: str | None, namespace: str, owner: str | None) -> None:
        """A managed Job or Pod changed: reconcile its PruneJob, unless it is deleted."""
        if owner and event_type != "DELETED":
            await self.trigger(namespace, owner)

    async def trigger(self, namespace: str, name: str) -> None:
        async def work() -> None:
            await self.reconcile(namespace, name)

        await self.queue.run(("prunejob", namespace, name), work)

    async def trigger_admission(self) -> None:
        await self.queue.run(ADMISSION, self.admit)

    def forget(self, record: PruneJobRecord) -> None:
        self.expectations.forget(record.uid)
        self.metrics.forget((record.namespace, record.name))

    def _failed(self, key: Hashable, delay: float, err: Exception) -> None:
        step = key[0] if isinstance(key, tuple) else str(key)
        self.metrics.reconcile_errors.labels(step=str(step)).inc()
        LOG.error("reconcile %s failed (retry in %.0fs): %s", key, delay, err)

    async def aclose(self, timeout: float = 5.0) -> None:
        """At shutdown: drop the pending retries, post the recorded Events."""
        await self.queue.aclose()
        await self.events.drain(timeout)

    # -- the reconcile ----------------------------------------------------------------

    def job(self, namespace: str, name: str) -> JobSummary | None:
        """The Job as cached, or as we created it while the watch has not shown it yet."""
        return self.expectations.job((namespace, name), self.cache.job(namespace, name))

    async def reconcile(self, namespace: str, name: str) -> None:
        record = self.cache.prunejob(namespace, name)
        if record is None or record.deleting:
            return
        previous = self.expectations.status(record.uid, record.resource_version, record.status)
        self.metrics.set_phase((namespace, name), previous.phase)
        try:
            spec = models.parse_spec(record.spec)
        except models.InvalidSpecError as err:
            await self.write_status(record, previous, invalid_spec(record.generation, str(err)))
            return

        job_name = manifests.job_name(name, record.generation)
        for old in self.cache.jobs_of(namespace, name):
            if old.generation < record.generation and old.suspended and not old.finished:
                LOG.info("deleting Job %s/%s: superseded before it started", namespace, old.name)
                await self.api.delete_job(namespace, old.name)

        job = self.job(namespace, job_name)
        if job is None and record.finished_generation:
            return  # its Job is gone (ttlSecondsAfterFinished): the status stays as it was
        if job is None:
            job = await self.create_job(record, spec, job_name)
        observed = derive(
            generation=record.generation,
            job_name=job_name,
            job=job,
            pods=self.cache.pods_of(namespace, job_name),
            max_running_jobs=self.config.max_running_jobs,
        )
        await self.write_status(record, previous, observed)

    async def create_job(
        self, record: PruneJobRecord, spec: models.PruneJobSpec, job_name: str
    ) -> JobSummary | None:
        key = (record.namespace, job_name)
        cap = self.config.max_running_jobs
        start_now = spec.queue_name is None and (
            cap <= 0
            or queue.may_start_now(
                self.waiting(),
                queue.count_running(self.cache.jobs(), self.in_flight()),
                cap,
                mine=(record.created, record.namespace, record.name),
            )
        )
        if start_now and cap > 0:
            self.expectations.starting(key)  # reserve the slot before awaiting
        manifest = manifests.build_job(
            name=record.name,
            namespace=record.namespace,
            uid=record.uid,
            generation=record.generation,
            created_at=record.created,
            spec=spec,
            default_image=self.config.worker_image,
            suspend=not start_now,
        )
        created = await self.api.create_job(manifest)
        if created is None:  # 409: it exists; its watch event brings it to the cache
            self.expectations.not_starting(key)
            return None
        summary = summarize_job(created)
        if summary is None:
            return None
        self.expectations.created_job(summary)
        self.metrics.jobs_created.inc()
        state = "suspended (queued)" if summary.suspended else "running"
        LOG.info("created Job %s/%s for generation %d, %s", *key, record.generation, state)
        self.events.record(
            object_ref(record),
            type="Normal",
            reason="JobCreated",
            message=f"created Job {job_name} for generation {record.generation}",
        )
        return summary

    async def write_status(
        self, record: PruneJobRecord, previous: models.PruneJobStatus, observed: Observation
    ) -> None:
        new = build_status(previous, observed, self._now())
        if new == previous:
            return
        patched = await self.api.patch_prunejob_status(
            record.namespace, record.name, new.to_patch()
        )
        if patched is None:
            return  # deleted meanwhile
        version = str(patched.get("metadata", {}).get("resourceVersion", ""))
        self.expectations.wrote_status(record.uid, version, new)
        self.metrics.set_phase((record.namespace, record.name), new.phase)
        event = transition_event(previous, new)
        if event is not None:
            LOG.info(
                "PruneJob %s/%s generation %s: %s %s: %s",
                record.namespace,
                record.name,
                new.observed_generation,
                new.phase,
                event.reason,
                event.message,
            )
            self.events.record(
                object_ref(record), type=event.type, reason=event.reason, message=event.message
            )
        newly_terminal = new.phase in ("Succeeded", "Failed") and (
            previous.phase != new.phase or previous.observed_generation != new.observed_generation
        )
        if newly_terminal and new.phase is not None:
            filters = (new.filters.before, new.filters.after) if new.filters else None
            self.metrics.record_finished(new.phase, new.start_time, new.completion_time, filters)

    # -- the concurrency queue --------------------------------------------------------

    def in_flight(self) -> frozenset[tuple[str, str]]:
        """Jobs we started whose watch event has not shown them running yet."""
        return self.expectations.in_flight(lambda key: self.cache.job(*key))

    def waiting(self) -> list[queue.Waiting]:
        """PruneJobs (not Kueue's) whose current generation has not started yet."""
        found: list[queue.Waiting] = []
        for record in self.cache.prunejobs():
            if record.deleting or record.spec.get("queueName") or record.finished_generation:
                continue
            job = self.job(record.namespace, manifests.job_name(record.name, record.generation))
            if job is None or queue.is_queued(job):
                order = (record.created, record.namespace, record.name)
                found.append(queue.Waiting(order=order, job=job))
        return found

    async def admit(self) -> None:
        running = queue.count_running(self.cache.jobs(), self.in_flight())
        cap = self.config.max_running_jobs
        for job in queue.jobs_to_start(self.waiting(), running, cap):
            self.expectations.starting((job.namespace, job.name))
            LOG.info("starting queued Job %s/%s", job.namespace, job.name)
            await self.api.set_job_suspended(job.namespace, job.name, False)
