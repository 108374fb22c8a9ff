"""A kwok-like pod runner: plays the Job controller, the scheduler and the kubelet of one node.

It talks to the API over HTTP (list + watch of Jobs and Pods, like real controllers) and:

- **Job controller** (``batch/v1``): one Pod at a time per Job (``parallelism`` and
  ``completions`` are taken as 1), ``generateName: <job>-``, template labels plus
  ``job-name``/``batch.kubernetes.io/job-name``/``controller-uid``, a controller
  ownerReference; a new Pod per failure until ``backoffLimit`` (then condition Failed,
  reason ``BackoffLimitExceeded``); ``podFailurePolicy`` rules (``onExitCodes``,
  ``onPodConditions``; actions ``FailJob`` -> Failed/``PodFailurePolicy``, ``Ignore``, ``Count``);
  ``activeDeadlineSeconds`` kills the Pod (Failed, ``DeadlineExceeded``); ``spec.suspend``
  (Kueue) holds the Job until it is unsuspended;
- **scheduler**: one fake node ``devcluster-node`` (a Node object with the configured labels
  and ``nvidia.com/gpu`` capacity); a Pod whose GPU limit exceeds the free GPUs or whose
  ``nodeSelector`` does not match stays Pending with PodScheduled=False/Unschedulable until
  it fits;
- **kubelet**: runs each container's real ``command`` + ``args`` as a local process (the
  executable is looked up on PATH with the directory of ``sys.executable`` first; an absolute
  path that does not exist here is looked up by its base name), with a minimal environment
  (PATH, HOME, LANG, TMPDIR) plus the container's ``env`` (``value``, ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef`` of metadata.name/namespace/uid and spec.nodeName);
  ``secret``, ``configMap`` and ``emptyDir`` volumes are materialised in a private
  directory per pod and every arg/env value that starts with a mountPath or the
  ``terminationMessagePath`` (also after ``--flag=``) is rewritten to the local path;
  the termination message file (≤ 4096 bytes) becomes ``state.terminated.message``;
  stdout/stderr go to the log that ``kubectl logs`` (``pods/log``) serves.

Conventions: an image whose name starts with ``invalid.example/`` cannot be pulled
(waiting ``ErrImagePull`` then ``ImagePullBackOff``); a missing Secret/ConfigMap for env gives
waiting ``CreateContainerConfigError`` (``secret "NAME" not found``) and for a volume a Pod
stuck in ``ContainerCreating`` with a ``FailedMount`` event; both are retried until the
object appears. A container without ``command`` runs its ``args`` as the command (the image's
ENTRYPOINT is unknown here).

Ignored pod fields (documented, logged at start): image contents (the local machine's
programs run instead), securityContext, affinity, tolerations, priority, resources other
than the ``nvidia.com/gpu`` count, probes, lifecycle hooks, ports, service accounts,
imagePullSecrets, container restarts (``restartPolicy`` is treated as Never), volume types
other than secret/configMap/emptyDir (they become empty directories), readOnly mounts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger("devcluster.podrunner")

NODE_NAME = "devcluster-node"
GPU = "nvidia.com/gpu"
UNPULLABLE_PREFIX = "invalid.example/"
TERMINATION_MESSAGE_LIMIT = 4096
IGNORED_FIELDS = (
    "image contents, securityContext, affinity, tolerations, priority, resources except "
    f"{GPU}, probes, lifecycle, ports, serviceAccountName, imagePullSecrets, container "
    "restarts (restartPolicy=Never), volume types other than secret/configMap/emptyDir"
)


def utc_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


class ObjectGone(Exception):
    """The object was deleted while we were working on it."""


class MissingReference(Exception):
    """A Secret/ConfigMap (or a key in it) the pod needs does not exist yet."""

    def __init__(self, message: str, *, volume: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.volume = volume


# --------------------------------------------------------------------------- pure helpers


def gpu_request(pod: Mapping[str, Any]) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(
            GPU
        )
        if value:
            total += int(value)
    return total


def unschedulable_reason(
    pod: Mapping[str, Any], node_labels: Mapping[str, str], free_gpus: int, capacity: int
) -> str | None:
    """The scheduler's message when the pod cannot go to the node now, else ``None``."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(node_labels.get(key) != value for key, value in selector.items()):
        return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    wanted = gpu_request(pod)
    if wanted > capacity:
        return f"0/1 nodes are available: 1 Insufficient {GPU}."
    if wanted > free_gpus:
        return f"0/1 nodes are available: 1 Insufficient {GPU}."
    return None


