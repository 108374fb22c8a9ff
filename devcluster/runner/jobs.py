"""The pod runner's Job controller: `plan_job`, the pure decision, and `JobController`.

The Job controller (``batch/v1``), as Kubernetes' (1.31+) works for non-indexed Jobs with
one pod at a time: pods from the template (its labels, annotations and finalizers, plus the
``batch.kubernetes.io/job-tracking`` finalizer), retries until ``backoffLimit``,
``podFailurePolicy``, ``activeDeadlineSeconds``, ``suspend`` (active pods deleted, not
counted as failures), and the status: ``active``/``ready``/``terminating``,
``succeeded``/``failed``, ``startTime``, ``completionTime`` and the conditions.

Counting follows the real controller's two steps, so that no pod is counted twice or lost:
a finished pod's uid goes to ``status.uncountedTerminatedPods``, its tracking finalizer is
removed, then it moves into ``succeeded``/``failed``. A deleted pod that did not succeed
counts as failed (``podReplacementPolicy`` TerminatingOrFailed, the default without a
``podFailurePolicy``). ``Failed``/``Complete`` come after the interim ``FailureTarget``/
``SuccessCriteriaMet`` once no pod is terminating or uncounted.

``plan_job`` is the decision, pure: from a Job and its pods it returns the actions and the
status. ``JobController`` feeds it from the watches and carries the actions out.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devcluster.clock import parse_time, utc_now
from devcluster.runner.client import ApiClient, ApiRefused, Handler, ObjectGone
from devcluster.runner.conditions import is_true, set_condition
from devcluster.runner.controller import Controller, Tasks

log = logging.getLogger("devcluster.podrunner")

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
TERMINAL_PHASES = ("Succeeded", "Failed")
DEFAULT_BACKOFF_LIMIT = 6
# The labels a Job's pods carry: name labels (the Job's name), uid labels (its uid).
JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
CONTROLLER_UID_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")
SUCCEEDED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
CREATE_RETRY_SECONDS = 1.0  # after a refused pod creation (FailedCreate)

Pod = Mapping[str, Any]


# --------------------------------------------------------------------------- pure decisions


def job_finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions")
    return is_true(conditions, "Complete") or is_true(conditions, "Failed")


def controller_uid(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


def phase(pod: Pod) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def terminating(pod: Pod) -> bool:
    """Being deleted and not finished (what ``status.terminating`` counts)."""
    return bool(pod["metadata"].get("deletionTimestamp")) and phase(pod) not in TERMINAL_PHASES


def tracked(pod: Pod) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def pod_ready(pod: Pod) -> bool:
    return is_true((pod.get("status") or {}).get("conditions"), "Ready")


def _exit_code_matches(rule: Mapping[str, Any], pod: Pod) -> tuple[str, int] | None:
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


def pod_failure_action(policy: Mapping[str, Any] | None, pod: Pod) -> tuple[str, str] | None:
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
    """The Pod the Job controller creates from the Job's template: its labels, annotations
    and finalizers (and the tracking finalizer), the Job as controller owner."""
    meta = job["metadata"]
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    labels = dict(template_meta.get("labels") or {})
    for names, value in ((JOB_NAME_LABELS, meta["name"]), (CONTROLLER_UID_LABELS, meta["uid"])):
        labels.update(dict.fromkeys(names, value))
    finalizers = [f for f in template_meta.get("finalizers") or [] if f != TRACKING_FINALIZER]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": dict(template_meta.get("annotations") or {}),
            "finalizers": [*finalizers, TRACKING_FINALIZER],
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
    strip_tracking: bool = False  # suspension: remove the tracking finalizer first (not counted)


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
    """What to do for a Job now: ``actions`` in order, ``status`` to write before the
    tracking finalizers of ``untrack`` are removed, then ``finish(status, removed)`` for
    the status after."""

    actions: list[Action]
    status: dict[str, Any]
    untrack: list[str] = field(default_factory=list)  # pod names
    ending: tuple[str, str, str] | None = None  # (Complete|Failed, reason, message)
    deadline_in: float | None = None  # seconds until activeDeadlineSeconds runs out
    uids: dict[str, str] = field(default_factory=dict)  # pod name -> uid (of untrack)


def omit_zero_counts(status: dict[str, Any]) -> None:
    """``active``, ``succeeded`` and ``failed`` are omitted when 0, as the API writes them
    (``ready`` and ``terminating`` are pointers: 0 is written)."""
    for key in ("active", "succeeded", "failed"):
        if not status.get(key):
            status.pop(key, None)


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new`` at the top level (``null`` drops a key)."""
    return {**{key: None for key in old if key not in new}, **new}


