"""The fake node's scheduler: its Node object and whether a pod fits it (GPUs, nodeSelector).

The scheduler of the one fake node: its Node object, and whether a pod fits it now
(``nvidia.com/gpu`` limits against the free GPUs, ``nodeSelector`` against the labels).

A pod that does not fit stays Pending with PodScheduled=False/Unschedulable (and a
FailedScheduling Event) until capacity is released; GPUs thereby bound concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from devcluster.runner.conditions import set_condition

GPU = "nvidia.com/gpu"
NODE_NAME = "devcluster-node"
FIELDS = ("limits", "requests")  # where a container asks for GPUs, in order
DEFAULT_NODE_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}


def gpu_request(pod: Mapping[str, Any]) -> int:
    """The GPUs a pod asks for: each container's limit, or else its request."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = next((v for v in ((resources.get(f) or {}).get(GPU) for f in FIELDS) if v), None)
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
    if wanted > capacity or wanted > free_gpus:
        return f"0/1 nodes are available: 1 Insufficient {GPU}."
    return None


def node_manifest(name: str, labels: Mapping[str, str], gpus: int) -> dict[str, Any]:
    """The Node object the runner registers for itself."""
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "memory": "16Gi",
        "pods": "110",
        GPU: str(gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels)},
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
                {"type": "Hostname", "address": name},
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


# Called when a pod is found unschedulable (a new reason): (status to write, message).
ReportUnschedulable = Callable[[dict[str, Any], str], Awaitable[None]]


class Scheduler:
    """GPU accounting for the node; ``admit`` waits until a pod fits, ``release`` frees it."""

    def __init__(
        self,
        *,
        node_name: str = NODE_NAME,
        node_labels: Mapping[str, str] | None = None,
        gpus: int = 8,
        retry_interval: float = 1.0,
    ) -> None:
        self.node_name = node_name
        self.node_labels = {
            "kubernetes.io/hostname": node_name,
            **DEFAULT_NODE_LABELS,
            **dict(node_labels or {}),
        }
        self.gpus = gpus
        self.retry_interval = retry_interval
        self._used: dict[str, int] = {}  # pod uid -> GPUs
        self._capacity_changed = asyncio.Event()

    def node(self) -> dict[str, Any]:
        return node_manifest(self.node_name, self.node_labels, self.gpus)

    def free_gpus(self) -> int:
        return self.gpus - sum(self._used.values())

    async def admit(
        self, pod: dict[str, Any], status: dict[str, Any], report: ReportUnschedulable
    ) -> None:
        """Return once the pod fits (its GPUs reserved, PodScheduled=True set in ``status``)."""
        uid = pod["metadata"]["uid"]
        reported: str | None = None
        while True:
            reason = unschedulable_reason(pod, self.node_labels, self.free_gpus(), self.gpus)
            if reason is None:
                self._used[uid] = gpu_request(pod)
                status["conditions"] = set_condition(
                    status.get("conditions") or [], "PodScheduled", "True"
                )
                return
            if reason != reported:
                status["conditions"] = set_condition(
                    status.get("conditions") or [], "PodScheduled", "False", "Unschedulable", reason
                )
                await report(status, reason)
                reported = reason
            self._capacity_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity_changed.wait(), self.retry_interval * 5)

    def release(self, uid: str) -> None:
        """The pod is gone: its GPUs are free again."""
        if self._used.pop(uid, None):
            self._capacity_changed.set()
