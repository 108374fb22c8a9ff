"""The Job controller: pods per Job, backoffLimit, podFailurePolicy, deadlines, suspend."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from devcluster.runner.jobs import (
    BACKOFF_LIMIT_EXCEEDED,
    DEADLINE_EXCEEDED,
    TRACKING_FINALIZER,
    CreatePod,
    DeletePod,
    Emit,
    finish,
    plan_job,
    pod_for_job,
)
from tests.devcluster.runner.jobs import JobSpace, condition, python
from tests.polling import wait_for


def test_job_success_reports_pod_and_job_status(space: JobSpace) -> None:
    created = space.make_job("ok", python("print('hello from the pod')"))
    job = space.finished_job("ok")
    assert condition(job, "Complete") and job.status.succeeded == 1
    assert job.status.start_time and job.status.completion_time
    (pod,) = space.pods_of("ok")
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
    assert "hello from the pod" in space.core.read_namespaced_pod_log(pod.metadata.name, space.ns)


def test_failures_retry_until_backoff_limit(space: JobSpace) -> None:
    space.make_job("bad", python("import sys; sys.exit(3)"), backoffLimit=1)
    job, _ = space.failed_job("bad", "BackoffLimitExceeded")
    pods = space.pods_of("bad")
    assert len(pods) == 2 and job.status.failed == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed"
        assert terminated.exit_code == 3 and terminated.reason == "Error"


def test_pod_failure_policy_fails_the_job_at_once_or_ignores_the_failure(
    space: JobSpace, tmp_path: Path
) -> None:
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                  "values": [3, 5]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
        ]
    }  # fmt: skip
    space.make_job("fatal", python("import sys; sys.exit(5)"),
                   backoffLimit=3, podFailurePolicy=policy)  # fmt: skip
    job, failed = space.failed_job("fatal", "PodFailurePolicy")
    assert "exit code 5 matching FailJob rule at index 0" in failed.message
    assert len(space.pods_of("fatal")) == 1 and job.status.failed == 1

    # Ignored failures neither count nor stop the retries: exit 7 twice, then 1 (counted).
    count = "import os, sys; d = sys.argv[1]; n = len(os.listdir(d)); open(f'{d}/{n}', 'w'); "
    space.make_job("flaky", python(count + "sys.exit(7 if n < 2 else 1)", str(tmp_path)),
                   backoffLimit=0, podFailurePolicy=policy)  # fmt: skip
    job, failed = space.failed_job("flaky", "BackoffLimitExceeded")
    assert len(space.pods_of("flaky")) == 3 and job.status.failed == 1


def test_active_deadline_kills_the_process(space: JobSpace) -> None:
    space.make_job("slow", python("import time; time.sleep(120)"), activeDeadlineSeconds=1)
    space.failed_job("slow", "DeadlineExceeded")
    wait_for(lambda: not space.pods_of("slow"))  # the pod (and its process) went away


def test_suspended_job_starts_when_unsuspended(space: JobSpace) -> None:
    space.make_job("queued", python("pass"), suspend=True)
    wait_for(lambda: condition(space.batch.read_namespaced_job("queued", space.ns), "Suspended"))
    assert space.pods_of("queued") == []
    space.batch.patch_namespaced_job("queued", space.ns, {"spec": {"suspend": False}})
    job = space.finished_job("queued")
    assert condition(job, "Complete") and not condition(job, "Suspended")


# -- plan_job, the pure decision ---------------------------------------------------------

NOW = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def a_job(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict:
    meta = {"name": "j", "namespace": "ns", "uid": "u-1", "resourceVersion": "5"}
    return {"metadata": meta, "spec": {"backoffLimit": 1, **(spec or {})}, "status": status or {}}


def a_pod(name: str, phase: str = "Running", code: int | None = None, **meta: Any) -> dict:
    status: dict[str, Any] = {"phase": phase}
    if code is not None:
        terminated = {"terminated": {"exitCode": code}}
        status["containerStatuses"] = [{"name": "main", "state": terminated}]
    metadata = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "1",
                "finalizers": [TRACKING_FINALIZER], **meta}  # fmt: skip
    return {"metadata": metadata, "status": status}


def kinds(conditions: list[dict[str, Any]]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in conditions}


def test_plan_creates_the_first_pod_and_starts_the_clock() -> None:
    plan = plan_job(a_job(), [], NOW)
    assert plan.actions == [CreatePod()]
    assert plan.status["startTime"] and plan.deadline_in is None and plan.ending is None
    assert plan_job(a_job(), [a_pod("j-abcde")], NOW).actions == []


def test_plan_counts_through_uncounted_pods_then_removes_the_finalizer() -> None:
    plan = plan_job(a_job(), [a_pod("j-1", "Failed", 3)], NOW)
    assert plan.actions == [CreatePod()]  # 1 failure is within backoffLimit 1
    assert plan.status["uncountedTerminatedPods"] == {"succeeded": [], "failed": ["uid-j-1"]}
    assert plan.untrack == ["j-1"] and "failed" not in plan.status
    after, event = finish(plan, plan.status, {"uid-j-1"})
    assert after["failed"] == 1 and "uncountedTerminatedPods" not in after and event is None
    # A removal that failed leaves the pod uncounted; the next round counts it once.
    kept, _ = finish(plan, plan.status, set())
    assert kept["uncountedTerminatedPods"]["failed"] == ["uid-j-1"] and "failed" not in kept
    again = plan_job(a_job(status=kept), [a_pod("j-1", "Failed", 3)], NOW)
    assert again.status["uncountedTerminatedPods"]["failed"] == ["uid-j-1"]
    assert again.untrack == ["j-1"]


def test_plan_suspends_without_counting_then_resumes() -> None:
    started = a_job({"suspend": True}, {"startTime": "2025-01-01T11:00:00Z", "active": 1})
    plan = plan_job(started, [a_pod("j-abcde")], NOW)
    assert plan.actions == [DeletePod("j-abcde", strip_tracking=True),
                            Emit("Suspended", "Job suspended")]  # fmt: skip
    assert kinds(plan.status["conditions"]) == {"Suspended": "True"}
    assert "active" not in plan.status and plan.status["terminating"] == 1
    assert plan.untrack == [] and "uncountedTerminatedPods" not in plan.status
    # The deleted pod lost its tracking finalizer first: it is not a failure.
    gone = a_pod("j-abcde", deletionTimestamp="2025-01-01T12:00:00Z", finalizers=[])
    resumed = plan_job(a_job(status=plan.status), [gone], NOW)
    assert resumed.actions == [Emit("Resumed", "Job resumed"), CreatePod()]
    assert kinds(resumed.status["conditions"]) == {"Suspended": "False"}
    assert "failed" not in resumed.status and resumed.status["startTime"] != "2025-01-01T11:00:00Z"


def test_a_deleted_pod_counts_as_failed() -> None:
    deleted = a_pod("j-1", "Running", deletionTimestamp="2025-01-01T12:00:00Z")
    plan = plan_job(a_job({"backoffLimit": 0}), [deleted], NOW)
    assert plan.status["uncountedTerminatedPods"]["failed"] == ["uid-j-1"]
    assert plan.ending == ("Failed", *BACKOFF_LIMIT_EXCEEDED)
    # ...unless a podFailurePolicy asks to wait for the Failed phase.
    policy = {"rules": []}
    waiting = plan_job(a_job({"backoffLimit": 0, "podFailurePolicy": policy}), [deleted], NOW)
    assert waiting.ending is None and "uncountedTerminatedPods" not in waiting.status


def test_plan_fails_past_the_backoff_limit_and_stops_what_runs() -> None:
    pods = [a_pod("j-1", "Failed", 3), a_pod("j-2", "Failed", 3), a_pod("j-3", "Pending")]
    plan = plan_job(a_job(), pods, NOW)
    assert plan.actions == [DeletePod("j-3")]  # its tracking finalizer stays: it counts
    assert plan.ending == ("Failed", *BACKOFF_LIMIT_EXCEEDED)
    assert kinds(plan.status["conditions"]) == {"FailureTarget": "True"}
    assert plan.status["terminating"] == 1
    # Failed only once the pods are counted and none is terminating.
    after, event = finish(plan, plan.status, {"uid-j-1", "uid-j-2", "uid-j-3"})
    assert event is None and "Failed" not in kinds(after["conditions"])
    done = {**after, "terminating": 0}
    final, event = finish(plan_job(a_job(status=done), [], NOW), done, set())
    assert kinds(final["conditions"]) == {"FailureTarget": "True", "Failed": "True"}
    assert event == Emit(*BACKOFF_LIMIT_EXCEEDED, warning=True) and final["failed"] == 3


def test_plan_follows_the_pod_failure_policy() -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [5]}},
        ]
    }
    ignored = [a_pod(f"j-{i}", "Failed", 7) for i in range(3)]
    plan = plan_job(a_job({"podFailurePolicy": policy}), ignored, NOW)
    assert plan.actions == [CreatePod()] and "uncountedTerminatedPods" not in plan.status
    assert sorted(plan.untrack) == ["j-0", "j-1", "j-2"]  # let go of, not counted
    plan = plan_job(a_job({"podFailurePolicy": policy}), [a_pod("j-9", "Failed", 5)], NOW)
    assert plan.ending is not None and plan.ending[1] == "PodFailurePolicy"
    assert "exit code 5 matching FailJob rule at index 1" in plan.ending[2]


def test_plan_deadline_arms_then_fails() -> None:
    spec = {"activeDeadlineSeconds": 60}
    running = plan_job(a_job(spec, {"startTime": "2025-01-01T11:59:30Z"}), [a_pod("p")], NOW)
    assert running.deadline_in == 30.0 and running.ending is None
    late = plan_job(a_job(spec, {"startTime": "2025-01-01T11:00:00Z"}), [a_pod("p")], NOW)
    assert late.ending == ("Failed", *DEADLINE_EXCEEDED)
    assert late.deadline_in is None and late.actions == [DeletePod("p")]


def test_plan_completes_once_a_pod_succeeded() -> None:
    pods = [a_pod("j-1", "Failed", 1), a_pod("j-2", "Succeeded", 0)]
    plan = plan_job(a_job(), pods, NOW)
    assert plan.actions == [] and plan.ending is not None and plan.ending[0] == "Complete"
    assert kinds(plan.status["conditions"]) == {"SuccessCriteriaMet": "True"}
    final, event = finish(plan, {**plan.status, "terminating": 0}, {"uid-j-1", "uid-j-2"})
    assert kinds(final["conditions"]) == {"SuccessCriteriaMet": "True", "Complete": "True"}
    assert final["completionTime"] and event == Emit("Completed", "Job completed")
    assert (final["succeeded"], final["failed"]) == (1, 1)


def test_pod_for_job_carries_the_template_metadata_and_owner() -> None:
    template = {
        "metadata": {"labels": {"app": "t"}, "annotations": {"a": "b"},
                     "finalizers": ["example.com/result"]},
        "spec": {"containers": []},
    }  # fmt: skip
    pod = pod_for_job(a_job({"template": template}))
    assert pod["metadata"]["generateName"] == "j-"
    assert pod["metadata"]["labels"] == {
        "app": "t",
        "job-name": "j",
        "batch.kubernetes.io/job-name": "j",
        "controller-uid": "u-1",
        "batch.kubernetes.io/controller-uid": "u-1",
    }
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["metadata"]["finalizers"] == ["example.com/result", TRACKING_FINALIZER]
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["controller"] and owner["kind"] == "Job"
    assert owner["blockOwnerDeletion"]
