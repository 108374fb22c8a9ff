"""Helpers of the pod runner tests: Jobs running `python -c`, their pods, their conditions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes.client

from tests.polling import wait_for

GPUS = 2  # the fake node's nvidia.com/gpu capacity in these tests


def python(code: str, *args: str) -> dict[str, Any]:
    return {"command": ["python", "-c", code], "args": list(args)}


def make_job(
    batch: kubernetes.client.BatchV1Api,
    ns: str,
    name: str,
    container: dict[str, Any],
    *,
    volumes: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
    **spec: Any,
) -> Any:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "example/worker:1", **container}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    body = {
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": {"app": "t"}}, "spec": pod_spec}, **spec},
    }
    return batch.create_namespaced_job(ns, body)


def condition(obj: Any, kind: str) -> Any:
    for item in (obj.status.conditions or []) if obj.status else []:
        if item.type == kind and item.status == "True":
            return item
    return None


def finished_job(batch: kubernetes.client.BatchV1Api, ns: str, name: str) -> Any:
    def done() -> Any:
        job = batch.read_namespaced_job(name, ns)
        return job if condition(job, "Complete") or condition(job, "Failed") else None

    return wait_for(done)


def pods_of(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> list[Any]:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items


def waiting_reason(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> Callable[[], Any]:
    def reason() -> Any:
        for pod in pods_of(core, ns, job):
            for status in pod.status.container_statuses or []:
                if status.state.waiting:
                    return (status.state.waiting.reason, status.state.waiting.message)
        return None

    return reason


def unschedulable(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> Any:
    """The PodScheduled=False condition of one of the Job's pods, if any."""
    for pod in pods_of(core, ns, job):
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return cond
    return None


@dataclass(frozen=True)
class JobSpace:
    """One test's namespace on the pod-runner cluster: its clients, and the helpers above
    bound to them (the ``space`` fixture)."""

    core: kubernetes.client.CoreV1Api
    batch: kubernetes.client.BatchV1Api
    ns: str

    def make_job(self, name: str, container: dict[str, Any], **options: Any) -> Any:
        return make_job(self.batch, self.ns, name, container, **options)

    def finished_job(self, name: str) -> Any:
        return finished_job(self.batch, self.ns, name)

    def failed_job(self, name: str, reason: str) -> tuple[Any, Any]:
        """Wait for the Job to finish, check it Failed for ``reason``: the Job, the condition."""
        job = self.finished_job(name)
        failed = condition(job, "Failed")
        assert failed and failed.reason == reason, f"Job {name}: {failed}"
        return job, failed

    def pods_of(self, job: str) -> list[Any]:
        return pods_of(self.core, self.ns, job)

    def waiting_reason(self, job: str) -> Callable[[], Any]:
        return waiting_reason(self.core, self.ns, job)

    def unschedulable(self, job: str) -> Any:
        return unschedulable(self.core, self.ns, job)
