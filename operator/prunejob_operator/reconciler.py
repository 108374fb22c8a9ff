"""The reconcile: a PruneJob's cached state in, its Job and status out. No kopf here.

Every watch event — a PruneJob, one of its Jobs, one of their Pods — names a PruneJob
to reconcile. `reconcile()` reads the cache (never the API server) and works on the
PruneJob's current *run* (`runs.run_key` of its spec): it adopts the run's Job, or
creates one (`<name>-g<generation>`, deterministic: a 409 means it exists); a run whose
result the status records is never repeated, an edit of operational fields only moves
`observedGeneration`. Jobs of superseded runs are deleted unless finished, and a new run
starts once their pods have stopped (two runs of one PruneJob never write at once).
Worker pods carry the result finalizer; it is removed once the pod's result is recorded
(or the pod holds none that matters). `spec.suspend` suspends the run's Job (a Kueue
Job is deleted instead: Kueue would unsuspend it) or creates none. What it wrote itself
it trusts over the cache until the watch catches up (`expectations`). Runs of one
PruneJob never overlap and failures are retried with backoff (`workqueue`). With a
concurrency cap, `admit()` unsuspends queued Jobs in their turn (`queue`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime

from prunejob_operator import manifests, models, queue
from prunejob_operator.cache import Cache
from prunejob_operator.events import EventRecorder
from prunejob_operator.expectations import Expectations
from prunejob_operator.kubeapi import KubeApi, ObjectRef
from prunejob_operator.metrics import Metrics
from prunejob_operator.records import JobSummary, PodSummary, PruneJobRecord, summarize_job
from prunejob_operator.settings import OperatorConfig
from prunejob_operator.status import (
    Observation,
    build_status,
    derive,
    invalid_spec,
    observe_generation,
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
            # Its Jobs and Pods go with it (ownerReferences); its pods' finalizers go too.
            await self.trigger(record.namespace, record.name)
            return
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
        """A managed Job or Pod changed or went: reconcile its PruneJob (a lost Job, or the
        last pod of a superseded run gone, lets a run go on)."""
        if owner:
            await self.trigger(namespace, owner)

    async def trigger(self, namespace: str, name: str) -> None:
        await self.queue.run(("prunejob", namespace, name), self._reconciling(namespace, name))

    def recheck(self, namespace: str, name: str, after: float) -> None:
        """Reconcile the PruneJob again in `after` seconds (a wait with a deadline)."""
        self.queue.later(("prunejob", namespace, name), after, self._reconciling(namespace, name))

    def _reconciling(self, namespace: str, name: str) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            await self.reconcile(namespace, name)

        return work

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

    def jobs_of(self, namespace: str, name: str) -> list[JobSummary]:
        """The PruneJob's Jobs, with the ones we created that the cache lacks yet."""
        cached = self.cache.jobs_of(namespace, name)
        for job in cached:  # the watch shows it: no longer trusted over the cache
            self.expectations.job((namespace, job.name), job)
        return [*self.expectations.created_jobs_of(namespace, name), *cached]

    def previous_status(self, record: PruneJobRecord) -> models.PruneJobStatus:
        """The status as last written (ours until the watch shows it), with a status of
        an operator before run keys read as a record of the current run."""
        previous = self.expectations.status(record.uid, record.resource_version, record.status)
        if (
            previous.run is None
            and record.run_key is not None
            and previous.observed_generation == record.generation
            and previous.phase in models.TERMINAL_PHASES
        ):
            job_name = previous.job_name or manifests.job_name(record.name, record.generation)
            run = models.RunRef(key=record.run_key, job_name=job_name, generation=record.generation)
            previous = previous.model_copy(update={"run": run})
        return previous

    def current_run(
        self, record: PruneJobRecord, previous: models.PruneJobStatus, jobs: list[JobSummary]
    ) -> tuple[models.RunRef, JobSummary | None]:
        """The current run and its Job (None: not created yet, or gone).

        A Job belongs to the run when it carries the run key and is not older than the
        run the status records: a result-defining edit that is reverted later starts a
        new run (its output may have been replaced meanwhile), never revives an old one.
        """
        key = record.run_key or ""
        recorded = previous.run
        if recorded is None:
            floor = 0
        elif recorded.key == key:
            floor = recorded.generation
        else:
            floor = recorded.generation + 1
        candidates = [
            job
            for job in jobs
            if not job.deleting
            and job.generation >= floor
            and (job.run_key == key or (not job.run_key and job.generation == record.generation))
        ]
        if candidates:
            named = [job for job in candidates if recorded and job.name == recorded.job_name]
            job = named[0] if named else max(candidates, key=lambda item: item.generation)
            return models.RunRef(key=key, job_name=job.name, generation=job.generation), job
        if recorded is not None and recorded.key == key:
            return recorded, None  # the run's Job is gone: its pods may hold its result
        name = manifests.job_name(record.name, record.generation)
        return models.RunRef(key=key, job_name=name, generation=record.generation), None

    async def reconcile(self, namespace: str, name: str) -> None:
        record = self.cache.prunejob(namespace, name)
        pods = self.cache.pods_of_prunejob(namespace, name)
        if record is None or record.deleting:
            await self.release(namespace, pods)  # nothing of it waits for a result now
            return
        # Pods of an earlier PruneJob of the same name are not this one's.
        foreign = [pod for pod in pods if pod.owner_uid and pod.owner_uid != record.uid]
        await self.release(namespace, foreign)
        pods = [pod for pod in pods if not pod.owner_uid or pod.owner_uid == record.uid]

        previous = self.previous_status(record)
        self.metrics.set_phase((namespace, name), previous.phase)
        spec = record.parsed
        if isinstance(spec, models.InvalidSpecError):
            await self.write_status(record, previous, invalid_spec(record.generation, str(spec)))
            return

        jobs = self.jobs_of(namespace, name)
        run, job = self.current_run(record, previous, jobs)
        mine = [pod for pod in pods if pod.job_name == run.job_name]
        if job is not None:  # a lost Job's pods may share the new Job's name
            mine = [pod for pod in mine if not pod.job_uid or pod.job_uid == job.uid]
        taken = {pod.name for pod in mine}
        others = [pod for pod in pods if pod.name not in taken]
        await self.stop_superseded(namespace, run, jobs)
        await self.release(namespace, [pod for pod in others if pod.terminal or pod.deleting])

        if record.recorded(previous):
            # The run's result is recorded: never again while the key stays. An edit of
            # operational fields (generation bump) only moves observedGeneration.
            if previous.observed_generation != record.generation:
                await self.write_status(
                    record, previous, None, observe_generation(previous, record.generation)
                )
            await self.release(namespace, [pod for pod in mine if pod.terminal or pod.deleting])
            return

        if job is not None and not job.finished and spec.suspend:
            job = await self.suspend(job)

        observed = derive(
            generation=record.generation,
            job_name=run.job_name,
            job=job,
            pods=mine,
            max_running_jobs=self.config.max_running_jobs,
            suspended=spec.suspend,
            backoff_limit=spec.backoff_limit,
            run=run,
            now=self._now(),
        )
        if observed.recheck_after is not None:
            self.recheck(namespace, name, observed.recheck_after)
        if job is None and not observed.terminal and not spec.suspend:
            # A new run, or a lost Job whose pods say the run did not end: create the
            # run's Job (named for this generation) once no pod of this PruneJob runs.
            await self.release(namespace, [pod for pod in mine if pod.terminal or pod.deleting])
            running = [pod for pod in pods if not pod.terminal]
            if running:
                observed = dataclasses.replace(
                    observed, message=f"waiting for pod {running[0].name} to stop first"
                )
            else:
                fresh = models.RunRef(
                    key=run.key,
                    job_name=manifests.job_name(name, record.generation),
                    generation=record.generation,
                )
                job = await self.create_job(record, spec, fresh)
                if job is not None:
                    started = derive(
                        generation=record.generation,
                        job_name=fresh.job_name,
                        job=job,
                        pods=[],
                        max_running_jobs=self.config.max_running_jobs,
                        run=fresh,
                    )
                    # A lost Job's pods were attempts of this run too.
                    observed = dataclasses.replace(
                        started,
                        attempts=observed.attempts,
                        failed_attempts=observed.failed_attempts,
                    )
        written = await self.write_status(record, previous, observed)
        if observed.terminal and written:
            await self.release(namespace, [pod for pod in mine if pod.terminal or pod.deleting])
        elif not observed.terminal:
            # A pod stopped for the run to go on (suspend, a deleted pod) holds no result.
            dropped = [pod for pod in mine if pod.deleting and pod.phase != "Succeeded"]
            await self.release(namespace, dropped)
        if job is not None and queue.is_queued(job) and not spec.suspend:
            await self.trigger_admission()  # resumed: the queue starts it in its turn

    async def stop_superseded(
        self, namespace: str, run: models.RunRef, jobs: list[JobSummary]
    ) -> None:
        """Delete the unfinished Jobs of earlier runs (their pods stop; the new run starts
        once they have). Finished ones stay until their TTL."""
        for old in jobs:
            if old.name == run.job_name or old.finished or old.deleting:
                continue
            if self.expectations.first_request("delete", namespace, old.name):
                LOG.info("deleting Job %s/%s: its run is superseded", namespace, old.name)
                await self.api.delete_job(namespace, old.name)

    async def suspend(self, job: JobSummary) -> JobSummary | None:
        """spec.suspend on an unfinished Job: suspend it (its pods are deleted); a Kueue
        Job is deleted, since Kueue unsuspends an admitted Job. Returns the Job as it
        will be (None: deleted)."""
        if job.kueue:
            if self.expectations.first_request("delete", job.namespace, job.name):
                LOG.info("deleting Kueue Job %s/%s: spec.suspend", job.namespace, job.name)
                await self.api.delete_job(job.namespace, job.name)
            return None
        if not job.suspended:
            LOG.info("suspending Job %s/%s: spec.suspend", job.namespace, job.name)
            await self.api.set_job_suspended(job.namespace, job.name, True)
            self.expectations.not_starting((job.namespace, job.name))
            return dataclasses.replace(job, suspended=True)
        return job

    async def release(self, namespace: str, pods: list[PodSummary]) -> None:
        """Remove the result finalizer from `pods` (those that still carry it)."""
        for pod in pods:
            if manifests.RESULT_FINALIZER not in pod.finalizers:
                continue
            if self.expectations.first_request(
                "release", namespace, pod.name, pod.resource_version
            ):
                await self.api.remove_pod_finalizer(
                    namespace,
                    pod.name,
                    manifests.RESULT_FINALIZER,
                    finalizers=pod.finalizers,
                    version=pod.resource_version,
                )

    async def create_job(
        self, record: PruneJobRecord, spec: models.PruneJobSpec, run: models.RunRef
    ) -> JobSummary | None:
        key = (record.namespace, run.job_name)
        cap = self.config.max_running_jobs
        kueue = manifests.kueue_queue(spec, record.labels) is not None
        start_now = not kueue and (
            cap <= 0
            or queue.may_start_now(
                self.waiting(),
                queue.count_running(self.cache.jobs(), self.in_flight()),
                cap,
                mine=self.order(record, spec),
            )
        )
        if start_now and cap > 0:
            self.expectations.starting(key)  # reserve the slot before awaiting
        manifest = manifests.build_job(
            name=record.name,
            namespace=record.namespace,
            uid=record.uid,
            generation=run.generation,
            created_at=record.created,
            spec=spec,
            default_image=self.config.worker_image,
            suspend=not start_now,
            run_key=run.key,
            prunejob_labels=record.labels,
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
            message=f"created Job {run.job_name} for generation {record.generation}",
        )
        return summary

    async def write_status(
        self,
        record: PruneJobRecord,
        previous: models.PruneJobStatus,
        observed: Observation | None,
        new: models.PruneJobStatus | None = None,
    ) -> bool:
        """Patch the status built from `observed` (or `new` as given) if it changed;
        True when the status now says it."""
        if new is None:
            assert observed is not None
            new = build_status(previous, observed, self._now())
        if new == previous:
            return True
        patched = await self.api.patch_prunejob_status(
            record.namespace, record.name, new.to_patch()
        )
        if patched is None:
            return False  # deleted meanwhile
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
        same_run = previous.run is not None and new.run is not None and previous.run == new.run
        newly_terminal = new.phase in models.TERMINAL_PHASES and (
            previous.phase != new.phase or not same_run
        )
        if newly_terminal and new.phase is not None:
            filters = (new.filters.before, new.filters.after) if new.filters else None
            self.metrics.record_finished(new.phase, new.start_time, new.completion_time, filters)
        return True

    # -- the concurrency queue --------------------------------------------------------

    def in_flight(self) -> frozenset[tuple[str, str]]:
        """Jobs we started whose watch event has not shown them running yet."""
        return self.expectations.in_flight(lambda key: self.cache.job(*key))

    def order(self, record: PruneJobRecord, spec: models.PruneJobSpec) -> queue.Order:
        priority = queue.priority_of(spec.priority_class_name, self.cache.priority_classes())
        return queue.order_of(priority, record.created, record.namespace, record.name)

    def waiting(self) -> list[queue.Waiting]:
        """PruneJobs (not Kueue's, not suspended) whose current run has not started."""
        classes = list(self.cache.priority_classes())
        found: list[queue.Waiting] = []
        for record in self.cache.prunejobs():
            spec = record.parsed
            if record.deleting or isinstance(spec, models.InvalidSpecError) or spec.suspend:
                continue
            if manifests.kueue_queue(spec, record.labels) is not None:
                continue
            previous = self.previous_status(record)
            if record.recorded(previous):
                continue
            _, job = self.current_run(record, previous, self.jobs_of(*record_key(record)))
            if job is None or queue.is_queued(job):
                priority = queue.priority_of(spec.priority_class_name, classes)
                order = queue.order_of(priority, record.created, record.namespace, record.name)
                found.append(queue.Waiting(order=order, job=job))
        return found

    async def admit(self) -> None:
        running = queue.count_running(self.cache.jobs(), self.in_flight())
        cap = self.config.max_running_jobs
        for job in queue.jobs_to_start(self.waiting(), running, cap):
            self.expectations.starting((job.namespace, job.name))
            LOG.info("starting queued Job %s/%s", job.namespace, job.name)
            await self.api.set_job_suspended(job.namespace, job.name, False)


def record_key(record: PruneJobRecord) -> tuple[str, str]:
    return record.namespace, record.name
