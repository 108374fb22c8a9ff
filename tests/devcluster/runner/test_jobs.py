"""The Job controller: pods per Job, backoffLimit, podFailurePolicy, deadlines, suspend."""

from __future__ import annotations

from pathlib import Path

import kubernetes.client
import pytest

from tests.devcluster.runner.jobs import (
    condition,
    finished_job,
    make_job,
    pods_of,
    python,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)


def test_job_success_reports_pod_and_job_status(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    created = make_job(batch, ns, "ok", python("print('hello from the pod')"))
    job = finished_job(batch, ns, "ok")
    assert condition(job, "Complete") and job.status.succeeded == 1
    assert job.status.start_time and job.status.completion_time
    (pod,) = pods_of(core, ns, "ok")
    assert pod.metadata.name.startswith("ok-")
    assert pod.metadata.labels["app"] == "t"
    assert pod.metadata.labels["controller-uid"] == created.metadata.uid
    owner = pod.metadata.owner_references[0]
    assert owner.controller and owner.uid == created.metadata.uid and owner.kind == "Job"
    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "devcluster-node"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    assert terminated.started_at and terminated.finished_at
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert scheduled.status == "True"
    assert "hello from the pod" in core.read_namespaced_pod_log(pod.metadata.name, ns)


def test_failures_retry_until_backoff_limit(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "bad", python("import sys; sys.exit(3)"), backoffLimit=1)
    job = finished_job(batch, ns, "bad")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "BackoffLimitExceeded"
    pods = pods_of(core, ns, "bad")
    assert len(pods) == 2 and job.status.failed == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed"
        assert terminated.exit_code == 3 and terminated.reason == "Error"


def test_pod_failure_policy_fails_the_job_at_once_or_ignores_the_failure(
    core: kubernetes.client.CoreV1Api,
    batch: kubernetes.client.BatchV1Api,
    ns: str,
    tmp_path: Path,
) -> None:
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                  "values": [3, 5]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
        ]
    }  # fmt: skip
    make_job(batch, ns, "fatal", python("import sys; sys.exit(5)"),
             backoffLimit=3, podFailurePolicy=policy)  # fmt: skip
    job = finished_job(batch, ns, "fatal")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "PodFailurePolicy"
    assert "exit code 5 matching FailJob rule at index 0" in failed.message
    assert len(pods_of(core, ns, "fatal")) == 1 and job.status.failed == 1

    # Ignored failures neither count nor stop the retries: exit 7 twice, then 1 (counted).
    count = "import os, sys; d = sys.argv[1]; n = len(os.listdir(d)); open(f'{d}/{n}', 'w'); "
    make_job(batch, ns, "flaky", python(count + "sys.exit(7 if n < 2 else 1)", str(tmp_path)),
             backoffLimit=0, podFailurePolicy=policy)  # fmt: skip
    job = finished_job(batch, ns, "flaky")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "BackoffLimitExceeded"
    assert len(pods_of(core, ns, "flaky")) == 3 and job.status.failed == 1


def test_active_deadline_kills_the_process(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "slow", python("import time; time.sleep(120)"), activeDeadlineSeconds=1)
    job = finished_job(batch, ns, "slow")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "DeadlineExceeded"
    wait_for(lambda: not pods_of(core, ns, "slow"))  # the pod (and its process) went away


def test_suspended_job_starts_when_unsuspended(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "queued", python("pass"), suspend=True)
    wait_for(lambda: condition(batch.read_namespaced_job("queued", ns), "Suspended"))
    assert pods_of(core, ns, "queued") == []
    batch.patch_namespaced_job("queued", ns, {"spec": {"suspend": False}})
    job = finished_job(batch, ns, "queued")
    assert condition(job, "Complete") and not condition(job, "Suspended")
