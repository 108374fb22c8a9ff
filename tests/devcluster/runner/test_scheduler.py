"""The scheduler: GPU limits and nodeSelector decide whether and when a pod runs."""

from __future__ import annotations

from typing import Any

from devcluster.runner.scheduler import GPU, gpu_request, unschedulable_reason
from tests.devcluster.runner.jobs import GPUS, JobSpace, condition, python
from tests.polling import wait_for


def test_gpu_and_node_selector_mismatch_are_unschedulable(space: JobSpace) -> None:
    too_many = {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": str(GPUS + 1)}}}
    space.make_job("big", too_many)
    space.make_job("elsewhere", python("pass"), node_selector={"pool": "gpu-b"})
    space.make_job("fits", python("pass"), node_selector={"pool": "gpu-a"})

    big = wait_for(lambda: space.unschedulable("big"))
    assert big.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in big.message
    elsewhere = wait_for(lambda: space.unschedulable("elsewhere"))
    assert "node affinity/selector" in elsewhere.message
    assert condition(space.finished_job("fits"), "Complete")
    assert all(p.status.phase == "Pending" for p in space.pods_of("big"))
    node = space.core.read_node("devcluster-node")
    assert node.status.capacity["nvidia.com/gpu"] == str(GPUS)


def test_gpu_capacity_bounds_concurrency(space: JobSpace) -> None:
    hold = {
        **python("import os, time\nwhile not os.path.exists('/tmp/never'): time.sleep(0.05)"),
        "resources": {"limits": {"nvidia.com/gpu": str(GPUS)}},
    }
    space.make_job("first", hold, activeDeadlineSeconds=3)
    wait_for(lambda: [p for p in space.pods_of("first") if p.status.phase == "Running"])
    space.make_job("second", {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": "1"}}})

    wait_for(lambda: space.unschedulable("second"))
    assert condition(space.finished_job("first"), "Failed")  # deadline frees the GPUs
    assert condition(space.finished_job("second"), "Complete")


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
