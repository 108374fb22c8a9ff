"""A run's Job + Pods -> PruneJob status, conditions, reason codes and Events. Pure.

From the slim summaries of a run's Job and Pods (`records.JobSummary`,
`records.PodSummary`), `derive()` turns them into an `Observation` (phase, reason, message,
results, attempt counts), and `build_status()` folds that into the previous status so a
condition's `lastTransitionTime` only moves when the condition really changes. A run's
pods outlive its Job (the result finalizer), so `result_of_pods()` reads the result from
the pods alone when the Job is gone.

Reason codes (status.reason, the conditions' reason, Event reason):
- Pending: Creating, Queued, Starting, SecretNotFound, ImagePullBackOff, Unschedulable
- Running: Running, Retrying, Failing (the worker failed for good and the Job follows,
  or the Job failed and its failed pod has not arrived: for at most
  POD_REASON_WAIT_SECONDS, `recheck_after` says when to look again), Finishing (the same
  for success)
- Suspended: Suspended (spec.suspend)
- Succeeded: Succeeded
- Failed: the worker's reason (prunejob_contract.errors: ModelNotFound, DecryptionFailed,
  UnsupportedLayer, AccessDenied, ...), DeadlineExceeded, BackoffLimitExceeded,
  InvalidSpec, JobFailed (the Job failed for a reason we cannot attribute).

Conditions: kstatus' Ready (True on success), Reconciling (True while Pending/Running)
and Stalled (True on failure), and the Job's Complete, Failed and Suspended, so that
`kubectl wait --for=condition=Complete` works as for a Job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prunejob_contract.errors import PERMANENT_REASONS
from prunejob_contract.termination import decode_message
from prunejob_operator.models import (
    MAX_STATUS_LAYERS,
    TERMINAL_PHASES,
    BeforeAfter,
    Condition,
    LayerCount,
    OutputRef,
    Phase,
    PruneJobStatus,
    RunRef,
)
from prunejob_operator.records import JobSummary, PodSummary, seconds_between

# How long a failed Job waits for its failed pod, whose termination message names the
# worker's reason, before the failure is reported without it (the pod deleted in spite
# of the result finalizer). The reconciler looks again when the wait is up.
POD_REASON_WAIT_SECONDS = 120.0
# Reasons that need someone to fix the environment; they are Warnings.
BLOCKED_REASONS = frozenset({"SecretNotFound", "ImagePullBackOff", "Unschedulable"})
IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


@dataclass(frozen=True)
class Observation:
    """The phase/reason/message/results of the current run, before conditions;
    `generation` is the PruneJob generation observed."""

    phase: Phase
    reason: str
    message: str
    generation: int
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    results: dict[str, Any] = field(default_factory=dict)  # status fields from the worker
    run: RunRef | None = None
    attempts: int | None = None
    failed_attempts: int | None = None
    recheck_after: float | None = None  # seconds: derive again then, whatever the watches say

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


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
    layers = data.get("layers", [])
    results["layers"] = [LayerCount(**layer) for layer in layers[:MAX_STATUS_LAYERS]]
    if len(layers) > MAX_STATUS_LAYERS or data.get("layersOmitted"):
        results["layers_truncated"] = True  # the report object (reportUri) has them all
    if isinstance(data.get("output"), dict) and data["output"].get("uri"):
        results["output"] = OutputRef(**data["output"])
    if data.get("reportUri"):
        results["report_uri"] = str(data["reportUri"])
    return results


def _success(base: Observation, job: JobSummary | None, pod: PodSummary) -> Observation:
    results = results_from_message(pod.termination_message)
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
        start_time=(job.start_time if job else None) or pod.start_time,
        completion_time=(job.completion_time if job else None) or pod.finished_at,
        results=results,
    )


def _failed_count(job: JobSummary | None, pods: list[PodSummary]) -> int:
    failed = sum(1 for pod in pods if pod.phase == "Failed")
    return job.failed_pods if job is not None else failed


def attempts(job: JobSummary | None, pods: list[PodSummary]) -> tuple[int, int]:
    """(pods created, pods failed) for the run: the Job's counts while it exists (it
    does not count pods it deleted on suspend, or evictions), else its pods'."""
    created = len(pods)
    if job is not None:
        created = max(created, job.active_pods + job.succeeded_pods + job.failed_pods)
    return created, _failed_count(job, pods)