def _failure_counts(policy: Mapping[str, Any] | None, pod: Pod) -> bool:
    matched = pod_failure_action(policy, pod)
    return matched is None or matched[0] != "Ignore"


def plan_job(
    job: Mapping[str, Any], pods: list[Pod], now: datetime.datetime | None = None
) -> JobPlan:
    """The Job controller's decision for one Job and its pods (completions 1)."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    spec = job.get("spec") or {}
    status = copy.deepcopy(job.get("status") or {})
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    policy = spec.get("podFailurePolicy")
    only_failed = policy is not None or spec.get("podReplacementPolicy") == "Failed"
    deleting = bool(job["metadata"].get("deletionTimestamp"))

    def failed_pod(pod: Pod) -> bool:
        return phase(pod) == "Failed" or (
            not only_failed and bool(pod["metadata"].get("deletionTimestamp"))
            and phase(pod) != "Succeeded"
        )  # fmt: skip

    uncounted = status.get("uncountedTerminatedPods") or {}
    unc_s: list[str] = list(uncounted.get("succeeded") or [])
    unc_f: list[str] = list(uncounted.get("failed") or [])
    seen = set(unc_s) | set(unc_f)
    with_finalizer = [p for p in pods if tracked(p)]
    active = [p for p in pods if phase(p) not in TERMINAL_PHASES and not terminating(p)]
    plan = JobPlan(actions=[], status=status)

    if job_finished(job):  # leftovers: let go of every pod, count nothing more
        plan.untrack = [p["metadata"]["name"] for p in with_finalizer]
        return plan

    new_s = [
        p for p in with_finalizer if phase(p) == "Succeeded" and p["metadata"]["uid"] not in seen
    ]
    new_f = [p for p in with_finalizer if failed_pod(p) and p["metadata"]["uid"] not in seen]
    succeeded = int(status.get("succeeded") or 0) + len(new_s) + len(unc_s)
    failed = int(status.get("failed") or 0) + len(unc_f)
    failed += sum(1 for p in new_f if _failure_counts(policy, p))
    suspended = bool(spec.get("suspend"))
    if "startTime" not in status and not suspended:
        status["startTime"] = utc_now()
    elapsed = (
        (now - parse_time(status["startTime"])).total_seconds() if "startTime" in status else 0
    )

    ending: tuple[str, str, str] | None = None
    target = next((c for c in conditions if c.get("type") == "FailureTarget"), None)
    criteria = next((c for c in conditions if c.get("type") == "SuccessCriteriaMet"), None)
    deadline = spec.get("activeDeadlineSeconds")
    if criteria is not None and criteria.get("status") == "True":
        ending = ("Complete", *SUCCEEDED)
    elif target is not None and target.get("status") == "True":
        ending = ("Failed", str(target.get("reason", "")), str(target.get("message", "")))
    else:
        for pod in pods:
            matched = pod_failure_action(policy, pod) if failed_pod(pod) else None
            if matched is not None and matched[0] == "FailJob":
                ending = ("Failed", "PodFailurePolicy", matched[1])
                break
        if ending is None and failed > int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)):
            ending = ("Failed", *BACKOFF_LIMIT_EXCEEDED)
        elif (
            ending is None and deadline is not None and not suspended and elapsed >= float(deadline)
        ):
            ending = ("Failed", *DEADLINE_EXCEEDED)

    deleted = 0
    if ending is not None and ending[0] == "Failed":
        plan.actions += [DeletePod(p["metadata"]["name"]) for p in active]
        deleted = len(active)
    elif not deleting:
        if suspended:
            plan.actions += [DeletePod(p["metadata"]["name"], strip_tracking=True) for p in active]
            deleted = len(active)
            if not is_true(conditions, "Suspended"):
                conditions = set_condition(conditions, "Suspended", "True", "JobSuspended",
                                           "Job suspended")  # fmt: skip
                plan.actions.append(Emit("Suspended", "Job suspended"))
        else:
            if is_true(conditions, "Suspended"):
                conditions = set_condition(conditions, "Suspended", "False", "JobResumed",
                                           "Job resumed")  # fmt: skip
                plan.actions.append(Emit("Resumed", "Job resumed"))
                status["startTime"] = utc_now()  # the deadline counts from the resumption
                elapsed = 0
            if succeeded >= 1 and not active:
                ending = ("Complete", *SUCCEEDED)
            elif not active and succeeded == 0:
                plan.actions.append(CreatePod())

    # Pods to count: finished (or failed by deletion), or any once the Job ends or goes.
    for pod in with_finalizer:
        uid = pod["metadata"]["uid"]
        if uid in seen:
            plan.untrack.append(pod["metadata"]["name"])
            continue
        if not (deleting or ending is not None or phase(pod) == "Succeeded" or failed_pod(pod)):
            continue
        plan.untrack.append(pod["metadata"]["name"])
        if phase(pod) == "Succeeded":
            unc_s.append(uid)
        elif _failure_counts(policy, pod) and (failed_pod(pod) or ending is not None):
            unc_f.append(uid)
    plan.uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in with_finalizer}

    if ending is not None:
        interim = "SuccessCriteriaMet" if ending[0] == "Complete" else "FailureTarget"
        if not is_true(conditions, interim):
            conditions = set_condition(conditions, interim, "True", ending[1], ending[2])
    if conditions:
        status["conditions"] = conditions
    if unc_s or unc_f:
        status["uncountedTerminatedPods"] = {"succeeded": unc_s, "failed": unc_f}
    else:
        status.pop("uncountedTerminatedPods", None)
    status["active"] = 0 if ending is not None else max(len(active) - deleted, 0)
    status["ready"] = (
        sum(1 for p in active if pod_ready(p)) if ending is None and not suspended else 0
    )
    status["terminating"] = sum(1 for p in pods if terminating(p)) + deleted
    omit_zero_counts(status)
    plan.ending = ending
    if deadline is not None and ending is None and not suspended:
        plan.deadline_in = float(deadline) - elapsed
    return plan


def finish(
    plan: JobPlan, status: Mapping[str, Any], removed: set[str]
) -> tuple[dict[str, Any], Emit | None]:
    """The status after the tracking finalizers of the pods in ``removed`` (uids) went:
    they move from ``uncountedTerminatedPods`` into the counts; the Job ends (Complete or
    Failed) once nothing is uncounted and no pod is terminating."""
    after = copy.deepcopy(dict(status))
    uncounted = after.pop("uncountedTerminatedPods", None) or {}
    left: dict[str, list[str]] = {}
    for key in ("succeeded", "failed"):
        uids = list(uncounted.get(key) or [])
        after[key] = int(after.get(key) or 0) + sum(1 for uid in uids if uid in removed)
        left[key] = [uid for uid in uids if uid not in removed]
    omit_zero_counts(after)
    if left["succeeded"] or left["failed"]:
        after["uncountedTerminatedPods"] = left
        return after, None
    if plan.ending is None or after.get("terminating"):
        return after, None
    kind, reason, message = plan.ending
    after["conditions"] = set_condition(
        after.get("conditions") or [], kind, "True", reason, message
    )
    if kind == "Complete":
        after["completionTime"] = utc_now()
        return after, Emit("Completed", "Job completed")
    return after, Emit(reason, message, warning=True)


# --------------------------------------------------------------------------- the controller


@dataclass
class JobState:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod name -> newest pod
    deadline_timer: asyncio.TimerHandle | None = None
    retry_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    if old is None:
        return True
    return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])


class JobController(Controller):
    """Watches Jobs and their Pods; one reconcile at a time per Job."""

    def __init__(self, client: ApiClient, tasks: Tasks) -> None:
        super().__init__(client, tasks)
        self._jobs: dict[str, dict[str, Any]] = {}  # uid -> newest Job seen
        self._states: dict[str, JobState] = {}
        self._synced = False

    def watches(self) -> Mapping[str, Handler]:
        return {"/api/v1/pods": self.on_pod, "/apis/batch/v1/jobs": self.on_job}

    async def stop(self) -> list[asyncio.Task[Any]]:
        for state in self._states.values():
            for timer in (state.deadline_timer, state.retry_timer):
                if timer is not None:
                    timer.cancel()
        return []

    def synced(self) -> None:
        """Both lists are in: pods whose Job is gone can be let go of."""
        self._synced = True
        for uid, state in list(self._states.items()):
            if uid not in self._jobs:
                self._release_orphans(state)

    async def on_job(self, event_type: str, job: dict[str, Any]) -> None:
        uid = job["metadata"]["uid"]
        if event_type == "DELETED":
            self._jobs.pop(uid, None)
            state = self._states.pop(uid, None)
            if state is not None:
                for timer in (state.deadline_timer, state.retry_timer):
                    if timer is not None:
                        timer.cancel()
                self._release_orphans(state)
            return
        if _newer(job, self._jobs.get(uid)):
            self._jobs[uid] = job
        self._states.setdefault(uid, JobState())
        self.tasks.spawn(self._reconcile(uid))

    async def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        job_uid = controller_uid(pod, "Job")
        if job_uid is None:
            return
        name = pod["metadata"]["name"]
        # Pods seen before their Job (at start-up) seed its state: no duplicate pods.
        state = self._states.setdefault(job_uid, JobState())
        if event_type == "DELETED":
            state.pods.pop(name, None)
        elif _newer(pod, state.pods.get(name)):
            state.pods[name] = pod
        if job_uid in self._jobs:
            self.tasks.spawn(self._reconcile(job_uid))
        elif self._synced and event_type != "DELETED" and tracked(pod):
            self.tasks.spawn(self._untrack(pod))  # an orphan: its Job is gone

    def _release_orphans(self, state: JobState) -> None:
        for pod in list(state.pods.values()):
            if tracked(pod):
                self.tasks.spawn(self._untrack(pod))

    async def _untrack(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """Remove the tracking finalizer (optimistically: re-read on a conflict)."""
        meta = pod["metadata"]
        current: Mapping[str, Any] | None = pod
        for _ in range(10):
            if current is None or not tracked(current):
                return None
            finalizers = [f for f in current["metadata"]["finalizers"] if f != TRACKING_FINALIZER]
            version = current["metadata"]["resourceVersion"]
            patch = {"metadata": {"finalizers": finalizers or None, "resourceVersion": version}}
            try:
                return await self.client.patch("Pod", current, patch)
            except ObjectGone:
                return None
            except ApiRefused as refused:
                if refused.status != 409:
                    raise
            current = await self.client.read(meta["namespace"], "pods", meta["name"])
        return None

    async def _reconcile(self, uid: str) -> None:
        state = self._states.get(uid)
        if state is None:
            return
        async with state.lock:
            job = self._jobs.get(uid)
            if job is None:
                return
            with contextlib.suppress(ObjectGone):
                await self._carry_out(job, state)

    def _remember_pod(self, state: JobState, pod: dict[str, Any] | None) -> None:
        if pod is not None and _newer(pod, state.pods.get(pod["metadata"]["name"])):
            state.pods[pod["metadata"]["name"]] = pod

    async def _carry_out(self, job: dict[str, Any], state: JobState) -> None:
        old_status = job.get("status") or {}
        plan = plan_job(job, list(state.pods.values()))
        namespace = job["metadata"]["namespace"]
        status = plan.status
        for action in plan.actions:
            if isinstance(action, DeletePod):
                pod = state.pods.get(action.name)
                if action.strip_tracking and pod is not None:
                    self._remember_pod(state, await self._untrack(pod))
                await self._delete_pod(job, state, namespace, action.name)
            elif isinstance(action, Emit):
                await self.client.event(job, "Job", action.reason, action.message, action.warning)
            else:
                if not await self._create_pod(job, state, namespace):
                    status = {**status, "active": 0}
                else:
                    status = {**status, "active": 1}
        if plan.deadline_in is not None:
            self._arm_deadline(job, state, plan.deadline_in)
        if status != old_status:
            job = await self.client.patch_status("Job", job, merge_patch(old_status, status))
            self._jobs[job["metadata"]["uid"]] = job
            old_status = job.get("status") or {}
        removed: set[str] = set()
        for name in plan.untrack:
            pod = state.pods.get(name)
            if pod is None:
                removed.add(plan.uids.get(name, ""))
                continue
            try:
                self._remember_pod(state, await self._untrack(pod))
                removed.add(pod["metadata"]["uid"])
            except ApiRefused as refused:
                log.warning("job %s: tracking finalizer of %s stays: %s", job["metadata"]["name"],
                            name, refused)  # fmt: skip
        final, event = finish(plan, old_status, removed)
        if final != old_status:
            job = await self.client.patch_status("Job", job, merge_patch(old_status, final))
            self._jobs[job["metadata"]["uid"]] = job
        if event is not None:
            await self.client.event(job, "Job", event.reason, event.message, event.warning)

    async def _delete_pod(
        self, job: Mapping[str, Any], state: JobState, namespace: str, name: str
    ) -> None:
        deleted = await self.client.delete("Pod", namespace, name)
        if deleted is None:
            return
        if deleted["metadata"].get("deletionTimestamp"):
            self._remember_pod(state, deleted)  # terminating (grace period, finalizers)
        else:
            state.pods.pop(name, None)  # gone at once
        await self.client.event(job, "Job", "SuccessfulDelete", f"Deleted pod: {name}")

    async def _create_pod(self, job: Mapping[str, Any], state: JobState, namespace: str) -> bool:
        try:
            pod = await self.client.create("Pod", namespace, pod_for_job(job))
        except ApiRefused as refused:
            message = f"Error creating: {refused.message}"
            await self.client.event(job, "Job", "FailedCreate", message, warning=True)
            self._retry_later(job, state)
            return False
        if pod is None:
            return False
        self._remember_pod(state, pod)
        name = pod["metadata"]["name"]
        await self.client.event(job, "Job", "SuccessfulCreate", f"Created pod: {name}")
        return True

    def _retry_later(self, job: Mapping[str, Any], state: JobState) -> None:
        if state.retry_timer is not None:
            return
        uid = job["metadata"]["uid"]

        def fire() -> None:
            state.retry_timer = None
            self.tasks.spawn(self._reconcile(uid))

        state.retry_timer = asyncio.get_running_loop().call_later(CREATE_RETRY_SECONDS, fire)

    def _arm_deadline(self, job: Mapping[str, Any], state: JobState, remaining: float) -> None:
        if state.deadline_timer is not None:
            state.deadline_timer.cancel()
        uid = job["metadata"]["uid"]

        def fire() -> None:
            state.deadline_timer = None
            self.tasks.spawn(self._reconcile(uid))

        loop = asyncio.get_running_loop()
        state.deadline_timer = loop.call_later(max(remaining, 0.0) + 0.05, fire)
