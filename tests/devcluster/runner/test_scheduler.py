"""The scheduler: GPU limits and nodeSelector decide whether and when a pod runs."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from devcluster.runner.scheduler import GPU, gpu_request, unschedulable_reason
from tests.devcluster.runner.jobs import (
    GPUS,
    condition,
    finished_job,
    make_job,
    pods_of,
    python,
    unschedulable,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)


def test_gpu_and_node_selector_mismatch_are_unschedulable(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    too_many = {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": str(GPUS + 1)}}}
    make_job(batch, ns, "big", too_many)
    make_job(batch, ns, "elsewhere", python("pass"), node_selector={"pool": "gpu-b"})
    make_job(batch, ns, "fits", python("pass"), node_selector={"pool": "gpu-a"})

    big = wait_for(lambda: unschedulable(core, ns, "big"))
    assert big.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in big.message
    elsewhere = wait_for(lambda: unschedulable(core, ns, "elsewhere"))
    assert "node affinity/selector" in elsewhere.message
    assert condition(finished_job(batch, ns, "fits"), "Complete")
    assert all(p.status.phase == "Pending" for p in pods_of(core, ns, "big"))
    node = core.read_node("devcluster-node")
    assert node.status.capacity["nvidia.com/gpu"] == str(GPUS)


def test_gpu_capacity_bounds_concurrency(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    hold = {
        **python("import os, time\nwhile not os.path.exists('/tmp/never'): time.sleep(0.05)"),
        "resources": {"limits": {"nvidia.com/gpu": str(GPUS)}},
    }
    make_job(batch, ns, "first", hold, activeDeadlineSeconds=3)
    wait_for(lambda: [p for p in pods_of(core, ns, "first") if p.status.phase == "Running"])
    make_job(
        batch, ns, "second", {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    )

    wait_for(lambda: unschedulable(core, ns, "second"))
    assert condition(finished_job(batch, ns, "first"), "Failed")  # deadline frees the GPUs
    assert condition(finished_job(batch, ns, "second"), "Complete")


def test_fit_is_a_pure_decision() -> None:
    def pod(gpus: str | int | None, **selector: str) -> dict[str, Any]:
        resources = {} if gpus is None else {"limits": {"nvidia.com/gpu": gpus}}
        return {"spec": {"nodeSelector": selector, "containers": [{"resources": resources}]}}

    labels = {"pool": "gpu-a"}
    assert gpu_request(pod("2")) == 2 and gpu_request(pod(None)) == 0
    assert gpu_request({"spec": {"containers": [{"resources": {"requests": {GPU: "3"}}}]}}) == 3
    assert unschedulable_reason(pod("2", pool="gpu-a"), labels, 2, 8) is None
    assert "Insufficient nvidia.com/gpu" in str(unschedulable_reason(pod("3"), labels, 2, 8))
    assert "Insufficient nvidia.com/gpu" in str(unschedulable_reason(pod("9"), labels, 8, 8))
    assert "node affinity/selector" in str(unschedulable_reason(pod(0, pool="b"), labels, 8, 8))
