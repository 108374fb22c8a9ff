"""The Job controller (``batch/v1``): one Pod at a time per Job, retries until
``backoffLimit``, ``podFailurePolicy``, ``activeDeadlineSeconds``, ``suspend``, and the
Job's conditions and counts.

``plan_job`` is the decision, pure: from a Job and what is known of its pods it returns
the actions to take (delete pods, record Events, create a pod) and the status to write.
``JobController`` feeds it from the watches and carries the actions out.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from devcluster.clock import parse_time, utc_now
from devcluster.runner.client import ApiClient, Handler, ObjectGone
from devcluster.runner.conditions import is_true, set_condition
from devcluster.runner.controller import Controller, Tasks

ACTIVE_PHASES = ("Pending", "Running")
DEFAULT_BACKOFF_LIMIT = 6
# The labels a Job's pods carry: name labels (the Job's name), uid labels (its uid).
JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
CONTROLLER_UID_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")
SUCCEEDED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")


# --------------------------------------------------------------------------- pure decisions


def job_finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions")
    return is_true(conditions, "Complete") or is_true(conditions, "Failed")


def controller_uid(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


def _exit_code_matches(rule: Mapping[str, Any], pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """(container, exit code) of the first terminated container the rule matches."""
    wanted = rule.get("containerName")
    values = {int(v) for v in rule.get("values") or []}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if wanted and status.get("name") != wanted:
            continue
        code = ((status.get("state") or {}).get("terminated") or {}).get("exitCode")
        if code is None or code == 0:  # Kubernetes never matches successful containers
            continue
        if (code in values) == (rule.get("operator", "In") == "In"):
            return str(status.get("name", "")), int(code)
    return None


def pod_failure_action(
    policy: Mapping[str, Any] | None, pod: Mapping[str, Any]
) -> tuple[str, str] | None:
    """The first ``podFailurePolicy`` rule matching a failed pod: (action, Job message).

    ``None`` when no rule matches (the failure counts towards ``backoffLimit``).
    """
    meta = pod.get("metadata") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = str(rule.get("action", "Count"))
        if "onExitCodes" in rule:
            matched = _exit_code_matches(rule["onExitCodes"], pod)
            if matched is not None:
                container, code = matched
                return action, (
                    f"Container {container} for pod {where} failed with exit code {code} "
                    f"matching {action} rule at index {index}"
                )
        for pattern in rule.get("onPodConditions") or []:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == pattern.get("type") and condition.get(
                    "status"
                ) == pattern.get("status", "True"):
                    return action, (
                        f"Pod {where} has condition {pattern.get('type')} matching "
                        f"{action} rule at index {index}"
                    )
    return None


def pod_for_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod the Job controller creates from the Job's template."""
    meta = job["metadata"]
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    labels = dict(template_meta.get("labels") or {})
    for names, value in ((JOB_NAME_LABELS, meta["name"]), (CONTROLLER_UID_LABELS, meta["uid"])):
        labels.update(dict.fromkeys(names, value))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": dict(template_meta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template.get("spec") or {},
    }


@dataclass(frozen=True)
class DeletePod:
    name: str
    mark_failed: bool = False  # the Job failed: count the pod as Failed at once


@dataclass(frozen=True)
class Emit:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class CreatePod:
    """Create the Job's next pod (and record SuccessfulCreate)."""


Action = DeletePod | Emit | CreatePod


@dataclass
class JobPlan:
    """What to do for a Job now, in order, and the status to write afterwards."""

    actions: list[Action]
    status: dict[str, Any]
    active: list[str]  # the pods left running (a created pod joins them)
    finished: bool = False
    counts: tuple[int, int] | None = None  # (succeeded, failed); None: leave the counts
    deadline_in: float | None = None  # seconds until activeDeadlineSeconds runs out