def rewrite_path(value: str, mounts: Mapping[str, Path]) -> str:
    """Map a container path (a mountPath or below it) to its local directory."""
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.partition("=")
        return f"{flag}={rewrite_path(rest, mounts)}"
    for mount_path in sorted(mounts, key=len, reverse=True):
        stripped = mount_path.rstrip("/") or "/"
        if value in (mount_path, stripped):
            return str(mounts[mount_path])
        if value.startswith(stripped + "/"):
            return str(mounts[mount_path]) + value[len(stripped) :]
    return value


def resolve_executable(name: str, search_path: str) -> str | None:
    if os.path.isabs(name):
        if os.access(name, os.X_OK):
            return name
        name = os.path.basename(name)
    return shutil.which(name, path=search_path)


def job_finished(job: Mapping[str, Any]) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


def controller_uid(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
) -> list[dict[str, Any]]:
    """Set one condition, keeping lastTransitionTime when the status does not change."""
    now = utc_now()
    result = [dict(c) for c in conditions]
    for condition in result:
        if condition.get("type") == kind:
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now
            condition.update(status=status, lastProbeTime=now)
            for key, value in (("reason", reason), ("message", message)):
                if value is None:
                    condition.pop(key, None)
                else:
                    condition[key] = value
            return result
    new: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }
    if reason is not None:
        new["reason"] = reason
    if message is not None:
        new["message"] = message
    result.append(new)
    return result


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
    labels.update(
        {
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
    )
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


# --------------------------------------------------------------------------- state


@dataclass
class JobState:
    pods: dict[str, str] = field(default_factory=dict)  # pod name -> phase
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the failed pod
    succeeded: set[str] = field(default_factory=set)
    deadline_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class RunningPod:
    task: asyncio.Task[None] | None = None
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)


