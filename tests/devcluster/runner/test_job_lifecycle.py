"""Tests that the pod runner handles Jobs and their pods as a real cluster does.

Jobs and their pods as a real cluster handles them: suspend on a running Job, template
finalizers on pods (a finished pod and its termination message stay until the finalizer
goes), graceful pod deletion, deleted pods counting as failures, Foreground/Background/
Orphan deletion (batch/v1 Jobs orphan by default), TTL after finished, FailedCreate."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from devcluster.runner.jobs import TRACKING_FINALIZER
from tests.devcluster.runner.jobs import condition, finished_job, pods_of, python
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(90)
RESULT = "example.com/result"  # a finalizer of "the operator", held until it read the result


def job_body(
    name: str, code: str, *args: str, finalizers: list[str] | None = None, **spec: Any
) -> Any:
    metadata: dict[str, Any] = {"labels": {"app": "t"}, "annotations": {"note": "kept"}}
    if finalizers:
        metadata["finalizers"] = finalizers
    container = {"name": "main", "image": "example/worker:1", **python(code, *args)}
    container["terminationMessagePath"] = "/dev/termination-log"
    return {
        "metadata": {"name": name},
        "spec": {
            "template": {"metadata": metadata, "spec": {"restartPolicy": "Never",
                                                        "containers": [container]}},
            **spec,
        },
    }  # fmt: skip


def release(core: kubernetes.client.CoreV1Api, ns: str, pod: Any) -> None:
    """What the operator does once it recorded the result: drop its finalizer (optimistic)."""
    fresh = core.read_namespaced_pod(pod.metadata.name, ns)
    kept = [f for f in fresh.metadata.finalizers or [] if f != RESULT]
    core.patch_namespaced_pod(
        pod.metadata.name,
        ns,
        {
            "metadata": {
                "finalizers": kept or None,
                "resourceVersion": fresh.metadata.resource_version,
            }
        },
    )


def running_pod(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> Any:
    return wait_for(
        lambda: next((p for p in pods_of(core, ns, job) if p.status.phase == "Running"), None)
    )


def test_suspending_a_running_job_deletes_its_pod_without_counting_a_failure(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    batch.create_namespaced_job(
        ns, job_body("pause", "import time; time.sleep(60)", backoffLimit=0)
    )
    first = running_pod(core, ns, "pause")
    assert TRACKING_FINALIZER in first.metadata.finalizers
    batch.patch_namespaced_job("pause", ns, {"spec": {"suspend": True}})
    job = wait_for(lambda: condition(batch.read_namespaced_job("pause", ns), "Suspended"))
    assert job.reason == "JobSuspended"
    wait_for(lambda: not pods_of(core, ns, "pause"))  # killed and gone
    job = batch.read_namespaced_job("pause", ns)
    assert not job.status.active and not job.status.failed and job.status.start_time
    assert not condition(job, "Failed")  # backoffLimit 0: a counted failure would fail it
    batch.patch_namespaced_job(
        "pause", ns, {"spec": {"suspend": False, "activeDeadlineSeconds": 60}}
    )
    second = running_pod(core, ns, "pause")
    assert second.metadata.name != first.metadata.name
    resumed = batch.read_namespaced_job("pause", ns)
    assert resumed.status.active == 1
    assert [c.status for c in resumed.status.conditions if c.type == "Suspended"] == ["False"]
    reasons = [e.reason for e in core.list_namespaced_event(ns).items]
    assert {"Suspended", "Resumed", "SuccessfulDelete"} <= set(reasons)


def test_template_finalizers_keep_a_finished_pod_and_its_result(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    code = "import sys; open(sys.argv[1], 'w').write('{\"result\": 42}')"
    body = job_body("keep", code, "/dev/termination-log", finalizers=[RESULT])
    batch.create_namespaced_job(ns, body)
    job = finished_job(batch, ns, "keep")
    assert condition(job, "Complete") and job.status.succeeded == 1
    (pod,) = pods_of(core, ns, "keep")
    assert pod.metadata.labels["app"] == "t" and pod.metadata.annotations["note"] == "kept"
    assert pod.metadata.finalizers == [RESULT]  # the tracking finalizer went once counted
    # A person (or TTL, or GC) deletes the pod: it stays, terminating, with its result.
    core.delete_namespaced_pod(pod.metadata.name, ns)
    held = core.read_namespaced_pod(pod.metadata.name, ns)
    assert held.metadata.deletion_timestamp and held.status.phase == "Succeeded"
    assert json.loads(held.status.container_statuses[0].state.terminated.message) == {"result": 42}
    with pytest.raises(ApiException) as caught:  # no new finalizers on a terminating object
        core.patch_namespaced_pod(
            pod.metadata.name, ns, {"metadata": {"finalizers": [RESULT, "x/y"]}}
        )
    assert caught.value.status == 422 and "no new finalizers can be added" in caught.value.body
    release(core, ns, held)
    wait_for(lambda: not pods_of(core, ns, "keep"))


def test_a_deleted_running_pod_terminates_gracefully_and_counts_as_failed(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    batch.create_namespaced_job(
        ns, job_body("retry", "import time; time.sleep(60)", finalizers=[RESULT], backoffLimit=1)
    )
    pod = running_pod(core, ns, "retry")
    deleted = core.delete_namespaced_pod(pod.metadata.name, ns)
    assert (
        deleted.metadata.deletion_timestamp and deleted.metadata.deletion_grace_period_seconds == 30
    )

    def confirmed() -> Any:
        """Killed, reported, and confirmed by the kubelet (grace 0): held by the finalizer."""
        current = core.read_namespaced_pod(pod.metadata.name, ns)
        return current if current.metadata.deletion_grace_period_seconds == 0 else None

    ended = wait_for(confirmed)
    terminated = ended.status.container_statuses[0].state.terminated
    assert ended.status.phase == "Failed" and terminated.exit_code == 143
    replacement = wait_for(
        lambda: next((p for p in pods_of(core, ns, "retry") if p.metadata.name != pod.metadata.name
                      and p.status.phase == "Running"), None)
    )  # fmt: skip
    job = wait_for(lambda: (j := batch.read_namespaced_job("retry", ns)).status.failed == 1 and j)
    assert job.status.active == 1 and not condition(job, "Failed")
    release(core, ns, ended)
    core.delete_namespaced_pod(replacement.metadata.name, ns, grace_period_seconds=0)
    job = finished_job(batch, ns, "retry")
    assert condition(job, "Failed").reason == "BackoffLimitExceeded" and job.status.failed == 2
    for leftover in pods_of(core, ns, "retry"):
        release(core, ns, leftover)


def test_foreground_deletion_waits_for_blocking_dependents(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    batch.create_namespaced_job(ns, job_body("fg", "print('done')", finalizers=[RESULT]))
    finished_job(batch, ns, "fg")
    (pod,) = pods_of(core, ns, "fg")
    batch.delete_namespaced_job("fg", ns, propagation_policy="Foreground")
    job = batch.read_namespaced_job("fg", ns)
    assert job.metadata.deletion_timestamp and "foregroundDeletion" in job.metadata.finalizers
    held = core.read_namespaced_pod(pod.metadata.name, ns)
    assert held.metadata.deletion_timestamp  # deleted first, held by the result finalizer
    release(core, ns, held)
    wait_for(lambda: not pods_of(core, ns, "fg"))
    wait_for(lambda: not batch.list_namespaced_job(ns, field_selector="metadata.name=fg").items)


def test_background_orphan_and_the_job_default(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    for name in ("bg", "plain"):
        batch.create_namespaced_job(ns, job_body(name, "print('done')"))
        finished_job(batch, ns, name)
    batch.delete_namespaced_job("bg", ns, propagation_policy="Background")
    wait_for(lambda: not pods_of(core, ns, "bg"))
    # batch/v1 Jobs deleted without a policy orphan their pods (kubectl sends Background).
    batch.delete_namespaced_job("plain", ns)
    (orphan,) = pods_of(core, ns, "plain")
    assert not orphan.metadata.owner_references


def test_ttl_after_finished_deletes_the_job_in_the_foreground(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    batch.create_namespaced_job(
        ns, job_body("ttl", "print('done')", finalizers=[RESULT], ttlSecondsAfterFinished=1)
    )
    (pod,) = wait_for(lambda: pods_of(core, ns, "ttl"))
    job = wait_for(
        lambda: (j := batch.read_namespaced_job("ttl", ns)).metadata.deletion_timestamp and j
    )
    assert condition(job, "Complete") and "foregroundDeletion" in job.metadata.finalizers
    held = wait_for(
        lambda: (
            (p := core.read_namespaced_pod(pod.metadata.name, ns)).metadata.deletion_timestamp and p
        )
    )
    assert held.status.phase == "Succeeded"  # the result is still readable
    release(core, ns, held)
    wait_for(lambda: not batch.list_namespaced_job(ns, field_selector="metadata.name=ttl").items)


def test_a_refused_pod_is_a_failed_create_retried(
    api: kubernetes.client.ApiClient,
    core: kubernetes.client.CoreV1Api,
    batch: kubernetes.client.BatchV1Api,
    ns: str,
) -> None:
    body = job_body("prio", "print('done')")
    body["spec"]["template"]["spec"]["priorityClassName"] = f"{ns}-high"
    batch.create_namespaced_job(ns, body)

    def failed_create() -> Any:
        return next(
            (e for e in core.list_namespaced_event(ns).items if e.reason == "FailedCreate"), None
        )

    event = wait_for(failed_create)
    assert event.type == "Warning"
    assert f"no PriorityClass with name {ns}-high was found" in event.message
    scheduling = kubernetes.client.SchedulingV1Api(api)
    scheduling.create_priority_class({"metadata": {"name": f"{ns}-high"}, "value": 100})
    try:
        job = finished_job(batch, ns, "prio")
        assert condition(job, "Complete")
        (pod,) = pods_of(core, ns, "prio")
        assert pod.spec.priority == 100
    finally:
        scheduling.delete_priority_class(f"{ns}-high")