def _failure(
    spec: Mapping[str, Any],
    failed: Mapping[str, Mapping[str, Any]],
    succeeded: bool,
    elapsed: float,
) -> tuple[tuple[str, str] | None, int]:
    """(reason, message) the Job fails with, if any, and how many failures count."""
    failure: tuple[str, str] | None = None
    counted = 0  # failures that count towards backoffLimit and status.failed
    for failed_pod in failed.values():
        matched = pod_failure_action(spec.get("podFailurePolicy"), failed_pod)
        if matched is not None and matched[0] == "Ignore":
            continue
        counted += 1
        if matched is not None and matched[0] == "FailJob" and failure is None:
            failure = ("PodFailurePolicy", matched[1])
    deadline = spec.get("activeDeadlineSeconds")
    if succeeded:
        failure = None
    elif failure is None and counted > int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)):
        failure = BACKOFF_LIMIT_EXCEEDED
    elif failure is None and deadline is not None and elapsed >= float(deadline):
        failure = DEADLINE_EXCEEDED
    return failure, counted


def plan_job(
    job: Mapping[str, Any],
    pods: Mapping[str, str],
    failed: Mapping[str, Mapping[str, Any]],
    succeeded: Set[str],
    now: datetime.datetime | None = None,
) -> JobPlan:
    """The Job controller's decision for one Job: ``pods`` maps its pods' names to their
    phases, ``failed`` holds the failed pods, ``succeeded`` the succeeded pods' names."""
    spec = job.get("spec") or {}
    status = copy.deepcopy(job.get("status") or {})
    conditions = status.get("conditions") or []
    active = [name for name, phase in pods.items() if phase in ACTIVE_PHASES]
    actions: list[Action] = []

    if spec.get("suspend"):
        actions += [DeletePod(name) for name in active]
        if not is_true(conditions, "Suspended"):
            status["conditions"] = set_condition(
                conditions, "Suspended", "True", "JobSuspended", "Job suspended"
            )
            status.pop("startTime", None)
            actions.append(Emit("Suspended", "Job suspended"))
        status["active"] = 0
        return JobPlan(actions, status, active=[])

    if is_true(conditions, "Suspended"):
        conditions = set_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed")
        status["conditions"] = conditions
        actions.append(Emit("Resumed", "Job resumed"))
    status.setdefault("startTime", utc_now())
    now = now or datetime.datetime.now(tz=datetime.UTC)
    elapsed = (now - parse_time(status["startTime"])).total_seconds()
    failure, counted = _failure(spec, failed, bool(succeeded), elapsed)

    if succeeded:
        for kind in ("SuccessCriteriaMet", "Complete"):
            conditions = set_condition(conditions, kind, "True", *SUCCEEDED)
        status.update(conditions=conditions, completionTime=utc_now())
        actions.append(Emit("Completed", "Job completed"))
    elif failure is not None:
        actions += [DeletePod(name, mark_failed=True) for name in active]
        for kind in ("FailureTarget", "Failed"):
            conditions = set_condition(conditions, kind, "True", *failure)
        status["conditions"] = conditions
        actions.append(Emit(*failure, warning=True))
        active = []
    elif not active:
        actions.append(CreatePod())
    deadline = spec.get("activeDeadlineSeconds")
    running = failure is None and not succeeded
    return JobPlan(
        actions,
        status,
        active,
        finished=not running,
        counts=(len(succeeded), counted),
        deadline_in=float(deadline) - elapsed if deadline is not None and running else None,
    )


# --------------------------------------------------------------------------- the controller


