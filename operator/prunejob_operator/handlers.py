"""kopf handlers: watch events in, one level-triggered reconcile per PruneJob out.

Every event — a PruneJob, one of its Jobs, one of their Pods — triggers
`Reconciler.reconcile(namespace, name)`, which reads the operator's in-memory
indices (kopf keeps them from the watch streams; handlers only run once they are
fully populated, so after a restart the operator sees every existing Job first),
creates the Job for the current generation if it is missing (deterministic name:
a 409 means it exists), and patches the status when the derived one differs.
No timers, no polling: Jobs and Pods are watched with a server-side label selector.

Reconciles of one PruneJob never overlap: a trigger while one runs marks it dirty
and it runs once more. Failures are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from prunejob_operator import kube, manifests, metrics, models, queue, settings
from prunejob_operator.status import (
    JobSummary,
    Observation,
    PodSummary,
    build_status,
    derive,
    invalid_spec,
    summarize_job,
    summarize_pod,
    transition_event,
)

LOG = logging.getLogger("prunejob_operator")
PJ_RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)
MANAGED = {manifests.LABEL_MANAGED_BY: manifests.MANAGED_BY}
MANAGED_SELECTOR = f"{manifests.LABEL_MANAGED_BY}={manifests.MANAGED_BY}"
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
INDEX_LAG_GRACE = 30.0  # seconds to trust our own writes over a lagging watch


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PruneJobRecord:
    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    resource_version: str
    deleting: bool
    spec: dict[str, Any]
    status: models.PruneJobStatus


def parse_status(raw: Any) -> models.PruneJobStatus:
    """The stored status; an unreadable one counts as empty (it gets rewritten)."""
    try:
        return models.PruneJobStatus.model_validate(raw or {})
    except ValidationError:
        return models.PruneJobStatus()


def record_of(body: kopf.Body | dict[str, Any]) -> PruneJobRecord:
    metadata = body.get("metadata", {})
    return PruneJobRecord(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        generation=int(metadata.get("generation") or 1),
        created=metadata.get("creationTimestamp", ""),
        resource_version=str(metadata.get("resourceVersion", "")),
        deleting=bool(metadata.get("deletionTimestamp")),
        spec=dict(body.get("spec") or {}),
        status=parse_status(body.get("status")),
    )


def _newer_or_same(seen: str, written: str) -> bool:
    if seen == written:
        return True
    if seen.isdigit() and written.isdigit():  # etcd's are integers; others: trust time
        return int(seen) > int(written)
    return False


def job_of_pod(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("name"))
    labels = body.get("metadata", {}).get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


@dataclass
class Reconciler:
    config: settings.OperatorConfig
    # kopf passes its settings to activity handlers only: the startup handler stores them.
    kopf_settings: kopf.OperatorSettings = field(default_factory=kopf.OperatorSettings)
    prunejobs: Any = None  # kopf indices, bound on the first event
    jobs: Any = None
    pods: Any = None
    _running: set[Hashable] = field(default_factory=set)
    _dirty: set[Hashable] = field(default_factory=set)
    _failures: dict[Hashable, int] = field(default_factory=dict)
    _written: dict[str, tuple[str, models.PruneJobStatus, float]] = field(default_factory=dict)
    _created: dict[tuple[str, str], tuple[JobSummary, float]] = field(default_factory=dict)
    _in_flight: dict[tuple[str, str], float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def bind(self, prunejobs: Any, jobs: Any, pods: Any) -> None:
        self.prunejobs, self.jobs, self.pods = prunejobs, jobs, pods

    # -- index lookups -------------------------------------------------------------

    @staticmethod
    def _one(index: Any, key: tuple[str, ...]) -> Any:
        if index is None or key not in index:
            return None
        return next(iter(index[key]), None)

    def prunejob(self, namespace: str, name: str) -> PruneJobRecord | None:
        return self._one(self.prunejobs, (namespace, name))

    def job(self, namespace: str, name: str) -> JobSummary | None:
        found: JobSummary | None = self._one(self.jobs, ("job", namespace, name))
        cached = self._created.get((namespace, name))
        if found is not None:
            self._created.pop((namespace, name), None)
            return found
        if cached is not None and time.monotonic() - cached[1] < INDEX_LAG_GRACE:
            return cached[0]
        return None

    def jobs_of(self, namespace: str, owner: str) -> list[JobSummary]:
        key = ("owner", namespace, owner)
        return list(self.jobs[key]) if self.jobs is not None and key in self.jobs else []

    def pods_of(self, namespace: str, job_name: str) -> list[PodSummary]:
        key = (namespace, job_name)
        return list(self.pods[key]) if self.pods is not None and key in self.pods else []

    def all_jobs(self) -> Iterator[JobSummary]:
        if self.jobs is None:
            return
        for key in list(self.jobs):
            if key[0] == "job":
                yield from list(self.jobs[key])

    def previous_status(self, record: PruneJobRecord) -> models.PruneJobStatus:
        """The status as last written: our own patch until the watch has caught up."""
        cached = self._written.get(record.uid)
        if cached is None:
            return record.status
        written_version, status, when = cached
        if _newer_or_same(record.resource_version, written_version) or (
            time.monotonic() - when > INDEX_LAG_GRACE
        ):
            del self._written[record.uid]
            return record.status
        return status

    # -- scheduling ---------------------------------------------------------------

    async def run_once_at_a_time(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            while True:
                self._dirty.discard(key)
                try:
                    await work()
                    self._failures.pop(key, None)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    self._schedule_retry(key, work, err)
                if key not in self._dirty:
                    break
        finally:
            self._running.discard(key)

    def _schedule_retry(
        self, key: Hashable, work: Callable[[], Awaitable[None]], err: Exception
    ) -> None:
        attempt = self._failures.get(key, 0)
        self._failures[key] = attempt + 1
        delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        step = key[0] if isinstance(key, tuple) else str(key)
        metrics.RECONCILE_ERRORS.labels(step=str(step)).inc()
        LOG.error("reconcile %s failed (retry in %.0fs): %s", key, delay, err)

        async def again() -> None:
            await asyncio.sleep(delay)
            await self.run_once_at_a_time(key, work)

        task = asyncio.get_running_loop().create_task(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the reconcile ------------------------------------------------------------

    async def trigger(self, namespace: str, name: str) -> None:
        async def work() -> None:
            await self.reconcile(namespace, name, self.kopf_settings)

        await self.run_once_at_a_time(("prunejob", namespace, name), work)

    async def reconcile(
        self, namespace: str, name: str, kopf_settings: kopf.OperatorSettings
    ) -> None:
        record = self.prunejob(namespace, name)
        if record is None or record.deleting:
            return
        previous = self.previous_status(record)
        metrics.set_phase((namespace, name), previous.phase)
        try:
            spec = models.parse_spec(record.spec)
        except models.InvalidSpecError as err:
            observed = invalid_spec(record.generation, str(err))
            await self.write_status(record, previous, observed, kopf_settings)
            return

        job_name = manifests.job_name(name, record.generation)
        for old in self.jobs_of(namespace, name):
            if old.generation < record.generation and old.suspended and not old.finished:
                LOG.info("deleting Job %s/%s: superseded before it started", namespace, old.name)
                await kube.delete_job(namespace, old.name, settings=kopf_settings, logger=LOG)

        job = self.job(namespace, job_name)
        if job is None and self._finished_generation(record):
            return  # its Job is gone (ttlSecondsAfterFinished): the status stays as it was
        if job is None:
            job = await self.create_job(record, spec, job_name, kopf_settings)
        observed = derive(
            generation=record.generation,
            job_name=job_name,
            job=job,
            pods=self.pods_of(namespace, job_name),
            max_running_jobs=self.config.max_running_jobs,
        )
        await self.write_status(record, previous, observed, kopf_settings)

    async def create_job(
        self,
        record: PruneJobRecord,
        spec: models.PruneJobSpec,
        job_name: str,
        kopf_settings: kopf.OperatorSettings,
    ) -> JobSummary | None:
        key = (record.namespace, job_name)
        start_now = spec.queue_name is None and (
            self.config.max_running_jobs <= 0
            or queue.may_start_now(
                self.waiting(),
                queue.count_running(self.all_jobs(), self.in_flight()),
                self.config.max_running_jobs,
                mine=(record.created, record.namespace, record.name),
            )
        )
        if start_now and self.config.max_running_jobs > 0:
            self._in_flight[key] = time.monotonic()  # reserve the slot before awaiting
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
        created = await kube.create_job(manifest, settings=kopf_settings, logger=LOG)
        if created is None:  # 409: it exists; its watch event brings it to the index
            self._in_flight.pop(key, None)
            return None
        summary = summarize_job(created)
        if summary is None:
            return None
        self._created[key] = (summary, time.monotonic())
        metrics.JOBS_CREATED.inc()
        state = "suspended (queued)" if summary.suspended else "running"
        LOG.info("created Job %s/%s for generation %d, %s", *key, record.generation, state)
        kopf.event(
            self.object_ref(record),
            type="Normal",
            reason="JobCreated",
            message=f"created Job {job_name} for generation {record.generation}",
        )
        return summary

    @staticmethod
    def object_ref(record: PruneJobRecord) -> dict[str, Any]:
        return {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
        }

    async def write_status(
        self,
        record: PruneJobRecord,
        previous: models.PruneJobStatus,
        observed: Observation,
        kopf_settings: kopf.OperatorSettings,
    ) -> None:
        new = build_status(previous, observed, utc_now())
        if new == previous:
            return
        patched = await kube.patch_prunejob_status(
            record.namespace, record.name, new.to_patch(), settings=kopf_settings, logger=LOG
        )
        if patched is None:
            return  # deleted meanwhile
        version = str(patched.get("metadata", {}).get("resourceVersion", ""))
        self._written[record.uid] = (version, new, time.monotonic())
        metrics.set_phase((record.namespace, record.name), new.phase)
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
            kopf.event(
                self.object_ref(record), type=event.type, reason=event.reason, message=event.message
            )
        newly_terminal = new.phase in ("Succeeded", "Failed") and (
            previous.phase != new.phase or previous.observed_generation != new.observed_generation
        )
        if newly_terminal and new.phase is not None:
            filters = (new.filters.before, new.filters.after) if new.filters else None
            metrics.record_finished(new.phase, new.start_time, new.completion_time, filters)

    # -- the concurrency queue ------------------------------------------------------

    def in_flight(self) -> frozenset[tuple[str, str]]:
        """Jobs we started whose watch event has not shown them running yet."""
        now = time.monotonic()
        for key, since in list(self._in_flight.items()):
            job = self._one(self.jobs, ("job", *key))
            landed = job is not None and (not job.suspended or job.finished)
            if landed or now - since > INDEX_LAG_GRACE:
                del self._in_flight[key]
        return frozenset(self._in_flight)

    async def trigger_admission(self) -> None:
        async def work() -> None:
            await self.admit(self.kopf_settings)

        await self.run_once_at_a_time("admission", work)

    def waiting(self) -> list[queue.Waiting]:
        """PruneJobs (not Kueue's) whose current generation has not started yet."""
        found: list[queue.Waiting] = []
        if self.prunejobs is None:
            return found
        for key in list(self.prunejobs):
            record: PruneJobRecord | None = self._one(self.prunejobs, key)
            if record is None or record.deleting or record.spec.get("queueName"):
                continue
            if self._finished_generation(record):
                continue
            job = self.job(record.namespace, manifests.job_name(record.name, record.generation))
            if job is None or queue.is_queued(job):
                order = (record.created, record.namespace, record.name)
                found.append(queue.Waiting(order=order, job=job))
        return found

    @staticmethod
    def _finished_generation(record: PruneJobRecord) -> bool:
        status = record.status
        return status.observed_generation == record.generation and status.phase in (
            "Succeeded",
            "Failed",
        )

    async def admit(self, kopf_settings: kopf.OperatorSettings) -> None:
        running = queue.count_running(self.all_jobs(), self.in_flight())
        to_start = queue.jobs_to_start(self.waiting(), running, self.config.max_running_jobs)
        for job in to_start:
            self._in_flight[(job.namespace, job.name)] = time.monotonic()
            LOG.info("starting queued Job %s/%s", job.namespace, job.name)
            await kube.set_job_suspended(
                job.namespace, job.name, False, settings=kopf_settings, logger=LOG
            )

    def is_own_write(self, record: PruneJobRecord) -> bool:
        """The watch event of our own status patch: nothing new to reconcile."""
        cached = self._written.get(record.uid)
        return cached is not None and cached[0] == record.resource_version

    def forget(self, record: PruneJobRecord) -> None:
        self._written.pop(record.uid, None)
        metrics.forget((record.namespace, record.name))


_reconciler: Reconciler | None = None


def reconciler() -> Reconciler:
    global _reconciler
    if _reconciler is None:
        _reconciler = Reconciler(settings.current())
    return _reconciler


# -- kopf registrations ---------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = reconciler().config
    reconciler().kopf_settings = settings
    # Server-side filtering: the operator never streams other people's Jobs and Pods.
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["pods"] = MANAGED_SELECTOR
    # Reconnect watches regularly rather than trusting one long stream forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    settings.posting.reporting_component = "prunejob-operator"
    settings.posting.event_name_prefix = "prunejob-"
    settings.peering.mandatory = False
    if config.metrics_port:
        metrics.serve(config.metrics_port)
        LOG.info("Prometheus metrics on :%d/metrics", config.metrics_port)
    LOG.info(
        "prunejob operator: %s, max running Jobs %s, worker image %s",
        "all namespaces" if config.clusterwide else "namespaces " + ",".join(config.namespaces),
        config.max_running_jobs or "unlimited",
        config.worker_image,
    )


@kopf.index(*PJ_RESOURCE)
def pj_records(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    record = record_of(body)
    metrics.set_phase((namespace, name), record.status.phase)
    return {(namespace, name): record}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def job_records(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    summary = summarize_job(dict(body))
    if summary is None:
        return None
    return {
        ("job", summary.namespace, summary.name): summary,
        ("owner", summary.namespace, summary.owner): summary,
    }


@kopf.index("v1", "pods", labels=MANAGED)
def pod_records(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any] | None:
    job_name = job_of_pod(body)
    if job_name is None:
        return None
    return {(namespace, job_name): summarize_pod(dict(body))}


@kopf.on.event(*PJ_RESOURCE)
async def prunejob_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    name: str,
    pj_records: Any,
    job_records: Any,
    pod_records: Any,
    **_: Any,
) -> None:
    reconciler_ = reconciler()
    reconciler_.bind(pj_records, job_records, pod_records)
    if type == "DELETED":
        reconciler_.forget(record_of(body))
        return  # its Jobs and Pods go with it (ownerReferences); their events free slots
    if not reconciler_.is_own_write(record_of(body)):
        await reconciler_.trigger(namespace, name)
    if reconciler_.config.max_running_jobs > 0:
        await reconciler_.trigger_admission()


async def _trigger_owner(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    pj_records: Any,
    job_records: Any,
    pod_records: Any,
) -> Reconciler:
    """What a managed Job's and a managed Pod's event share: bind the indexes, then
    reconcile the PruneJob named in the owner annotation, unless the object is deleted."""
    reconciler_ = reconciler()
    reconciler_.bind(pj_records, job_records, pod_records)
    owner = (body.get("metadata", {}).get("annotations") or {}).get(manifests.ANNOTATION_OWNER)
    if owner and type != "DELETED":
        await reconciler_.trigger(namespace, owner)
    return reconciler_


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    pj_records: Any,
    job_records: Any,
    pod_records: Any,
    **_: Any,
) -> None:
    reconciler_ = await _trigger_owner(type, body, namespace, pj_records, job_records, pod_records)
    summary = summarize_job(dict(body))
    # Without a cap, only leftovers of a capped run can be queued: start them too.
    if reconciler_.config.max_running_jobs > 0 or (summary and queue.is_queued(summary)):
        await reconciler_.trigger_admission()


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    pj_records: Any,
    job_records: Any,
    pod_records: Any,
    **_: Any,
) -> None:
    await _trigger_owner(type, body, namespace, pj_records, job_records, pod_records)
