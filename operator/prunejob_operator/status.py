"""Job + Pods state -> PruneJob status, conditions, reason codes and Events. Pure.

From the slim summaries of a Job and its Pods (`records.JobSummary`,
`records.PodSummary`), `derive()` turns them into an `Observation` (phase, reason, message,
results), and `build_status()` folds that into the previous status so a condition's
`lastTransitionTime` only moves when the condition really changes.

Reason codes (status.reason, the conditions' reason, Event reason):
- Pending: Creating, Queued, Starting, SecretNotFound, ImagePullBackOff, Unschedulable
- Running: Running, Retrying, Failing (the worker failed for good; the Job follows),
  Finishing
- Succeeded: Succeeded
- Failed: the worker's reason (prunejob_contract.errors: ModelNotFound, DecryptionFailed,
  UnsupportedLayer, AccessDenied, ...), DeadlineExceeded, BackoffLimitExceeded,
  InvalidSpec, JobFailed (the Job failed for a reason we cannot attribute).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prunejob_contract.errors import PERMANENT_REASONS
from prunejob_contract.termination import decode_message
from prunejob_operator.models import (
    BeforeAfter,
    Condition,
    LayerCount,
    OutputRef,
    Phase,
    PruneJobStatus,
)
from prunejob_operator.records import JobSummary, PodSummary

# Reasons that need someone to fix the environment; they are Warnings.
BLOCKED_REASONS = frozenset({"SecretNotFound", "ImagePullBackOff", "Unschedulable"})
IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


@dataclass(frozen=True)
class Observation:
    """The phase/reason/message/results for one generation, before conditions."""

    phase: Phase
    reason: str
    message: str
    generation: int
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    results: dict[str, Any] = field(default_factory=dict)  # status fields from the worker


def _latest(pods: list[PodSummary]) -> PodSummary | None:
    return max(pods, key=lambda pod: (pod.created, pod.name), default=None)


def _worker_failure(pod: PodSummary) -> tuple[str, str] | None:
    """(reason, message) from a failed pod's termination message, if it left one."""
    if not pod.termination_message:
        return None
    try:
        data = decode_message(pod.termination_message)
    except ValueError:
        return None
    if data.get("status") != "Failed":
        return None
    return str(data.get("reason") or "InternalError"), str(data.get("message") or "")


def _pod_failure_text(pod: PodSummary) -> str:
    worker = _worker_failure(pod)
    if worker:
        return f"{worker[0]}: {worker[1]}"
    if pod.terminated_reason or pod.exit_code is not None:
        text = f"container {pod.terminated_reason or 'terminated'} (exit code {pod.exit_code})"
        # With FallbackToLogsOnError a worker that died before writing its result (bad
        # arguments, a crash) leaves the tail of its log: its last line says why.
        last_line = next(
            (
                line.strip()
                for line in reversed(pod.termination_message.splitlines())
                if line.strip()
            ),
            "",
        )
        return f"{text}: {last_line[:300]}" if last_line else text
    return f"pod {pod.name} failed"


def results_from_message(text: str) -> dict[str, Any]:
    """Status fields from a success termination message; {} when there is none."""
    try:
        data = decode_message(text)
    except ValueError:
        return {}
    if data.get("status") != "Succeeded":
        return {}
    results: dict[str, Any] = {}
    for key in ("params", "filters", "flops"):
        pair = data.get(key)
        if isinstance(pair, list) and len(pair) == 2:
            results[key] = BeforeAfter(before=int(pair[0]), after=int(pair[1]))
    if "filters" in results:
        filters = results["filters"]
        results["filters_summary"] = f"{filters.before} -> {filters.after}"
    if data.get("pruningRatio") is not None:
        results["pruning_ratio"] = float(data["pruningRatio"])
    results["layers"] = [LayerCount(**layer) for layer in data.get("layers", [])]
    if isinstance(data.get("output"), dict) and data["output"].get("uri"):
        results["output"] = OutputRef(**data["output"])
    if data.get("reportUri"):
        results["report_uri"] = str(data["reportUri"])
    return results


