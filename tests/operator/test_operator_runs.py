"""Tests of run semantics with the real operator against the dev cluster, without workers.

Run semantics with the real operator (a subprocess, real kopf over real HTTP) against
the dev cluster; the test plays the Job controller and kubelet (pods are made from the
Job's template, finalizers included, as Kubernetes' Job controller makes them).

Covers: which edits start a run, rerun with runId (the README's kubectl command), results
that survive a lost Job, the result finalizer, suspend and resume, Kueue labels, the
priority-ordered queue, and `kubectl wait --for=condition=Complete|Failed|Suspended`.
Real workers against moto: test_real_worker.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from operator_harness import (
    JOBS,
    PJ,
    PODS,
    REPO,
    JobController,
    Kube,
    OperatorProcess,
    prunejob,
    wait_for,
)
from operator_samples import report

from devcluster.cluster import LocalCluster
from prunejob_contract.termination import failure_message, success_message
from tests.kubectl_tool import KUBECTL

pytestmark = pytest.mark.timeout(180)
README = REPO / "README.md"
PRIORITY_CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"
BACKGROUND = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
REPORT = report([("c1", 16, 8)])
SUCCESS = success_message(REPORT, output={"uri": "s3://models/x.keras"})


@pytest.fixture
def controller(kube: Kube) -> JobController:
    return JobController(kube)


def jobs_of(kube: Kube, name: str) -> list[dict]:
    return kube.items(JOBS, selector=f"prunejob.io/name={name}")


def pods_of(kube: Kube, name: str) -> list[dict]:
    return kube.items(PODS, selector=f"prunejob.io/name={name}")


def job_names(kube: Kube, name: str) -> list[str]:
    return sorted(job["metadata"]["name"] for job in jobs_of(kube, name))


def the_job(kube: Kube, job_name: str) -> dict:
    def found() -> dict | None:
        named = [job for job in kube.items(JOBS) if job["metadata"]["name"] == job_name]
        return named[0] if named else None

    return wait_for(found, what=f"Job {job_name}")


def created_job(kube: Kube, name: str) -> dict:
    """Create the PruneJob `name`; its first Job once the operator made it."""
    kube.create(PJ, prunejob(name))
    return the_job(kube, f"{name}-g1")


def running_job(kube: Kube, controller: JobController, name: str) -> dict:
    """Create the PruneJob `name` and run its first Job; the Job once the status reads Running."""
    job = created_job(kube, name)
    controller.run(job)
    status_is(kube, name, "Running")
    return job


def status_is(kube: Kube, name: str, phase: str, reason: str | None = None, **fields: Any) -> dict:
    def check() -> dict | None:
        status = kube.status(name)
        if status.get("phase") != phase or (reason is not None and status.get("reason") != reason):
            return None
        return status if all(status.get(k) == v for k, v in fields.items()) else None

    return wait_for(check, what=f"{name} {phase}/{reason} {fields}")


def settled(seconds: float = 2.0) -> None:
    """Give the operator time to do what it must not do (create a Job), before checking."""
    time.sleep(seconds)


def succeeded(kube: Kube, controller: JobController, name: str) -> dict:
    job = the_job(kube, f"{name}-g1")
    controller.succeed(job, SUCCESS)
    return status_is(kube, name, "Succeeded")


# -- which edits start a run -----------------------------------------------------------


def test_an_operational_edit_of_a_succeeded_prunejob_keeps_it_and_starts_nothing(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    # issue 9: a GitOps commit of only ttlSecondsAfterFinished reran the GPU work.
    kube.create(PJ, prunejob("gitops"))
    done = succeeded(kube, controller, "gitops")
    kube.patch(PJ, "gitops", {"spec": {"ttlSecondsAfterFinished": 60, "backoffLimit": 4}})
    status = status_is(kube, "gitops", "Succeeded", observedGeneration=2)
    settled()
    assert job_names(kube, "gitops") == ["gitops-g1"]
    assert status["filters"] == done["filters"] and status["layers"] == done["layers"]
    assert status["run"] == done["run"]
    assert {c["observedGeneration"] for c in status["conditions"]} == {2}


def test_an_operational_edit_of_a_running_prunejob_does_not_restart_it(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    job = running_job(kube, controller, "steady")
    kube.patch(PJ, "steady", {"spec": {"activeDeadlineSeconds": 7200, "gpus": 2}})
    status_is(kube, "steady", "Running", observedGeneration=2)
    settled()
    assert job_names(kube, "steady") == ["steady-g1"]
    assert kube.get(JOBS, "steady-g1")["spec"].get("activeDeadlineSeconds") is None
    controller.succeed(job, SUCCESS)
    assert status_is(kube, "steady", "Succeeded")["jobName"] == "steady-g1"


def test_a_result_defining_edit_starts_exactly_one_new_run(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    kube.create(PJ, prunejob("edited"))
    first = succeeded(kube, controller, "edited")
    kube.patch(PJ, "edited", {"spec": {"pruning": {"threshold": 0.4}}})
    job = the_job(kube, "edited-g2")
    status = status_is(kube, "edited", "Pending", observedGeneration=2)
    assert status["run"]["jobName"] == "edited-g2" and status["run"]["key"] != first["run"]["key"]
    assert status.get("filters") is None  # the old run's result is not this run's
    assert job["metadata"]["labels"]["prunejob.io/run-key"] == status["run"]["key"]
    settled()
    assert job_names(kube, "edited") == ["edited-g1", "edited-g2"]


def test_rerun_with_the_readmes_kubectl_command(
    cluster: LocalCluster, kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    (command,) = re.findall(r"^\s*(kubectl patch pj NAME .*runId.*)$", README.read_text(), re.M)
    kube.create(PJ, prunejob("again"))
    first = succeeded(kube, controller, "again")
    shell = command.replace("kubectl", f"kubectl --kubeconfig {cluster.kubeconfig_path} -n ml", 1)
    subprocess.run(shell.replace("NAME", "again"), shell=True, check=True, capture_output=True)
    job = the_job(kube, "again-g2")
    status = status_is(kube, "again", "Pending", observedGeneration=2)
    assert status["run"]["key"] != first["run"]["key"]
    assert "--owner" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    controller.succeed(job, SUCCESS)
    assert status_is(kube, "again", "Succeeded")["jobName"] == "again-g2"


# -- results that survive a lost Job ---------------------------------------------------


def lose_the_job(kube: Kube, operator: OperatorProcess, job: dict, end: Callable[[], None]) -> None:
    """With the operator down, `end()` the Job's run, then delete the Job (as its TTL
    does) and wait until it is gone."""
    operator.kill()
    end()
    name = job["metadata"]["name"]
    kube.request("DELETE", f"{JOBS.format(ns='ml')}/{name}", BACKGROUND)
    owner = job["metadata"]["labels"]["prunejob.io/name"]
    wait_for(lambda: not jobs_of(kube, owner), what="the Job deleted")


def test_a_job_lost_while_the_operator_was_down_keeps_its_result(
    kube: Kube, controller: JobController, operator_factory
) -> None:
    # issue 9: a Job that finished while the operator was down and was then deleted (as
    # ttlSecondsAfterFinished does) made the restarted operator create a fresh Job.
    operator = operator_factory().start()
    job = running_job(kube, controller, "lost")
    lose_the_job(kube, operator, job, lambda: controller.succeed(job, SUCCESS))
    # The result finalizer holds the pods (and their termination messages).
    held = wait_for(
        lambda: [p for p in pods_of(kube, "lost") if p["metadata"].get("deletionTimestamp")],
        what="pods terminating",
    )
    assert all("prunejob.io/result" in p["metadata"]["finalizers"] for p in held)

    operator.start()
    status = status_is(kube, "lost", "Succeeded")
    assert status["filtersSummary"] == "120 -> 80"
    wait_for(lambda: not pods_of(kube, "lost"), what="the pods released and gone")
    settled()
    assert jobs_of(kube, "lost") == []  # no new Job: a recorded run is never repeated
    assert kube.status("lost")["phase"] == "Succeeded"


def test_a_failed_result_of_a_lost_job_is_kept_too(
    kube: Kube, controller: JobController, operator_factory
) -> None:
    operator = operator_factory().start()
    job = created_job(kube, "broken")
    status_is(kube, "broken", "Pending", "Starting")
    failed = failure_message("ModelNotFound", "s3://models/in.keras is gone")
    lose_the_job(kube, operator, job, lambda: controller.fail(job, failed, 3))
    operator.start()
    status = status_is(kube, "broken", "Failed", "ModelNotFound")
    assert "is gone" in status["message"]
    wait_for(lambda: not pods_of(kube, "broken"), what="the pods released and gone")
    assert jobs_of(kube, "broken") == []


def test_pods_of_a_deleted_prunejob_do_not_stay_terminating(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    job = created_job(kube, "gone")
    controller.run(job)
    wait_for(lambda: pods_of(kube, "gone"), what="the pod")
    assert pods_of(kube, "gone")[0]["metadata"]["finalizers"] == ["prunejob.io/result"]
    kube.delete(PJ, "gone")
    wait_for(lambda: not jobs_of(kube, "gone"), what="Jobs garbage-collected")
    wait_for(lambda: not pods_of(kube, "gone"), what="pods released and gone")


# -- suspend and Kueue -----------------------------------------------------------------


def test_suspend_then_resume(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    job = running_job(kube, controller, "paused")
    kube.patch(PJ, "paused", {"spec": {"suspend": True}})
    wait_for(lambda: kube.get(JOBS, "paused-g1")["spec"]["suspend"], what="the Job suspended")
    status = status_is(kube, "paused", "Suspended", "Suspended")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Suspended"] == "True" and conditions["Reconciling"] == "False"
    # The Job controller deletes the active pod; it holds no result, the operator lets go.
    (pod,) = pods_of(kube, "paused")
    kube.delete(PODS, pod["metadata"]["name"])
    wait_for(lambda: not pods_of(kube, "paused"), what="the stopped pod released and gone")

    kube.patch(PJ, "paused", {"spec": {"suspend": False}})
    wait_for(lambda: not kube.get(JOBS, "paused-g1")["spec"]["suspend"], what="resumed")
    assert job_names(kube, "paused") == ["paused-g1"]  # the same run, the same Job
    controller.succeed(job, SUCCESS)
    status = status_is(kube, "paused", "Succeeded")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "False"


def test_created_suspended_no_job_until_resumed(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    kube.create(PJ, prunejob("held", suspend=True))
    status_is(kube, "held", "Suspended", "Suspended")
    settled()
    assert jobs_of(kube, "held") == []
    kube.patch(PJ, "held", {"spec": {"suspend": False}})
    job = the_job(kube, "held-g2")
    assert job["spec"]["suspend"] is False
    status_is(kube, "held", "Pending", observedGeneration=2)


def test_kueue_labels_are_copied_and_suspend_hands_the_job_back(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    body = prunejob("queued")
    body["metadata"]["labels"] = {
        "kueue.x-k8s.io/queue-name": "team-a",
        "kueue.x-k8s.io/priority-class": "urgent",
        "team": "vision",
    }
    kube.create(PJ, body)
    job = the_job(kube, "queued-g1")
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["kueue.x-k8s.io/priority-class"] == "urgent"
    assert "team" not in labels and job["spec"]["suspend"] is True
    assert "Kueue" in status_is(kube, "queued", "Pending", "Queued")["message"]
    kube.patch(JOBS, "queued-g1", {"spec": {"suspend": False}})  # Kueue admits it
    controller.run(kube.get(JOBS, "queued-g1"))
    status_is(kube, "queued", "Running")
    # Suspending: Kueue would unsuspend an admitted Job, so the operator deletes it ...
    kube.patch(PJ, "queued", {"spec": {"suspend": True}})
    status_is(kube, "queued", "Suspended")
    wait_for(lambda: not jobs_of(kube, "queued"), what="the Kueue Job deleted")
    wait_for(lambda: not pods_of(kube, "queued"), what="its pod released and gone")
    # ... and resuming creates it again, suspended, for Kueue to admit.
    kube.patch(PJ, "queued", {"spec": {"suspend": False}})
    again = the_job(kube, "queued-g3")
    assert again["spec"]["suspend"] is True
    assert again["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    status_is(kube, "queued", "Pending", "Queued")


def test_the_kueue_example_gets_a_suspended_job_with_its_labels(
    kube: Kube, controller: JobController, operator: OperatorProcess
) -> None:
    example = yaml.safe_load((REPO / "deploy" / "examples" / "prunejob-kueue.yaml").read_text())
    name = example["metadata"]["name"]
    kube.create(PJ, example)
    job = the_job(kube, f"{name}-g1")
    kueue = example["metadata"]["labels"]
    assert kueue and {k: job["metadata"]["labels"].get(k) for k in kueue} == kueue
    assert job["spec"]["suspend"] is True  # for Kueue to admit
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == example["spec"]["resources"]["requests"]
    assert "Kueue" in status_is(kube, name, "Pending", "Queued")["message"]


# -- the priority queue ----------------------------------------------------------------


def test_the_cap_starts_higher_priorities_first_then_first_come(
    kube: Kube, controller: JobController, operator_factory
) -> None:
    for name, value, default in (("urgent", 1000, False), ("batch", 10, True)):
        kube.request(
            "POST",
            PRIORITY_CLASSES,
            {"metadata": {"name": name}, "value": value, "globalDefault": default},
        )
    operator_factory("--max-running-jobs", "1").start()
    kube.create(PJ, prunejob("first"))  # takes the free slot
    first = the_job(kube, "first-g1")
    assert first["spec"]["suspend"] is False
    for name, spec in (
        ("low-early", {"priorityClassName": "batch"}),
        ("default-next", {}),  # the globalDefault: batch
        ("urgent-late", {"priorityClassName": "urgent"}),
    ):
        kube.create(PJ, prunejob(name, **spec))
        status_is(kube, name, "Pending", "Queued")
        time.sleep(1.1)  # creationTimestamps have one-second resolution
    order = []
    running = first
    for _ in range(4):
        order.append(running["metadata"]["labels"]["prunejob.io/name"])
        controller.succeed(running, SUCCESS)
        status_is(kube, order[-1], "Succeeded")
        if len(order) == 4:
            break
        running = wait_for(
            lambda: next(
                (
                    job
                    for job in kube.items(JOBS)
                    if not job["spec"]["suspend"]
                    and job["metadata"]["labels"]["prunejob.io/name"] not in order
                ),
                None,
            ),
            what="the next Job started",
        )
    assert order == ["first", "urgent-late", "low-early", "default-next"]


# -- kubectl wait ----------------------------------------------------------------------


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
@pytest.mark.parametrize("outcome", ["Complete", "Failed", "Suspended"])
def test_kubectl_wait_for_the_job_style_conditions(
    cluster: LocalCluster,
    kube: Kube,
    controller: JobController,
    operator: OperatorProcess,
    outcome: str,
) -> None:
    name = f"wait-{outcome.lower()}"
    job = created_job(kube, name)
    kubectl = ["kubectl", "--kubeconfig", str(cluster.kubeconfig_path), "-n", "ml"]
    waiter = subprocess.Popen(
        [*kubectl, "wait", f"--for=condition={outcome}", f"pj/{name}", "--timeout=90s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    assert waiter.poll() is None  # still waiting: the condition is not True yet
    if outcome == "Complete":
        controller.succeed(job, SUCCESS)
    elif outcome == "Failed":
        controller.fail(job, failure_message("DecryptionFailed", "wrong key"), 6)
    else:
        kube.patch(PJ, name, {"spec": {"suspend": True}})
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.strip() == f"prunejob.prunejob.io/{name} condition met"
