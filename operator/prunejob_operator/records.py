"""Watched bodies -> the slim records the operator keeps: PruneJobs, Jobs, Pods. Pure.

Thousands of these live in the operator's caches, so each keeps only what the
decisions read (`status.derive`, `queue`, the reconciler); nothing here talks to
the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from prunejob_operator import runs
from prunejob_operator.manifests import (
    ANNOTATION_BACKOFF_LIMIT,
    ANNOTATION_OWNER,
    ANNOTATION_OWNER_UID,
    ANNOTATION_QUEUED_AT,
    CONTAINER_NAME,
    KUEUE_LABELS,
    LABEL_GENERATION,
    LABEL_KUEUE_QUEUE,
    LABEL_RUN_KEY,
)
from prunejob_operator.models import (
    TERMINAL_PHASES,
    InvalidSpecError,
    PruneJobSpec,
    PruneJobStatus,
    parse_spec,
)

Body = Mapping[str, Any]


def seconds_between(start: str | None, end: str | None) -> float | None:
    """`end` - `start` in seconds, for the API's RFC 3339 timestamps; None when either
    is missing or unreadable."""
    if not start or not end:
        return None
    try:
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        finish = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (finish - begin).total_seconds()


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
    status: PruneJobStatus
    labels: Mapping[str, str] = field(default_factory=dict)  # only Kueue's labels

    @cached_property
    def parsed(self) -> PruneJobSpec | InvalidSpecError:
        """The validated spec, or why it is invalid (parsed once per record)."""
        try:
            return parse_spec(self.spec)
        except InvalidSpecError as err:
            return err

    @cached_property
    def run_key(self) -> str | None:
        """The run key of the spec (`runs.run_key`); None for an invalid spec."""
        spec = self.parsed
        return None if isinstance(spec, InvalidSpecError) else runs.run_key(spec)

    def recorded(self, status: PruneJobStatus | None = None) -> bool:
        """Whether `status` (default: the stored one) holds the end of the current run."""
        status = status or self.status
        return (
            status.run is not None
            and status.run.key == self.run_key
            and status.phase in TERMINAL_PHASES
        )


def parse_status(raw: Any) -> PruneJobStatus:
    """The stored status; an unreadable one counts as empty (it gets rewritten)."""
    try:
        return PruneJobStatus.model_validate(raw or {})
    except ValidationError:
        return PruneJobStatus()


def record_of(body: Body) -> PruneJobRecord:
    metadata = body.get("metadata", {})
    labels = metadata.get("labels") or {}
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
        labels={key: str(labels[key]) for key in KUEUE_LABELS if labels.get(key)},
    )


def owner_of(body: Body) -> str | None:
    """The PruneJob a managed Job or Pod belongs to (the owner annotation)."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    return annotations.get(ANNOTATION_OWNER) or None


def job_of_pod(body: Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("name"))
    labels = body.get("metadata", {}).get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def job_uid_of_pod(body: Body) -> str:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("uid") or "")
    labels = body.get("metadata", {}).get("labels") or {}
    return str(
        labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid") or ""
    )


@dataclass(frozen=True)
class JobSummary:
    """What the operator remembers of a Job (kept small: thousands live in memory)."""

    namespace: str
    name: str
    owner: str
    generation: int  # the PruneJob generation that created it
    suspended: bool
    kueue: bool
    queued_at: str
    run_key: str = ""  # "" on Jobs of operators before run keys
    uid: str = ""
    deleting: bool = False
    complete: bool = False
    failed: bool = False
    failed_reason: str = ""
    failed_message: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    failed_pods: int = 0
    succeeded_pods: int = 0
    active_pods: int = 0
    backoff_limit: int = 6  # Kubernetes' default

    @property
    def finished(self) -> bool:
        return self.complete or self.failed