class PodRunner:
    """See the module docstring. ``start()``/``stop()`` inside a loop, or the thread helpers."""

    def __init__(
        self,
        url: str,
        *,
        gpus: int = 8,
        node_labels: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        node_name: str = NODE_NAME,
        retry_interval: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.gpus = gpus
        self.node_name = node_name
        self.node_labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **dict(node_labels or {}),
        }
        self.retry_interval = retry_interval
        self.extra_env = dict(extra_env or {})
        self._own_workdir = Path(tempfile.mkdtemp(prefix="devcluster-pods-"))
        self.log_dir = log_dir or self._own_workdir / "logs"
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._job_states: dict[str, JobState] = {}
        self._running: dict[str, RunningPod] = {}
        self._gpus_used: dict[str, int] = {}
        self._capacity_changed: asyncio.Event | None = None
        self._loop_thread: Any = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        log.info(
            "devcluster pod runner on node %s (%d GPUs); ignored pod fields: %s",
            self.node_name,
            self.gpus,
            IGNORED_FIELDS,
        )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        self._capacity_changed = asyncio.Event()
        await self._ensure_node()
        pods_ready = asyncio.Event()
        self._tasks.append(
            asyncio.create_task(self._watch("/api/v1/pods", self._on_pod, pods_ready))
        )
        await pods_ready.wait()
        self._tasks.append(asyncio.create_task(self._watch("/apis/batch/v1/jobs", self._on_job)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        running = [p.task for p in self._running.values() if p.task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        self._tasks.clear()
        self._running.clear()
        for state in self._job_states.values():
            if state.deadline_timer is not None:
                state.deadline_timer.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        shutil.rmtree(self._own_workdir, ignore_errors=True)

    def start_in_thread(self) -> None:
        from devcluster.cluster import BackgroundLoop

        self._loop_thread = BackgroundLoop("devcluster-podrunner")
        self._loop_thread.call(self.start)

    def stop_thread(self) -> None:
        if self._loop_thread is None:
            return
        try:
            self._loop_thread.call(self.stop, timeout=30)
        finally:
            self._loop_thread.close()
            self._loop_thread = None

    # ------------------------------------------------------------------ HTTP

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """JSON request; ``None`` on 404 (and on 409 for creations)."""
        assert self._session is not None
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(
            method, self.url + path, data=data, headers={"Content-Type": content_type}
        ) as response:
            if response.status == 404:
                return None
            if response.status == 409 and method == "POST":
                return None
            if response.status >= 400:
                text = await response.text()
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {text[:300]}")
            result: dict[str, Any] = await response.json()
            return result

    async def _patch_status(
        self, obj: Mapping[str, Any], plural: str, status: Any
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        prefix = "/api/v1" if plural == "pods" else "/apis/batch/v1"
        path = f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}/status"
        result = await self._request(
            "PATCH", path, {"status": status}, "application/merge-patch+json"
        )
        if result is None:
            raise ObjectGone(meta["name"])
        return result

    async def _event(
        self, obj: Mapping[str, Any], kind: str, reason: str, message: str, warning: bool = False
    ) -> None:
        meta = obj["metadata"]
        now = utc_now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1" if kind == "Pod" else "batch/v1",
                "kind": kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet" if kind == "Pod" else "job-controller"},
            "reportingComponent": "devcluster",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body)
        except Exception as exc:  # events are best effort
            log.debug("event %s for %s not written: %s", reason, meta["name"], exc)

    async def _ensure_node(self) -> None:
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": "16Gi",
            "pods": "110",
            GPU: str(self.gpus),
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.node_labels},
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "devcluster pod runner is ready",
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": "devcluster",
                    "containerRuntimeVersion": "devcluster://local-processes",
                    "kernelVersion": os.uname().release,
                    "kubeProxyVersion": "",
                    "kubeletVersion": "v1.32.0-devcluster",
                    "machineID": "devcluster",
                    "operatingSystem": "linux",
                    "osImage": "devcluster pod runner",
                    "systemUUID": "devcluster",
                },
            },
        }
        await self._request("POST", "/api/v1/nodes", node)

    async def _watch(
        self,
        path: str,
        handler: Callable[[str, dict[str, Any]], Awaitable[None]],
        ready: asyncio.Event | None = None,
    ) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 or errors."""
        assert self._session is not None
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    listing = await self._request("GET", path)
                    assert listing is not None
                    for item in listing["items"]:
                        await handler("ADDED", item)
                    resource_version = listing["metadata"]["resourceVersion"]
                    if ready is not None:
                        ready.set()
                params = {
                    "watch": "true",
                    "resourceVersion": resource_version,
                    "timeoutSeconds": "300",
                }
                async with self._session.get(self.url + path, params=params) as response:
                    while True:
                        line = await response.content.readline()
                        if not line:
                            break
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            resource_version = None
                            break
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        await handler(event["type"], event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch %s failed (%s); retrying", path, exc)
                await asyncio.sleep(self.retry_interval)

    # ------------------------------------------------------------------ Job controller

    async def _on_job(self, event_type: str, job: dict[str, Any]) -> None:
        uid = job["metadata"]["uid"]
        if event_type == "DELETED":
            self._jobs.pop(uid, None)
            state = self._job_states.pop(uid, None)
            if state is not None and state.deadline_timer is not None:
                state.deadline_timer.cancel()
            return
        self._remember_job(job)
        self._job_states.setdefault(uid, JobState())
        self._spawn(self._reconcile_job(uid))

    def _remember_job(self, job: dict[str, Any]) -> None:
        """Cache the newest version: our own status writes may be ahead of the watch."""
        uid = job["metadata"]["uid"]
        cached = self._jobs.get(uid)
        version = int(job["metadata"]["resourceVersion"])
        if cached is None or int(cached["metadata"]["resourceVersion"]) <= version:
            self._jobs[uid] = job

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            log.error("pod runner task failed", exc_info=task.exception())

    async def _reconcile_job(self, uid: str) -> None:
        state = self._job_states.get(uid)
        if state is None:
            return
        async with state.lock:
            job = self._jobs.get(uid)
            if job is None or job_finished(job) or job["metadata"].get("deletionTimestamp"):
                return
            with contextlib.suppress(ObjectGone):
                await self._reconcile_job_locked(job, state)

    async def _reconcile_job_locked(self, job: dict[str, Any], state: JobState) -> None:
        spec = job.get("spec") or {}
        old_status = job.get("status") or {}
        status = copy.deepcopy(old_status)
        conditions = status.get("conditions") or []
        active = [name for name, phase in state.pods.items() if phase in ("Pending", "Running")]

        if spec.get("suspend"):
            for name in active:
                await self._delete_pod(job, name)
            if not any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
                status["conditions"] = set_condition(
                    conditions, "Suspended", "True", "JobSuspended", "Job suspended"
                )
                status.pop("startTime", None)
                await self._event(job, "Job", "Suspended", "Job suspended")
            status["active"] = 0
            await self._write_job_status(job, old_status, status)
            return

        if any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
            conditions = set_condition(
                conditions, "Suspended", "False", "JobResumed", "Job resumed"
            )
            status["conditions"] = conditions
            await self._event(job, "Job", "Resumed", "Job resumed")
        status.setdefault("startTime", utc_now())

        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        elapsed = (
            datetime.datetime.now(tz=datetime.UTC) - parse_time(status["startTime"])
        ).total_seconds()
        failure: tuple[str, str] | None = None
        counted = 0  # failures that count towards backoffLimit and status.failed
        for failed_pod in state.failed.values():
            matched = pod_failure_action(spec.get("podFailurePolicy"), failed_pod)
            if matched is not None and matched[0] == "Ignore":
                continue
            counted += 1
            if matched is not None and matched[0] == "FailJob" and failure is None:
                failure = ("PodFailurePolicy", matched[1])
        if state.succeeded:
            failure = None
        elif failure is None and counted > backoff_limit:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif failure is None and deadline is not None and elapsed >= float(deadline):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")

        if state.succeeded:
            now = utc_now()
            conditions = set_condition(
                conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
            conditions = set_condition(
                conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
            status.update(conditions=conditions, completionTime=now)
            await self._event(job, "Job", "Completed", "Job completed")
        elif failure is not None:
            reason, message = failure
            for name in active:
                await self._delete_pod(job, name)
                state.pods[name] = "Failed"
            conditions = set_condition(conditions, "FailureTarget", "True", reason, message)
            conditions = set_condition(conditions, "Failed", "True", reason, message)
            status["conditions"] = conditions
            await self._event(job, "Job", reason, message, warning=True)
            active = []
        elif not active:
            pod = await self._request(
                "POST", f"/api/v1/namespaces/{job['metadata']['namespace']}/pods", pod_for_job(job)
            )
            if pod is not None:
                name = pod["metadata"]["name"]
                state.pods.setdefault(name, "Pending")
                active = [name]
                await self._event(job, "Job", "SuccessfulCreate", f"Created pod: {name}")
        if deadline is not None and failure is None and not state.succeeded:
            self._arm_deadline(job, state, float(deadline) - elapsed)

        status["active"] = len(active) if failure is None and not state.succeeded else 0
        status["succeeded"] = len(state.succeeded)
        status["failed"] = counted
        status["ready"] = sum(1 for name in active if state.pods.get(name) == "Running")
        await self._write_job_status(job, old_status, status)

    def _arm_deadline(self, job: Mapping[str, Any], state: JobState, remaining: float) -> None:
        if state.deadline_timer is not None:
            return
        uid = job["metadata"]["uid"]
        loop = asyncio.get_running_loop()

        def fire() -> None:
            state.deadline_timer = None
            self._spawn(self._reconcile_job(uid))

        state.deadline_timer = loop.call_later(max(remaining, 0.0) + 0.05, fire)

    async def _write_job_status(
        self, job: dict[str, Any], old: Mapping[str, Any], new: dict[str, Any]
    ) -> None:
        if new != old:
            self._remember_job(await self._patch_status(job, "jobs", new))

    async def _delete_pod(self, owner: Mapping[str, Any], name: str) -> None:
        namespace = owner["metadata"]["namespace"]
        await self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    # ------------------------------------------------------------------ pods (kubelet)

    async def _on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        phase = (pod.get("status") or {}).get("phase", "Pending")
        job_uid = controller_uid(pod, "Job")
        gone = event_type == "DELETED" or bool(meta.get("deletionTimestamp"))
        if job_uid is not None and (job_uid in self._job_states or not gone):
            # Pods seen before their Job (at start-up) seed its state: no duplicate pods.
            state = self._job_states.setdefault(job_uid, JobState())
            if phase == "Failed":
                state.failed[meta["name"]] = pod
            elif phase == "Succeeded":
                state.succeeded.add(meta["name"])
            if gone:
                state.pods.pop(meta["name"], None)
            else:
                state.pods[meta["name"]] = phase
            if job_uid in self._jobs:
                self._spawn(self._reconcile_job(job_uid))
        if gone:
            running = self._running.pop(uid, None)
            if running is not None and running.task is not None:
                running.task.cancel()
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if uid in self._running or phase != "Pending" or node not in (None, "", self.node_name):
            return
        running = RunningPod()
        running.task = asyncio.create_task(self._run_pod(pod, running), name=f"pod {meta['name']}")
        self._running[uid] = running

    async def _run_pod(self, pod: dict[str, Any], running: RunningPod) -> None:
        uid = pod["metadata"]["uid"]
        workdir = self._own_workdir / "pods" / uid
        try:
            await self._kubelet(pod, workdir, running)
        except (asyncio.CancelledError, ObjectGone):
            pass
        except Exception:
            log.exception("pod %s: the pod runner failed", pod["metadata"]["name"])
        finally:
            if self._running.get(uid) is running:
                del self._running[uid]
            await self._kill(running.processes)
            if self._gpus_used.pop(uid, None):
                assert self._capacity_changed is not None
                self._capacity_changed.set()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _schedule(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        assert self._capacity_changed is not None
        uid = pod["metadata"]["uid"]
        reported: str | None = None
        while True:
            free = self.gpus - sum(self._gpus_used.values())
            reason = unschedulable_reason(pod, self.node_labels, free, self.gpus)
            if reason is None:
                self._gpus_used[uid] = gpu_request(pod)
                status["conditions"] = set_condition(
                    status.get("conditions") or [], "PodScheduled", "True"
                )
                return
            if reason != reported:
                status["conditions"] = set_condition(
                    status.get("conditions") or [], "PodScheduled", "False", "Unschedulable", reason
                )
                await self._patch_status(pod, "pods", status)
                await self._event(pod, "Pod", "FailedScheduling", reason, warning=True)
                reported = reason
            self._capacity_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity_changed.wait(), self.retry_interval * 5)

    async def _kubelet(self, pod: dict[str, Any], workdir: Path, running: RunningPod) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        containers: list[dict[str, Any]] = spec.get("containers") or []
        status: dict[str, Any] = {"phase": "Pending", "qosClass": "BestEffort", "conditions": []}
        await self._schedule(pod, status)
        bound = await self._request(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            {"spec": {"nodeName": self.node_name}},
            "application/merge-patch+json",
        )
        if bound is None:
            raise ObjectGone(meta["name"])
        status.update(hostIP="127.0.0.1", podIP="127.0.0.1", startTime=utc_now())
        status["conditions"] = set_condition(status["conditions"], "Initialized", "True")
        await self._event(
            pod,
            "Pod",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node_name}",
        )

        def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
            state: dict[str, Any] = {"reason": reason}
            if message:
                state["message"] = message
            return {"waiting": state}

        def container_statuses(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                {
                    "name": c.get("name", ""),
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": "running" in s,
                    "started": "running" in s,
                    "restartCount": 0,
                    "state": s,
                    "lastState": {},
                    **(
                        {"containerID": f"devcluster://{meta['uid']}/{c.get('name', '')}"}
                        if "waiting" not in s
                        else {}
                    ),
                }
                for c, s in zip(containers, states, strict=True)
            ]

        # Images: the invalid.example/ convention stands for an unpullable image.
        bad = [c for c in containers if str(c.get("image", "")).startswith(UNPULLABLE_PREFIX)]
        if bad:
            image = bad[0]["image"]
            message = f'Failed to pull image "{image}": {image.split("/")[0]}: no such host'
            states = [
                waiting("ErrImagePull", message) if c in bad else waiting("ContainerCreating")
                for c in containers
            ]
            status["containerStatuses"] = container_statuses(states)
            await self._patch_status(pod, "pods", status)
            await self._event(pod, "Pod", "Failed", message, warning=True)
            await asyncio.sleep(self.retry_interval)
            backoff = f'Back-off pulling image "{image}"'
            states = [
                waiting("ImagePullBackOff", backoff) if c in bad else waiting("ContainerCreating")
                for c in containers
            ]
            status["containerStatuses"] = container_statuses(states)
            await self._patch_status(pod, "pods", status)
            await self._event(pod, "Pod", "BackOff", backoff, warning=True)
            await asyncio.Event().wait()  # stays until the pod is deleted

        # Volumes, then each container's env: retried until the referenced objects exist.
        reported: str | None = None
        while True:
            try:
                mounts_by_volume = await self._materialise_volumes(pod, workdir)
                environments = [await self._container_env(pod, c) for c in containers]
                break
            except MissingReference as missing:
                if missing.message != reported:
                    reported = missing.message
                    if missing.volume is not None:
                        states = [waiting("ContainerCreating") for _ in containers]
                        event = (
                            f'MountVolume.SetUp failed for volume "{missing.volume}" : '
                            f"{missing.message}"
                        )
                        reason = "FailedMount"
                    else:
                        states = [
                            waiting("CreateContainerConfigError", missing.message)
                            for _ in containers
                        ]
                        event = f"Error: {missing.message}"
                        reason = "Failed"
                    status["containerStatuses"] = container_statuses(states)
                    await self._patch_status(pod, "pods", status)
                    await self._event(pod, "Pod", reason, event, warning=True)
                await asyncio.sleep(self.retry_interval)

        # Start all containers.
        started = utc_now()
        processes: list[tuple[asyncio.subprocess.Process | None, str, Path]] = []
        for container, env in zip(containers, environments, strict=True):
            started_process = await self._start_container(
                pod, container, env, mounts_by_volume, workdir
            )
            processes.append(started_process)
            if started_process[0] is not None:
                running.processes.append(started_process[0])
        states = [
            {"running": {"startedAt": started}}
            if proc is not None
            else {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": error,
                    "startedAt": started,
                    "finishedAt": started,
                }
            }
            for proc, error, _ in processes
        ]
        if any(proc is not None for proc, _, _ in processes):
            status["phase"] = "Running"
            for kind in ("ContainersReady", "Ready"):
                status["conditions"] = set_condition(status["conditions"], kind, "True")
            status["containerStatuses"] = container_statuses(states)
            await self._patch_status(pod, "pods", status)
            await self._event(pod, "Pod", "Started", "Started container")

        # Wait for every process and report how each ended.
        finals: list[dict[str, Any]] = []
        for (proc, error, message_file), container in zip(processes, containers, strict=True):
            if proc is None:
                finals.append(
                    {
                        "terminated": {
                            "exitCode": 128,
                            "reason": "StartError",
                            "message": error,
                            "startedAt": started,
                            "finishedAt": utc_now(),
                        }
                    }
                )
                continue
            code = await proc.wait()
            terminated: dict[str, Any] = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": utc_now(),
                "containerID": f"devcluster://{meta['uid']}/{container.get('name', '')}",
            }
            if code < 0:
                terminated["signal"] = -code
            message = self._termination_message(container, message_file, pod, code)
            if message:
                terminated["message"] = message
            finals.append({"terminated": terminated})
        succeeded = all(s["terminated"]["exitCode"] == 0 for s in finals)
        status["phase"] = "Succeeded" if succeeded else "Failed"
        for kind in ("ContainersReady", "Ready"):
            status["conditions"] = set_condition(
                status["conditions"], kind, "False", "PodCompleted"
            )
        status["containerStatuses"] = container_statuses(finals)
        await self._patch_status(pod, "pods", status)

    def _termination_message(
        self, container: Mapping[str, Any], message_file: Path, pod: Mapping[str, Any], code: int
    ) -> str:
        message = ""
        if message_file.exists():
            with message_file.open("rb") as handle:
                message = handle.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            log_file = self._log_file(pod, container)
            if log_file.exists():
                lines = log_file.read_text(errors="replace").splitlines()[-80:]
                message = "\n".join(lines)[-2048:]
        return message

    def _log_file(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.log_dir / meta["namespace"] / meta["name"] / f"{container.get('name', '')}.log"

    async def _start_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        env: dict[str, str],
        mounts_by_volume: Mapping[str, Path],
        workdir: Path,
    ) -> tuple[asyncio.subprocess.Process | None, str, Path]:
        name = container.get("name", "")
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            local = mounts_by_volume.get(mount.get("name", ""))
            if local is None:
                continue
            if mount.get("subPath"):
                local = local / mount["subPath"]
            mounts[mount["mountPath"]] = local
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        message_file = workdir / "termination" / name
        message_file.parent.mkdir(parents=True, exist_ok=True)
        mounts[message_path] = message_file

        argv = [str(a) for a in (container.get("command") or [])] + [
            str(a) for a in (container.get("args") or [])
        ]
        argv = [rewrite_path(arg, mounts) for arg in argv]
        env = {key: rewrite_path(value, mounts) for key, value in env.items()}
        search_path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        home, tmp = workdir / "home", workdir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        process_env = {
            "PATH": search_path,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "TMPDIR": str(tmp),
            "HOSTNAME": pod["metadata"]["name"],
            **self.extra_env,
            **env,
        }
        if not argv:
            return None, "devcluster: the container has no command or args to run", message_file
        executable = resolve_executable(argv[0], search_path)
        if executable is None:
            error = f'exec: "{argv[0]}": executable file not found in $PATH'
            return None, error, message_file
        working_dir = container.get("workingDir")
        cwd = Path(rewrite_path(working_dir, mounts)) if working_dir else home
        if not cwd.is_dir():
            cwd = home
        log_file = self._log_file(pod, container)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                env=process_env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, so we can kill its children
            )
        return process, "", message_file

    @staticmethod
    async def _kill(processes: list[asyncio.subprocess.Process]) -> None:
        alive = [p for p in processes if p.returncode is None]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in alive:
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()

    # ------------------------------------------------------------------ config objects

    async def _read(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")

    @staticmethod
    def _values(obj: Mapping[str, Any], plural: str) -> dict[str, bytes]:
        if plural == "secrets":
            values = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            values.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            return values
        values = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return values

    async def _materialise_volumes(self, pod: Mapping[str, Any], workdir: Path) -> dict[str, Path]:
        namespace = pod["metadata"]["namespace"]
        result: dict[str, Path] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume.get("name", "")
            target = workdir / "volumes" / name
            source: tuple[str, str, str] | None = None  # plural, object name, kind word
            if "secret" in volume:
                source = ("secrets", volume["secret"].get("secretName", ""), "secret")
                config = volume["secret"]
            elif "configMap" in volume:
                source = ("configmaps", volume["configMap"].get("name", ""), "configmap")
                config = volume["configMap"]
            if source is not None:
                plural, object_name, word = source
                obj = await self._read(namespace, plural, object_name)
                if obj is None:
                    if config.get("optional"):
                        target.mkdir(parents=True, exist_ok=True)
                        result[name] = target
                        continue
                    raise MissingReference(f'{word} "{object_name}" not found', volume=name)
                values = self._values(obj, plural)
                items = config.get("items") or [{"key": k, "path": k} for k in values]
                mode = int(config.get("defaultMode", 0o644))
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                for item in items:
                    if item["key"] not in values:
                        raise MissingReference(
                            f"couldn't find key {item['key']} in {word.capitalize()} "
                            f"{namespace}/{object_name}",
                            volume=name,
                        )
                    file = target / item["path"]
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(values[item["key"]])
                    file.chmod(int(item.get("mode", mode)) | 0o400)  # we must read it ourselves
            else:  # emptyDir and anything else: an empty private directory
                target.mkdir(parents=True, exist_ok=True)
            result[name] = target
        return result

    async def _container_env(
        self, pod: Mapping[str, Any], container: Mapping[str, Any]
    ) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            for key, plural, word in (
                ("secretRef", "secrets", "secret"),
                ("configMapRef", "configmaps", "configmap"),
            ):
                if key in source:
                    obj = await self._read(namespace, plural, source[key].get("name", ""))
                    if obj is None:
                        if source[key].get("optional"):
                            continue
                        raise MissingReference(f'{word} "{source[key].get("name")}" not found')
                    prefix = source.get("prefix", "")
                    for k, v in self._values(obj, plural).items():
                        env[prefix + k] = v.decode(errors="replace")
        for variable in container.get("env") or []:
            name = variable["name"]
            if "value" in variable:
                env[name] = str(variable["value"])
                continue
            value_from = variable.get("valueFrom") or {}
            for key, plural, word in (
                ("secretKeyRef", "secrets", "secret"),
                ("configMapKeyRef", "configmaps", "configmap"),
            ):
                if key in value_from:
                    ref = value_from[key]
                    obj = await self._read(namespace, plural, ref.get("name", ""))
                    if obj is None:
                        if ref.get("optional"):
                            break
                        raise MissingReference(f'{word} "{ref.get("name")}" not found')
                    values = self._values(obj, plural)
                    if ref.get("key") not in values:
                        if ref.get("optional"):
                            break
                        raise MissingReference(
                            f"couldn't find key {ref.get('key')} in {word.capitalize()} "
                            f"{namespace}/{ref.get('name')}"
                        )
                    env[name] = values[ref["key"]].decode(errors="replace")
            if "fieldRef" in value_from:
                path = value_from["fieldRef"].get("fieldPath", "")
                fields = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": namespace,
                    "metadata.uid": pod["metadata"]["uid"],
                    "spec.nodeName": self.node_name,
                    "status.podIP": "127.0.0.1",
                    "status.hostIP": "127.0.0.1",
                }
                env[name] = fields.get(path, "")
        return env