def derive(
    *,
    generation: int,
    job_name: str,
    job: JobSummary | None,
    pods: list[PodSummary],
    max_running_jobs: int = 0,
) -> Observation:
    """What the status should say about `generation`, given its Job and Pods."""
    base = Observation(phase="Pending", reason="Creating", message="", generation=generation)
    if job is None:
        return dataclasses.replace(base, message=f"creating Job {job_name}", job_name=job_name)
    base = dataclasses.replace(base, job_name=job.name, start_time=job.start_time)
    latest = _latest(pods)

    if job.complete:
        succeeded = [pod for pod in pods if pod.phase == "Succeeded"]
        pod = _latest(succeeded)
        if pod is None:
            # The Job and Pod watches are not ordered: the pod (with the result) may
            # arrive after the Job's Complete. Report success only with its result.
            return dataclasses.replace(
                base,
                phase="Running",
                reason="Finishing",
                message="the Job completed; waiting for its pod's result",
            )
        results = results_from_message(pod.termination_message) if pod else {}
        message = "pruned" if results else "succeeded; the worker left no result message"
        if "filters_summary" in results:
            message = f"pruned filters {results['filters_summary']}"
            if "pruning_ratio" in results:
                message += f", params ratio {results['pruning_ratio']:.4f}"
        return dataclasses.replace(
            base,
            phase="Succeeded",
            reason="Succeeded",
            message=message,
            start_time=job.start_time or (pod.start_time if pod else None),
            completion_time=job.completion_time or (pod.finished_at if pod else None),
            results=results,
        )

    if job.failed:
        failed_pods = [pod for pod in pods if pod.phase == "Failed"]
        last_failed = _latest(failed_pods)
        worker = _worker_failure(last_failed) if last_failed else None
        finished = {"completion_time": job.completion_time}
        if job.failed_reason == "DeadlineExceeded":
            detail = job.failed_message or "the Job ran past activeDeadlineSeconds"
            return dataclasses.replace(
                base, phase="Failed", reason="DeadlineExceeded", message=detail, **finished
            )
        # A worker error no retry can fix names the real problem, whatever Job reason.
        if worker and (worker[0] in PERMANENT_REASONS or job.failed_reason == "PodFailurePolicy"):
            return dataclasses.replace(
                base, phase="Failed", reason=worker[0], message=worker[1], **finished
            )
        if job.failed_reason == "BackoffLimitExceeded":
            attempts = max(job.failed_pods, len(failed_pods))
            message = f"{attempts} attempt(s) failed"
            if last_failed:
                message += f"; last: {_pod_failure_text(last_failed)}"
            return dataclasses.replace(
                base, phase="Failed", reason="BackoffLimitExceeded", message=message, **finished
            )
        if worker:
            return dataclasses.replace(
                base, phase="Failed", reason=worker[0], message=worker[1], **finished
            )
        message = job.failed_message or f"Job failed ({job.failed_reason or 'no reason given'})"
        return dataclasses.replace(
            base, phase="Failed", reason="JobFailed", message=message, **finished
        )

    if job.suspended:
        if job.kueue:
            message = "waiting for Kueue to admit the Job"
        elif max_running_jobs > 0:
            message = f"waiting for a free slot (at most {max_running_jobs} running Jobs)"
        else:
            message = "the Job is suspended"
        return dataclasses.replace(base, reason="Queued", message=message)

    if latest is None:
        return dataclasses.replace(base, reason="Starting", message="waiting for the pod")
    if latest.unschedulable:
        return dataclasses.replace(base, reason="Unschedulable", message=latest.unschedulable)
    if latest.waiting_reason == "CreateContainerConfigError" and "secret" in (
        latest.waiting_message.lower()
    ):
        return dataclasses.replace(
            base,
            reason="SecretNotFound",
            message=latest.waiting_message or "a referenced Secret is missing",
        )
    if latest.waiting_reason in IMAGE_PULL_REASONS:
        return dataclasses.replace(
            base,
            reason="ImagePullBackOff",
            message=latest.waiting_message or f"cannot pull the worker image ({latest.name})",
        )
    if latest.running or latest.phase == "Running":
        return dataclasses.replace(
            base,
            phase="Running",
            reason="Running",
            message=f"pod {latest.name} is running",
            start_time=job.start_time or latest.start_time,
        )
    if latest.phase == "Failed":
        # The Job fails next (podFailurePolicy, or no retries left) but has not yet.
        worker = _worker_failure(latest)
        if worker is not None and worker[0] in PERMANENT_REASONS:
            return dataclasses.replace(
                base,
                phase="Running",
                reason="Failing",
                message=f"the worker failed, no retry: {worker[0]}: {worker[1]}",
            )
        attempts = sum(1 for pod in pods if pod.phase == "Failed")
        if attempts > job.backoff_limit:
            return dataclasses.replace(
                base,
                phase="Running",
                reason="Failing",
                message=f"{attempts} attempt(s) failed, no retries left: "
                f"{_pod_failure_text(latest)}",
            )
        return dataclasses.replace(
            base,
            phase="Running",
            reason="Retrying",
            message=f"attempt failed, retrying: {_pod_failure_text(latest)}",
        )
    detail = latest.waiting_reason or "ContainerCreating"
    return dataclasses.replace(base, reason="Starting", message=f"pod {latest.name}: {detail}")