@dataclass(frozen=True)
class PodSummary:
    name: str
    created: str
    phase: str
    job_name: str = ""
    job_uid: str = ""
    owner: str = ""  # the PruneJob's name and uid (the Job template's annotations)
    owner_uid: str = ""
    resource_version: str = ""
    finalizers: tuple[str, ...] = ()
    deleting: bool = False
    backoff_limit: int | None = None  # the Job's, from the pod's annotation
    start_time: str | None = None
    unschedulable: str | None = None  # the scheduler's message
    waiting_reason: str | None = None
    waiting_message: str = ""
    running: bool = False
    exit_code: int | None = None
    terminated_reason: str = ""
    termination_message: str = ""
    finished_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def summarize_job(body: Body) -> JobSummary | None:
    """None for Jobs that are not ours (no owner annotation or generation label)."""
    metadata = body.get("metadata", {})
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    owner = annotations.get(ANNOTATION_OWNER)
    try:
        generation = int(labels.get(LABEL_GENERATION, ""))
    except ValueError:
        return None
    if not owner:
        return None
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    complete = failed = False
    failed_reason = failed_message = ""
    completion_time = status.get("completionTime")
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            complete = True
        elif condition.get("type") == "Failed":
            failed = True
            failed_reason = condition.get("reason", "")
            failed_message = condition.get("message", "")
            completion_time = completion_time or condition.get("lastTransitionTime")
    return JobSummary(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        owner=owner,
        generation=generation,
        suspended=bool(spec.get("suspend")),
        kueue=LABEL_KUEUE_QUEUE in labels,
        queued_at=annotations.get(ANNOTATION_QUEUED_AT) or metadata.get("creationTimestamp", ""),
        run_key=str(labels.get(LABEL_RUN_KEY) or ""),
        uid=str(metadata.get("uid") or ""),
        deleting=bool(metadata.get("deletionTimestamp")),
        complete=complete,
        failed=failed,
        failed_reason=failed_reason,
        failed_message=failed_message,
        start_time=status.get("startTime"),
        completion_time=completion_time,
        failed_pods=int(status.get("failed") or 0),
        succeeded_pods=int(status.get("succeeded") or 0),
        active_pods=int(status.get("active") or 0),
        backoff_limit=int(spec.get("backoffLimit", 6)),
    )


def summarize_pod(body: Body) -> PodSummary:
    metadata = body.get("metadata", {})
    status = body.get("status") or {}
    unschedulable = None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            unschedulable = condition.get("message") or "no node fits the pod"
    container: dict[str, Any] = {}
    for item in status.get("containerStatuses") or []:
        if item.get("name") == CONTAINER_NAME:
            container = item
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    annotations = metadata.get("annotations") or {}
    try:
        backoff_limit: int | None = int(annotations[ANNOTATION_BACKOFF_LIMIT])
    except (KeyError, ValueError):
        backoff_limit = None
    return PodSummary(
        name=metadata.get("name", ""),
        created=metadata.get("creationTimestamp", ""),
        phase=status.get("phase", "Pending"),
        job_name=job_of_pod(body) or "",
        job_uid=job_uid_of_pod(body),
        owner=annotations.get(ANNOTATION_OWNER) or "",
        owner_uid=annotations.get(ANNOTATION_OWNER_UID) or "",
        resource_version=str(metadata.get("resourceVersion", "")),
        finalizers=tuple(metadata.get("finalizers") or ()),
        deleting=bool(metadata.get("deletionTimestamp")),
        backoff_limit=backoff_limit,
        start_time=status.get("startTime"),
        unschedulable=unschedulable,
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message", ""),
        running="running" in state,
        exit_code=terminated.get("exitCode") if terminated else None,
        terminated_reason=terminated.get("reason", ""),
        termination_message=terminated.get("message", ""),
        finished_at=terminated.get("finishedAt"),
    )


@dataclass(frozen=True)
class PriorityClassSummary:
    """A scheduling.k8s.io/v1 PriorityClass: what the concurrency queue orders by."""

    name: str
    value: int
    global_default: bool = False


def summarize_priority_class(body: Body) -> PriorityClassSummary:
    return PriorityClassSummary(
        name=body.get("metadata", {}).get("name", ""),
        value=int(body.get("value") or 0),
        global_default=bool(body.get("globalDefault")),
    )
