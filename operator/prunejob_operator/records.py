"""Watched bodies -> the slim records the operator keeps: PruneJobs, Jobs, Pods. Pure.

Thousands of these live in the operator's caches, so each keeps only what the
decisions read (`status.derive`, `queue`, the reconciler); nothing here talks to
the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from prunejob_operator.manifests import (
    ANNOTATION_OWNER,
    ANNOTATION_QUEUED_AT,
    CONTAINER_NAME,
    LABEL_GENERATION,
    LABEL_KUEUE_QUEUE,
)
from prunejob_operator.models import PruneJobStatus

Body = Mapping[str, Any]


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

    @property
    def finished_generation(self) -> bool:
        """The status already records the end of the current generation's run."""
        return self.status.observed_generation == self.generation and self.status.phase in (
            "Succeeded",
            "Failed",
        )


def parse_status(raw: Any) -> PruneJobStatus:
    """The stored status; an unreadable one counts as empty (it gets rewritten)."""
    try:
        return PruneJobStatus.model_validate(raw or {})
    except ValidationError:
        return PruneJobStatus()


def record_of(body: Body) -> PruneJobRecord:
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


@dataclass(frozen=True)
class JobSummary:
    """What the operator remembers of a Job (kept small: thousands live in memory)."""

    namespace: str
    name: str
    owner: str
    generation: int
    suspended: bool
    kueue: bool
    queued_at: str
    complete: bool = False
    failed: bool = False
    failed_reason: str = ""
    failed_message: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    failed_pods: int = 0
    backoff_limit: int = 6  # Kubernetes' default

    @property
    def finished(self) -> bool:
        return self.complete or self.failed


@dataclass(frozen=True)
class PodSummary:
    name: str
    created: str
    phase: str
    start_time: str | None = None
    unschedulable: str | None = None  # the scheduler's message
    waiting_reason: str | None = None
    waiting_message: str = ""
    running: bool = False
    exit_code: int | None = None
    terminated_reason: str = ""
    termination_message: str = ""
    finished_at: str | None = None


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
        complete=complete,
        failed=failed,
        failed_reason=failed_reason,
        failed_message=failed_message,
        start_time=status.get("startTime"),
        completion_time=completion_time,
        failed_pods=int(status.get("failed") or 0),
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
    return PodSummary(
        name=metadata.get("name", ""),
        created=metadata.get("creationTimestamp", ""),
        phase=status.get("phase", "Pending"),
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