def result_of_pods(
    base: Observation, pods: list[PodSummary], backoff_limit: int
) -> Observation | None:
    """The run's end read from its pods alone (its Job is gone): a succeeded pod, a
    failure no retry fixes, or more failures than the backoff limit; None when the
    pods do not say that the run ended."""
    succeeded = _latest([pod for pod in pods if pod.phase == "Succeeded"])
    if succeeded is not None:
        return _success(base, None, succeeded)
    failed = [pod for pod in pods if pod.phase == "Failed"]
    last_failed = _latest(failed)
    if last_failed is None:
        return None
    finished = {"completion_time": last_failed.finished_at}
    worker = _worker_failure(last_failed)
    if worker is not None and worker[0] in PERMANENT_REASONS:
        return dataclasses.replace(
            base, phase="Failed", reason=worker[0], message=worker[1], **finished
        )
    limits = [pod.backoff_limit for pod in pods if pod.backoff_limit is not None]
    limit = max(limits) if limits else backoff_limit
    if len(failed) > limit:
        message = f"{len(failed)} attempt(s) failed; last: {_pod_failure_text(last_failed)}"
        return dataclasses.replace(
            base, phase="Failed", reason="BackoffLimitExceeded", message=message, **finished
        )
    return None


def derive(
    *,
    generation: int,
    job_name: str,
    job: JobSummary | None,
    pods: list[PodSummary],
    max_running_jobs: int = 0,
    suspended: bool = False,
    backoff_limit: int = 6,
    run: RunRef | None = None,
    now: str | None = None,
) -> Observation:
    """What the status should say about the current run (Job `job_name`, started at
    generation `run.generation`) at PruneJob generation `generation`, given its Job and
    Pods; `suspended` is spec.suspend; `now` bounds waits (None: they have no bound)."""
    created, failed = attempts(job, pods)
    base = Observation(
        phase="Pending",
        reason="Creating",
        message="",
        generation=generation,
        job_name=job_name,
        run=run,
        attempts=created,
        failed_attempts=failed,
    )
    held = dataclasses.replace(
        base,
        phase="Suspended",
        reason="Suspended",
        message="spec.suspend is true: no pod runs until it is false",
    )
    if job is None:
        ended = result_of_pods(base, pods, backoff_limit)
        if ended is not None:
            return ended
        if suspended:
            return held
        return dataclasses.replace(base, message=f"creating Job {job_name}")
    base = dataclasses.replace(base, job_name=job.name, start_time=job.start_time)
    held = dataclasses.replace(held, job_name=job.name)
    latest = _latest(pods)
    succeeded = _latest([pod for pod in pods if pod.phase == "Succeeded"])

    if succeeded is not None and not job.failed:
        # One pod succeeding completes the Job (completions: 1), whether or not the Job's
        # Complete condition has arrived yet.
        return _success(base, job, succeeded)

    if job.complete:
        # The Job and Pod watches are not ordered: the pod (with the result) may arrive
        # after the Job's Complete. Report success only with its result.
        return dataclasses.replace(
            base,
            phase="Running",
            reason="Finishing",
            message="the Job completed; waiting for its pod's result",
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
        pod_due = last_failed is None and (
            job.failed_pods > 0
            or job.failed_reason in ("PodFailurePolicy", "BackoffLimitExceeded")
            or any(not pod.terminal for pod in pods)
        )
        waited = seconds_between(job.completion_time, now)
        if pod_due and (waited is None or waited < POD_REASON_WAIT_SECONDS):
            # The Job and Pod watches are not ordered: the failed pod (with the worker's
            # reason) may arrive after the Job's Failed, and the result finalizer keeps
            # it. Report the failure only with its reason, or once the wait is up.
            return dataclasses.replace(
                base,
                phase="Running",
                reason="Failing",
                message="the Job failed; waiting for its pod's exit reason",
                recheck_after=max(POD_REASON_WAIT_SECONDS - (waited or 0.0), 1.0),
            )
        # A worker error no retry can fix names the real problem, whatever Job reason.
        if worker and (worker[0] in PERMANENT_REASONS or job.failed_reason == "PodFailurePolicy"):
            return dataclasses.replace(
                base, phase="Failed", reason=worker[0], message=worker[1], **finished
            )
        if job.failed_reason == "BackoffLimitExceeded":
            count = max(job.failed_pods, len(failed_pods))
            message = f"{count} attempt(s) failed"
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
        if pod_due:
            message += (
                f"; its failed pod, which would say why, was not seen within "
                f"{POD_REASON_WAIT_SECONDS:.0f} s"
            )
        return dataclasses.replace(
            base, phase="Failed", reason="JobFailed", message=message, **finished
        )

    if suspended:
        return held

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
        count = sum(1 for pod in pods if pod.phase == "Failed")
        if count > job.backoff_limit:
            return dataclasses.replace(
                base,
                phase="Running",
                reason="Failing",
                message=f"{count} attempt(s) failed, no retries left: {_pod_failure_text(latest)}",
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


CONDITION_TYPES: tuple[str, ...] = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Complete",
    "Failed",
    "Suspended",
)


def _condition_states(phase: Phase) -> dict[str, bool]:
    return {
        "Ready": phase == "Succeeded",
        "Reconciling": phase in ("Pending", "Running"),
        "Stalled": phase == "Failed",
        "Complete": phase == "Succeeded",
        "Failed": phase == "Failed",
        "Suspended": phase == "Suspended",
    }


def build_status(previous: PruneJobStatus, observed: Observation, now: str) -> PruneJobStatus:
    """The full new status. kstatus reads Ready/Reconciling/Stalled: in progress while
    Pending/Running, Ready on success, Stalled on failure; Complete/Failed/Suspended
    are the Job's conditions."""
    message = observed.message[:1024]
    conditions = [
        _condition(
            previous.conditions,
            type_=type_,
            status=state,
            reason=observed.reason,
            message=message,
            generation=observed.generation,
            now=now,
        )
        for type_, state in _condition_states(observed.phase).items()
    ]
    # Within one run, keep what the Job or pods no longer say (a start time, the
    # attempts of pods that are gone).
    same_run = (
        previous.run is not None
        and observed.run is not None
        and previous.run.key == observed.run.key
    )
    start_time = observed.start_time or (previous.start_time if same_run else None)
    created, failed = observed.attempts, observed.failed_attempts
    if same_run:
        created = _most(created, previous.attempts)
        failed = _most(failed, previous.failed_attempts)
    return PruneJobStatus(
        phase=observed.phase,
        conditions=conditions,
        observed_generation=observed.generation,
        run=observed.run,
        job_name=observed.job_name,
        start_time=start_time,
        completion_time=observed.completion_time,
        reason=observed.reason,
        message=message,
        attempts=created,
        failed_attempts=failed,
        **observed.results,
    )


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def observe_generation(previous: PruneJobStatus, generation: int) -> PruneJobStatus:
    """A recorded run's status, unchanged but for the generation observed (an edit of
    operational fields only: kstatus must see it observed)."""
    conditions = [
        c.model_copy(update={"observed_generation": generation}) for c in previous.conditions
    ]
    return previous.model_copy(update={"observed_generation": generation, "conditions": conditions})


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def _run_key(status: PruneJobStatus) -> str | None:
    return status.run.key if status.run is not None else None


def transition_event(previous: PruneJobStatus, new: PruneJobStatus) -> EventSpec | None:
    """The Event to post when the phase, the reason or the run changed; None otherwise."""
    if (previous.phase, previous.reason, _run_key(previous)) == (
        new.phase,
        new.reason,
        _run_key(new),
    ):
        return None
    reason = new.reason or "Unknown"
    message = new.message or ""
    if new.phase == "Failed" or reason in BLOCKED_REASONS or reason == "Retrying":
        return EventSpec("Warning", reason, message)
    if reason in ("Creating", "Starting", "Finishing", "Failing"):
        return None  # routine steps; creating the Job posts its own Event
    return EventSpec("Normal", reason, message)