def invalid_spec(generation: int, message: str) -> Observation:
    return Observation(phase="Failed", reason="InvalidSpec", message=message, generation=generation)


def _condition(
    previous: list[Condition],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> Condition:
    value = "True" if status else "False"
    old = next((c for c in previous if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def build_status(previous: PruneJobStatus, observed: Observation, now: str) -> PruneJobStatus:
    """The full new status. kstatus reads Ready/Reconciling/Stalled: in progress while
    Pending/Running, Ready on success, Stalled on failure."""
    terminal = observed.phase in ("Succeeded", "Failed")
    message = observed.message[:1024]
    common = {"message": message, "generation": observed.generation, "now": now}
    conditions = [
        _condition(
            previous.conditions,
            type_="Ready",
            status=observed.phase == "Succeeded",
            reason=observed.reason,
            **common,
        ),
        _condition(
            previous.conditions,
            type_="Reconciling",
            status=not terminal,
            reason=observed.reason,
            **common,
        ),
        _condition(
            previous.conditions,
            type_="Stalled",
            status=observed.phase == "Failed",
            reason=observed.reason,
            **common,
        ),
    ]
    # Keep the previous start time of this generation when the Job does not say.
    same_run = previous.observed_generation == observed.generation
    start_time = observed.start_time or (previous.start_time if same_run else None)
    return PruneJobStatus(
        phase=observed.phase,
        conditions=conditions,
        observed_generation=observed.generation,
        job_name=observed.job_name,
        start_time=start_time,
        completion_time=observed.completion_time,
        reason=observed.reason,
        message=message,
        **observed.results,
    )


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def transition_event(previous: PruneJobStatus, new: PruneJobStatus) -> EventSpec | None:
    """The Event to post when the phase or reason changed; None otherwise."""
    if (previous.phase, previous.reason, previous.observed_generation) == (
        new.phase,
        new.reason,
        new.observed_generation,
    ):
        return None
    reason = new.reason or "Unknown"
    message = new.message or ""
    if new.phase == "Failed" or reason in BLOCKED_REASONS or reason == "Retrying":
        return EventSpec("Warning", reason, message)
    if reason in ("Creating", "Starting", "Finishing", "Failing"):
        return None  # routine steps; creating the Job posts its own Event
    return EventSpec("Normal", reason, message)
