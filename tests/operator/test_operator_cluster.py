"""Tests of the real operator's state machine against the devcluster, without worker pods.

The real operator (subprocess) against the devcluster API server, no worker pods:
the test plays the Job controller/kubelet by writing Pod and Job status.

Covers the controller's state machine: Job per generation, identical re-apply,
delete, restarts at each point, the concurrency cap, Kueue, InvalidSpec, secrets,
metrics and liveness. Worker-driven reasons, with real workers, are in test_real_worker.py.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from operator_harness import (
    EVENTS,
    JOBS,
    PJ,
    PODS,
    REPO,
    SECRETS,
    JobController,
    Kube,
    OperatorProcess,
    prunejob,
    wait_for,
)
from operator_samples import SUCCEEDED_CONDITIONS, report

from devcluster.cluster import LocalCluster
from prunejob_contract.termination import success_message
from prunejob_operator import crd
from tests.kubectl_tool import NO_VALIDATED_APPLY
from tests.s3_server import free_port

pytestmark = pytest.mark.timeout(120)
REPORT = report([("c1", 16, 8), ("c2", 104, 72)])


def jobs_of(kube: Kube, name: str) -> list[dict]:
    return kube.items(JOBS, selector=f"prunejob.io/name={name}")


def one_job(kube: Kube, name: str, generation: int = 1) -> dict:
    def found() -> dict | None:
        jobs = [
            job
            for job in jobs_of(kube, name)
            if job["metadata"]["labels"]["prunejob.io/generation"] == str(generation)
        ]
        return jobs[0] if jobs else None

    return wait_for(found, what=f"the Job of {name} generation {generation}")


def status_is(kube: Kube, name: str, phase: str, reason: str | None = None) -> dict:
    def check() -> dict | None:
        status = kube.status(name)
        if status.get("phase") == phase and (reason is None or status.get("reason") == reason):
            return status
        return None

    return wait_for(check, what=f"{name} {phase}/{reason}")


def test_job_for_the_prunejob_and_status_through_success(kube: Kube, operator) -> None:
    created = kube.create(PJ, prunejob("resnet", keySecretRef={"name": "model-key"}))
    job = one_job(kube, "resnet")
    assert job["metadata"]["name"] == "resnet-g1"
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"] and owner["controller"] is True
    assert job["spec"]["suspend"] is False
    status = status_is(kube, "resnet", "Pending", "Starting")
    assert status["observedGeneration"] == 1 and status["jobName"] == "resnet-g1"

    controller = JobController(kube)
    controller.run(job)
    status_is(kube, "resnet", "Running")
    controller.succeed(job, success_message(REPORT, output={"uri": "s3://models/resnet.keras"}))
    status = status_is(kube, "resnet", "Succeeded")
    assert status["filters"] == {"before": 120, "after": 80}
    assert status["filtersSummary"] == "120 -> 80"
    assert status["layers"] == REPORT["layers"]
    assert status["pruningRatio"] == 0.6
    assert status["output"] == {"uri": "s3://models/resnet.keras"}
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == SUCCEEDED_CONDITIONS
    assert status["run"] == {
        "key": job["metadata"]["labels"]["prunejob.io/run-key"],
        "jobName": "resnet-g1",
        "generation": 1,
    }
    # This test's Job controller made two pods (one ran, one succeeded), neither failed.
    assert status["attempts"] == len(kube.items(PODS, selector="job-name=resnet-g1")) == 2
    assert status["failedAttempts"] == 0
    reasons = {e["reason"] for e in kube.items(EVENTS) if e["involvedObject"]["name"] == "resnet"}
    assert {"JobCreated", "Running", "Succeeded"} <= reasons


def test_identical_reapply_does_nothing_and_a_spec_change_makes_a_new_job(
    kube: Kube, operator
) -> None:
    kube.create(PJ, prunejob("mobilenet"))
    first = one_job(kube, "mobilenet")
    settled = status_is(kube, "mobilenet", "Pending", "Starting")
    before = kube.prunejob("mobilenet")

    kube.patch(PJ, "mobilenet", {"spec": prunejob("mobilenet")["spec"]})
    after = kube.prunejob("mobilenet")
    assert after["metadata"]["generation"] == 1
    assert after["status"] == settled
    assert [j["metadata"]["name"] for j in jobs_of(kube, "mobilenet")] == ["mobilenet-g1"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    JobController(kube).run(first)
    status_is(kube, "mobilenet", "Running")
    kube.patch(PJ, "mobilenet", {"spec": {"pruning": {"threshold": 0.3}}})
    second = one_job(kube, "mobilenet", generation=2)
    assert "0.3" in second["spec"]["template"]["spec"]["containers"][0]["args"]
    status = status_is(kube, "mobilenet", "Pending", "Starting")
    assert status["observedGeneration"] == 2 and status["jobName"] == "mobilenet-g2"
    # The old run was stopped (its Job deleted, its pod with it) before the new one began.
    assert [j["metadata"]["name"] for j in jobs_of(kube, "mobilenet")] == ["mobilenet-g2"]


def test_delete_removes_jobs_and_pods(kube: Kube, operator) -> None:
    kube.create(PJ, prunejob("gone"))
    job = one_job(kube, "gone")
    JobController(kube).run(job)
    wait_for(lambda: kube.items(PODS, selector="prunejob.io/name=gone"))
    kube.delete(PJ, "gone")
    wait_for(lambda: not jobs_of(kube, "gone"), what="Jobs garbage-collected")
    wait_for(lambda: not kube.items(PODS, selector="prunejob.io/name=gone"), what="Pods gone")


def test_restart_before_job_creation(kube: Kube, operator_factory) -> None:
    kube.create(PJ, prunejob("early"))
    operator = operator_factory().start()
    one_job(kube, "early")
    operator.stop()
    operator.start()
    status_is(kube, "early", "Pending", "Starting")
    assert len(jobs_of(kube, "early")) == 1


def test_restart_while_running_and_after_success_before_the_status_patch(
    kube: Kube, operator_factory
) -> None:
    operator = operator_factory().start()
    kube.create(PJ, prunejob("steady"))
    job = one_job(kube, "steady")
    controller = JobController(kube)
    controller.run(job)
    status_is(kube, "steady", "Running")

    operator.kill()  # a crash while the Job runs
    operator.start()
    status_is(kube, "steady", "Running")
    assert len(jobs_of(kube, "steady")) == 1

    operator.kill()  # the Job finishes while no operator is there to see it
    controller.succeed(job, success_message(REPORT))
    assert kube.status("steady")["phase"] == "Running"
    operator.start()
    status = status_is(kube, "steady", "Succeeded")
    assert status["filtersSummary"] == "120 -> 80"
    assert len(jobs_of(kube, "steady")) == 1


def test_concurrency_cap_with_20_prunejobs(kube: Kube, operator_factory) -> None:
    operator_factory("--max-running-jobs", "3").start()
    names = [f"batch-{i:02d}" for i in range(20)]
    for name in names:
        kube.create(PJ, prunejob(name))

    def all_jobs() -> list[dict] | None:
        jobs = kube.items(JOBS)
        return jobs if len(jobs) == 20 else None

    started_order: list[str] = []
    controller = JobController(kube)
    wait_for(all_jobs, what="20 Jobs")

    def queued_statuses() -> bool:
        reasons = [kube.status(name).get("reason") for name in names]
        return reasons.count("Queued") == 17

    wait_for(queued_statuses, what="17 PruneJobs Pending/Queued")
    while len(started_order) < 20:
        running = wait_for(
            lambda: [
                job
                for job in kube.items(JOBS)
                if not job["spec"]["suspend"] and job["metadata"]["name"] not in started_order
            ],
            what="a started Job",
        )
        active = [
            job
            for job in kube.items(JOBS)
            if not job["spec"]["suspend"] and not job.get("status", {}).get("conditions")
        ]
        assert len(active) <= 3, [job["metadata"]["name"] for job in active]
        for job in sorted(running, key=lambda item: item["metadata"]["name"]):
            started_order.append(job["metadata"]["name"])
            controller.succeed(job, success_message(REPORT))
    assert started_order == [f"{name}-g1" for name in names]
    for name in names:
        status_is(kube, name, "Succeeded")


def test_kueue_mode_leaves_admission_to_kueue(kube: Kube, operator_factory) -> None:
    operator_factory("--max-running-jobs", "1").start()
    kube.create(PJ, prunejob("queued", queueName="gpu-queue"))
    job = one_job(kube, "queued")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    status = status_is(kube, "queued", "Pending", "Queued")
    assert "Kueue" in status["message"]
    kube.create(PJ, prunejob("plain"))  # the operator's own cap ignores Kueue's Jobs
    assert one_job(kube, "plain")["spec"]["suspend"] is False
    assert kube.get(JOBS, "queued-g1")["spec"]["suspend"] is True

    kube.patch(JOBS, "queued-g1", {"spec": {"suspend": False}})  # what Kueue does on admission
    JobController(kube).run(kube.get(JOBS, "queued-g1"))
    status_is(kube, "queued", "Running")


def test_invalid_spec_behind_a_stale_crd_is_reported_not_crashed(
    tmp_path: Path, operator_factory
) -> None:
    # An old, permissive CRD lets a spec through that today's operator rejects.
    permissive = crd.build_crd()
    schema = permissive["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    schema["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    crd_dir = tmp_path / "crds"
    crd_dir.mkdir()
    (crd_dir / "prunejob.yaml").write_text(yaml.safe_dump(permissive))
    with LocalCluster(crd_paths=[crd_dir], run_pods=False) as cluster:
        kube = Kube(cluster.url)
        kube.namespace("ml")
        operator = OperatorProcess(cluster.kubeconfig_path, tmp_path / "op.log").start()
        try:
            kube.create(PJ, prunejob("bad", gpus=-1, pruning={"normalizer": "L7"}))
            status = status_is(kube, "bad", "Failed", "InvalidSpec")
            assert (
                "spec.gpus" in status["message"] and "spec.pruning.normalizer" in status["message"]
            )
            stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
            assert stalled["status"] == "True"
            assert not jobs_of(kube, "bad")
            kube.patch(PJ, "bad", {"spec": {"gpus": 1, "pruning": {"normalizer": "L2"}}})
            one_job(kube, "bad", generation=2)
            assert operator.process is not None and operator.process.poll() is None
        finally:
            operator.stop()


def test_secret_values_never_appear(kube: Kube, operator) -> None:
    secret_values = ["correct-horse-battery-staple", "AKIASECRETSECRET", "s3cr3t/KEY+value"]
    kube.create(
        SECRETS, {"metadata": {"name": "model-key"}, "stringData": {"key": secret_values[0]}}
    )
    kube.create(
        SECRETS,
        {
            "metadata": {"name": "s3-creds"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": secret_values[1],
                "AWS_SECRET_ACCESS_KEY": secret_values[2],
            },
        },
    )
    kube.create(
        PJ,
        prunejob(
            "secretive",
            keySecretRef={"name": "model-key"},
            s3={"credentialsSecretRef": {"name": "s3-creds"}},
        ),
    )
    job = one_job(kube, "secretive")
    JobController(kube).succeed(job, success_message(REPORT))
    status_is(kube, "secretive", "Succeeded")
    dumped = (
        "\n".join(str(kube.items(collection)) for collection in (PJ, JOBS, PODS, EVENTS))
        + operator.log()
    )
    for value in secret_values:
        assert value not in dumped
    assert "model-key" in dumped  # the references are there, just not the values


def test_metrics_and_liveness(kube: Kube, operator_factory) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    operator_factory(
        "--metrics-port", str(metrics_port), "--liveness", f"127.0.0.1:{liveness_port}"
    ).start()
    kube.create(PJ, prunejob("measured"))
    JobController(kube).succeed(one_job(kube, "measured"), success_message(REPORT))
    status_is(kube, "measured", "Succeeded")

    def scrape() -> str | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        done = 'prunejob_prunejobs{phase="Succeeded"} 1.0' in text
        return text if done and "prunejob_filters_removed_total 40.0" in text else None

    text = wait_for(scrape, what="metrics of the succeeded run")
    assert "prunejob_run_duration_seconds_count" in text
    assert "prunejob_jobs_created_total 1.0" in text
    health = urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz")
    assert health.status == 200


@pytest.mark.skipif(NO_VALIDATED_APPLY is not None, reason=str(NO_VALIDATED_APPLY))
def test_kubectl_apply_example_and_get_pj(cluster: LocalCluster, kube: Kube, operator) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(cluster.kubeconfig_path), "-n", "ml"]
    examples = REPO / "deploy" / "examples"
    for name in ("secrets.yaml", "prunejob.yaml"):
        subprocess.run(
            [*kubectl, "apply", "-f", str(examples / name)],
            check=True,
            capture_output=True,
            text=True,
        )
    name = yaml.safe_load((examples / "prunejob.yaml").read_text())["metadata"]["name"]
    JobController(kube).succeed(one_job(kube, name), success_message(REPORT))
    status_is(kube, name, "Succeeded")
    table = subprocess.run([*kubectl, "get", "pj"], check=True, capture_output=True, text=True)
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "RATIO", "FILTERS", "AGE"]
    assert row.split()[:5] == [name, "Succeeded", "0.6", "120", "->"]