@dataclass
class JobState:
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> phase
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the failed pod
    succeeded: set[str] = field(default_factory=set)
    deadline_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobController(Controller):
    """Watches Jobs and their Pods; one reconcile at a time per Job."""

    def __init__(self, client: ApiClient, tasks: Tasks) -> None:
        super().__init__(client, tasks)
        self._jobs: dict[str, dict[str, Any]] = {}  # uid -> newest Job seen
        self._states: dict[str, JobState] = {}

    def watches(self) -> Mapping[str, Handler]:
        return {"/api/v1/pods": self.on_pod, "/apis/batch/v1/jobs": self.on_job}

    async def stop(self) -> list[asyncio.Task[Any]]:
        for state in self._states.values():
            if state.deadline_timer is not None:
                state.deadline_timer.cancel()
        return []

    async def on_job(self, event_type: str, job: dict[str, Any]) -> None:
        uid = job["metadata"]["uid"]
        if event_type == "DELETED":
            self._jobs.pop(uid, None)
            state = self._states.pop(uid, None)
            if state is not None and state.deadline_timer is not None:
                state.deadline_timer.cancel()
            return
        self._remember(job)
        self._states.setdefault(uid, JobState())
        self.tasks.spawn(self._reconcile(uid))

    async def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        job_uid = controller_uid(pod, "Job")
        gone = event_type == "DELETED" or bool(meta.get("deletionTimestamp"))
        if job_uid is None or (job_uid not in self._states and gone):
            return
        # Pods seen before their Job (at start-up) seed its state: no duplicate pods.
        state = self._states.setdefault(job_uid, JobState())
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase == "Failed":
            state.failed[meta["name"]] = pod
        elif phase == "Succeeded":
            state.succeeded.add(meta["name"])
        if gone:
            state.pods.pop(meta["name"], None)
        else:
            state.pods[meta["name"]] = phase
        if job_uid in self._jobs:
            self.tasks.spawn(self._reconcile(job_uid))

    def _remember(self, job: dict[str, Any]) -> None:
        """Cache the newest version: our own status writes may be ahead of the watch."""
        uid = job["metadata"]["uid"]
        cached = self._jobs.get(uid)
        version = int(job["metadata"]["resourceVersion"])
        if cached is None or int(cached["metadata"]["resourceVersion"]) <= version:
            self._jobs[uid] = job

    async def _reconcile(self, uid: str) -> None:
        state = self._states.get(uid)
        if state is None:
            return
        async with state.lock:
            job = self._jobs.get(uid)
            if job is None or job_finished(job) or job["metadata"].get("deletionTimestamp"):
                return
            with contextlib.suppress(ObjectGone):
                await self._carry_out(job, state)

    async def _carry_out(self, job: dict[str, Any], state: JobState) -> None:
        old_status = job.get("status") or {}
        plan = plan_job(job, state.pods, state.failed, state.succeeded)
        namespace = job["metadata"]["namespace"]
        active = list(plan.active)
        for action in plan.actions:
            if isinstance(action, DeletePod):
                await self.client.delete("Pod", namespace, action.name)
                if action.mark_failed:
                    state.pods[action.name] = "Failed"
            elif isinstance(action, Emit):
                await self.client.event(job, "Job", action.reason, action.message, action.warning)
            else:
                pod = await self.client.create("Pod", namespace, pod_for_job(job))
                if pod is not None:
                    name = pod["metadata"]["name"]
                    state.pods.setdefault(name, "Pending")
                    active = [name]
                    await self.client.event(job, "Job", "SuccessfulCreate", f"Created pod: {name}")
        if plan.deadline_in is not None:
            self._arm_deadline(job, state, plan.deadline_in)
        status = plan.status
        if plan.counts is not None:
            status["active"] = 0 if plan.finished else len(active)
            status["succeeded"], status["failed"] = plan.counts
            status["ready"] = sum(1 for name in active if state.pods.get(name) == "Running")
        if status != old_status:
            self._remember(await self.client.patch_status("Job", job, status))

    def _arm_deadline(self, job: Mapping[str, Any], state: JobState, remaining: float) -> None:
        if state.deadline_timer is not None:
            return
        uid = job["metadata"]["uid"]
        loop = asyncio.get_running_loop()

        def fire() -> None:
            state.deadline_timer = None
            self.tasks.spawn(self._reconcile(uid))

        state.deadline_timer = loop.call_later(max(remaining, 0.0) + 0.05, fire)
