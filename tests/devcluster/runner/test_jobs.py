"""The Job controller: pods per Job, backoffLimit, podFailurePolicy, deadlines, suspend."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from devcluster.runner.jobs import CreatePod, DeletePod, Emit, plan_job, pod_for_job
from tests.devcluster.runner.jobs import condition, finished_job, make_job, pods_of, python
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


# -- plan_job, the pure decision ---------------------------------------------------------

NOW = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def a_job(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict:
    meta = {"name": "j", "namespace": "ns", "uid": "u-1", "resourceVersion": "5"}
    return {"metadata": meta, "spec": {"backoffLimit": 1, **(spec or {})}, "status": status or {}}


def failed_pod(name: str, code: int) -> dict[str, Any]:
    terminated = {"terminated": {"exitCode": code}}
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "main", "state": terminated}]},
    }


def kinds(conditions: list[dict[str, Any]]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in conditions}


def test_plan_creates_the_first_pod_and_starts_the_clock() -> None:
    plan = plan_job(a_job(), {}, {}, set(), NOW)
    assert plan.actions == [CreatePod()]
    assert plan.status["startTime"] and plan.counts == (0, 0) and not plan.finished
    assert plan.deadline_in is None
    assert plan_job(a_job(), {"j-abcde": "Running"}, {}, set(), NOW).actions == []


def test_plan_suspends_then_resumes() -> None:
    started = a_job({"suspend": True}, {"startTime": "2025-01-01T11:00:00Z"})
    plan = plan_job(started, {"j-abcde": "Running"}, {}, set(), NOW)
    assert plan.actions == [DeletePod("j-abcde"), Emit("Suspended", "Job suspended")]
    assert kinds(plan.status["conditions"]) == {"Suspended": "True"}
    assert "startTime" not in plan.status and plan.status["active"] == 0 and plan.counts is None
    resumed = plan_job(a_job(status=plan.status), {}, {}, set(), NOW)
    assert resumed.actions == [Emit("Resumed", "Job resumed"), CreatePod()]
    assert kinds(resumed.status["conditions"]) == {"Suspended": "False"}


def test_plan_fails_past_the_backoff_limit_and_stops_what_runs() -> None:
    failed = {"j-1": failed_pod("j-1", 3), "j-2": failed_pod("j-2", 3)}
    plan = plan_job(a_job(), {"j-3": "Pending"}, failed, set(), NOW)
    reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    assert plan.actions == [DeletePod("j-3", mark_failed=True), Emit(reason, message, True)]
    assert kinds(plan.status["conditions"]) == {"FailureTarget": "True", "Failed": "True"}
    assert plan.finished and plan.active == [] and plan.counts == (0, 2)


def test_plan_follows_the_pod_failure_policy() -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [5]}},
        ]
    }
    ignored = {f"j-{i}": failed_pod(f"j-{i}", 7) for i in range(3)}
    plan = plan_job(a_job({"podFailurePolicy": policy}), {}, ignored, set(), NOW)
    assert plan.actions == [CreatePod()] and plan.counts == (0, 0)
    fatal = {"j-9": failed_pod("j-9", 5)}
    plan = plan_job(a_job({"podFailurePolicy": policy}), {}, fatal, set(), NOW)
    assert plan.status["conditions"][-1]["reason"] == "PodFailurePolicy"
    assert (
        "exit code 5 matching FailJob rule at index 1" in plan.status["conditions"][-1]["message"]
    )


def test_plan_deadline_arms_then_fails() -> None:
    spec = {"activeDeadlineSeconds": 60}
    running = plan_job(a_job(spec, {"startTime": "2025-01-01T11:59:30Z"}), {"p": "Running"},
                       {}, set(), NOW)  # fmt: skip
    assert running.deadline_in == 30.0 and not running.finished
    late = plan_job(a_job(spec, {"startTime": "2025-01-01T11:00:00Z"}), {"p": "Running"},
                    {}, set(), NOW)  # fmt: skip
    assert late.status["conditions"][-1]["reason"] == "DeadlineExceeded"
    assert late.deadline_in is None and late.actions[0] == DeletePod("p", mark_failed=True)


def test_plan_completes_once_a_pod_succeeded() -> None:
    plan = plan_job(a_job(), {}, {"j-1": failed_pod("j-1", 1)}, {"j-2"}, NOW)
    assert plan.actions == [Emit("Completed", "Job completed")]
    assert kinds(plan.status["conditions"]) == {"SuccessCriteriaMet": "True", "Complete": "True"}
    assert plan.status["completionTime"] and plan.finished and plan.counts == (1, 1)


def test_pod_for_job_carries_the_job_labels_and_owner() -> None:
    job = a_job({"template": {"metadata": {"labels": {"app": "t"}}, "spec": {"containers": []}}})
    pod = pod_for_job(job)
    assert pod["metadata"]["generateName"] == "j-"
    assert pod["metadata"]["labels"] == {
        "app": "t",
        "job-name": "j",
        "batch.kubernetes.io/job-name": "j",
        "controller-uid": "u-1",
        "batch.kubernetes.io/controller-uid": "u-1",
    }
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["controller"] and owner["kind"] == "Job"
