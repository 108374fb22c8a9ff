"""Tests of the Reconciler's run semantics, with fakes.

The Reconciler's run semantics, with fakes (`reconciler_fakes`): which edits start
a run, reruns, results read from pods whose Job is gone, the result finalizer,
superseded runs, suspend, Kueue, and the priority queue."""

from __future__ import annotations

import asyncio
from typing import Any

from async_test import asynchronous
from operator_samples import report
from reconciler_fakes import (
    NS,
    FakeApi,
    Watch,
    job_body,
    key_of,
    make,
    pod_body,
    prunejob_body,
    settle,
)

from prunejob_contract.termination import failure_message, success_message
from prunejob_operator import manifests
from prunejob_operator.kubeapi import ApiError
from prunejob_operator.reconciler import Reconciler
from prunejob_operator.records import summarize_job

REPORT = report([("c1", 16, 8)])
SUCCESS = success_message(REPORT, output={"uri": "s3://models/resnet.keras"})


def succeeded_status(body: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """The status a recorded success of the run of `body` (created at `generation`) has."""
    return {
        "phase": "Succeeded",
        "reason": "Succeeded",
        "observedGeneration": generation,
        "jobName": manifests.job_name(body["metadata"]["name"], generation),
        "run": {
            "key": key_of(body),
            "jobName": manifests.job_name(body["metadata"]["name"], generation),
            "generation": generation,
        },
        "filters": {"before": 120, "after": 80},
        "filtersSummary": "120 -> 80",
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "Succeeded",
                "lastTransitionTime": "2025-01-01T00:00:40Z",
                "observedGeneration": generation,
            }
        ],
    }


def with_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**body, "status": status}


async def reconcile(reconciler: Reconciler, name: str = "resnet") -> None:
    await reconciler.reconcile(NS, name)
    await settle(reconciler)


def status_of(api: FakeApi, name: str = "resnet") -> dict[str, Any]:
    return api.statuses[NS, name]


def watch_job(watch: Watch, api: FakeApi, name: str) -> dict[str, Any]:
    """The watch delivers the Job `name` as the fake API holds it."""
    job = api.jobs[NS, name]
    job["metadata"].setdefault("uid", f"uid-{name}")
    watch.job(job)
    return job


# -- edits of a finished PruneJob ------------------------------------------------------


@asynchronous
async def test_an_operational_edit_of_a_finished_prunejob_keeps_its_result() -> None:
    first = prunejob_body("resnet")
    edited = prunejob_body("resnet", generation=2, ttlSecondsAfterFinished=60, backoffLimit=4)
    assert key_of(edited) == key_of(first)
    reconciler, api, _, _ = make(with_status(edited, succeeded_status(first)))
    await reconcile(reconciler)
    assert api.verbs("create_job") == []  # the Job is gone (TTL) and is not run again
    status = status_of(api)
    assert (status["phase"], status["observedGeneration"]) == ("Succeeded", 2)
    assert status["filtersSummary"] == "120 -> 80" and status["run"]["jobName"] == "resnet-g1"
    (complete,) = status["conditions"]
    assert complete["observedGeneration"] == 2
    assert complete["lastTransitionTime"] == "2025-01-01T00:00:40Z"
    assert api.events == []  # nothing happened to the run


@asynchronous
async def test_a_result_defining_edit_starts_exactly_one_new_run() -> None:
    first = prunejob_body("resnet")
    edited = prunejob_body("resnet", generation=2, pruning={"threshold": 0.3})
    reconciler, api, _, _ = make(
        with_status(edited, succeeded_status(first)), job_body("resnet", 1, complete=True)
    )
    await reconcile(reconciler)
    await reconcile(reconciler)  # the Job's watch event has not arrived yet
    assert api.verbs("create_job") == [("create_job", "resnet-g2")]
    assert api.verbs("delete_job") == []  # the finished Job stays until its TTL
    job = api.jobs[NS, "resnet-g2"]
    assert job["metadata"]["labels"][manifests.LABEL_RUN_KEY] == key_of(edited)
    status = status_of(api)
    assert status["run"] == {"key": key_of(edited), "jobName": "resnet-g2", "generation": 2}
    assert status["filters"] is None and status["phase"] == "Pending"


@asynchronous
async def test_run_id_reruns_a_finished_prunejob() -> None:
    first = prunejob_body("resnet")
    again = prunejob_body("resnet", generation=2, runId="1733000000")
    reconciler, api, _, _ = make(with_status(again, succeeded_status(first)))
    await reconcile(reconciler)
    assert api.verbs("create_job") == [("create_job", "resnet-g2")]


@asynchronous
async def test_reverting_an_edit_starts_a_new_run_instead_of_reviving_the_old_job() -> None:
    # K (g1, finished) -> K2 (g2, finished, same output) -> K again: g1's result no longer
    # describes the output, so K runs again.
    k2 = prunejob_body("resnet", generation=2, pruning={"threshold": 0.3})
    back = prunejob_body("resnet", generation=3)
    reconciler, api, _, _ = make(
        with_status(back, succeeded_status(k2, generation=2)),
        job_body("resnet", 1, complete=True),
        job_body("resnet", 2, complete=True, key=key_of(k2)),
    )
    await reconcile(reconciler)
    assert api.verbs("create_job") == [("create_job", "resnet-g3")]


@asynchronous
async def test_a_status_of_an_operator_before_run_keys_counts_as_recorded() -> None:
    legacy = {"phase": "Succeeded", "reason": "Succeeded", "observedGeneration": 1}
    reconciler, api, _, _ = make(with_status(prunejob_body("resnet"), legacy))
    await reconcile(reconciler)
    assert api.calls == []  # finished: not run again (status.run is added by the next write)


# -- edits of a running PruneJob -------------------------------------------------------


@asynchronous
async def test_an_operational_edit_of_a_running_prunejob_does_not_restart_it() -> None:
    edited = prunejob_body("resnet", generation=2, activeDeadlineSeconds=7200, gpus=2)
    job = job_body("resnet", 1)
    reconciler, api, watch, _ = make(edited, job)
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job))
    await reconcile(reconciler)
    assert api.verbs("create_job") == [] and api.verbs("delete_job") == []
    status = status_of(api)
    assert (status["phase"], status["observedGeneration"]) == ("Running", 2)
    assert status["run"]["jobName"] == "resnet-g1" and status["jobName"] == "resnet-g1"


@asynchronous
async def test_an_operational_edit_before_the_first_status_adopts_the_runs_job() -> None:
    # The operator created resnet-g1 and died before writing the status; then TTL was
    # edited. The Job with the run's key is the run: no resnet-g2.
    reconciler, api, _, _ = make(
        prunejob_body("resnet", generation=2, ttlSecondsAfterFinished=5), job_body("resnet", 1)
    )
    await reconcile(reconciler)
    assert api.verbs("create_job") == []
    assert status_of(api)["run"]["jobName"] == "resnet-g1"


@asynchronous
async def test_a_result_defining_edit_of_a_running_prunejob_replaces_the_run() -> None:
    old = job_body("resnet", 1)
    edited = prunejob_body("resnet", generation=2, pruning={"threshold": 0.5})
    reconciler, api, watch, _ = make(edited, old)
    api.jobs[NS, "resnet-g1"] = old
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", old))
    await reconcile(reconciler)
    # The old run is stopped; the new one waits until its pod has stopped.
    assert api.verbs("delete_job") == [("delete_job", "resnet-g1")]
    assert api.verbs("create_job") == []
    status = status_of(api)
    assert status["phase"] == "Pending" and "resnet-g1-abcde" in status["message"]
    assert status["run"]["jobName"] == "resnet-g2"

    # Deleting the Job deletes its pod: the kubelet stops it (terminal) and the operator
    # drops the finalizer (the old run's result is not wanted) ...
    watch.gone("resnet-g1")
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", old, phase="Failed", deleting=True))
    await reconcile(reconciler)
    assert ("release", "resnet-g1-abcde") in api.calls
    assert api.verbs("create_job") == [("create_job", "resnet-g2")]  # ... and the run starts
    assert api.verbs("delete_job") == [("delete_job", "resnet-g1")]


@asynchronous
async def test_superseded_jobs_are_deleted_unless_finished() -> None:
    k1 = prunejob_body("resnet")
    k2 = prunejob_body("resnet", generation=2, pruning={"threshold": 0.2})
    now = prunejob_body("resnet", generation=4, pruning={"threshold": 0.4})
    reconciler, api, _, _ = make(
        now,
        job_body("resnet", 1, suspend=True, key=key_of(k1)),  # queued, never started
        job_body("resnet", 2, key=key_of(k2)),  # running, no pod seen
        job_body("resnet", 3, complete=True, key=key_of(k2)),  # finished: stays
    )
    await reconcile(reconciler)
    assert sorted(api.verbs("delete_job")) == [
        ("delete_job", "resnet-g1"),
        ("delete_job", "resnet-g2"),
    ]
    assert api.verbs("create_job") == [("create_job", "resnet-g4")]
    await reconcile(reconciler)  # the deletions are asked once until the watch shows them
    assert len(api.verbs("delete_job")) == 2


# -- results that survive Job loss -----------------------------------------------------


def running_status(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": "Running",
        "reason": "Running",
        "observedGeneration": 1,
        "jobName": "resnet-g1",
        "run": {"key": key_of(body), "jobName": "resnet-g1", "generation": 1},
    }


async def lost_job_pod(pod_name: str, phase: str, message: str) -> FakeApi:
    """Reconcile a Running PruneJob whose Job was deleted (by its TTL, the operator down):
    only the pod `pod_name` is left, ended `phase` with `message`, deleting, held by the
    result finalizer. Returns the fake API, for what the reconciler did."""
    body = prunejob_body("resnet")
    reconciler, api, watch, _ = make(with_status(body, running_status(body)))
    job = job_body("resnet", 1)
    watch.pod("resnet-g1", pod_body(pod_name, job, phase=phase, message=message, deleting=True))
    await reconcile(reconciler)
    return api


@asynchronous
async def test_a_lost_jobs_result_is_read_from_its_pod_then_the_finalizer_goes() -> None:
    # The Job finished while the operator was down and was deleted (TTL): the pod stays,
    # held by the result finalizer, deleting.
    api = await lost_job_pod("resnet-g1-abcde", "Succeeded", SUCCESS)
    assert api.verbs("create_job") == []
    status = status_of(api)
    assert (status["phase"], status["filtersSummary"]) == ("Succeeded", "120 -> 80")
    assert api.calls.index(("release", "resnet-g1-abcde")) > api.calls.index(
        ("patch_status", "resnet", "Succeeded", "Succeeded")
    )  # recorded first, released after


@asynchronous
async def test_a_failed_result_survives_too() -> None:
    failed = failure_message("ModelNotFound", "s3://models/in.keras does not exist")
    api = await lost_job_pod("resnet-g1-abcde", "Failed", failed)
    status = status_of(api)
    assert (status["phase"], status["reason"]) == ("Failed", "ModelNotFound")
    assert api.verbs("create_job") == [] and ("release", "resnet-g1-abcde") in api.calls


@asynchronous
async def test_a_job_lost_before_its_run_ended_is_created_again() -> None:
    retryable = failure_message("EndpointUnreachable", "cannot reach S3")
    api = await lost_job_pod("resnet-g1-aaaaa", "Failed", retryable)
    assert ("release", "resnet-g1-aaaaa") in api.calls  # it holds no result
    assert api.verbs("create_job") == [("create_job", "resnet-g1")]
    status = status_of(api)
    assert status["phase"] == "Pending" and status["attempts"] >= 1


@asynchronous
async def test_a_recorded_runs_pods_are_released_and_nothing_runs_again() -> None:
    body = prunejob_body("resnet")
    job = job_body("resnet", 1, complete=True)
    reconciler, api, watch, _ = make(with_status(body, succeeded_status(body)), job)
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job, phase="Succeeded", message=SUCCESS))
    await reconcile(reconciler)
    assert api.calls == [("release", "resnet-g1-abcde")]


@asynchronous
async def test_the_finalizer_is_held_until_the_result_is_written() -> None:
    body = prunejob_body("resnet")
    job = job_body("resnet", 1, complete=True)
    reconciler, api, watch, slept = make(body, job)
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job, phase="Succeeded", message=SUCCESS))
    api.failures["patch_status"] = [ApiError("HTTP 503"), ApiError("HTTP 503")]
    await reconciler.trigger(NS, "resnet")
    await settle(reconciler)
    assert slept == [1.0, 2.0]  # two failed status patches, retried
    patches = [i for i, call in enumerate(api.calls) if call[0] == "patch_status"]
    assert len(patches) == 3
    assert api.calls.index(("release", "resnet-g1-abcde")) > patches[-1]
    assert api.calls.count(("release", "resnet-g1-abcde")) == 1


@asynchronous
async def test_pods_of_a_deleted_prunejob_are_released() -> None:
    job = job_body("resnet", 1)
    reconciler, api, watch, _ = make()
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job, deleting=True))
    watch.pod("resnet-g1", pod_body("resnet-g1-bbbbb", job, phase="Failed", deleting=True))
    await reconcile(reconciler)
    assert sorted(api.calls) == [("release", "resnet-g1-abcde"), ("release", "resnet-g1-bbbbb")]


@asynchronous
async def test_pods_of_an_earlier_prunejob_of_the_same_name_are_released() -> None:
    job = job_body("resnet", 1)
    reconciler, api, watch, _ = make(prunejob_body("resnet", uid="uid-new"))
    watch.pod("resnet-g1", pod_body("resnet-g1-old", job, phase="Succeeded", owner_uid="uid-old"))
    await reconcile(reconciler)
    assert ("release", "resnet-g1-old") in api.calls
    assert api.statuses[NS, "resnet"]["phase"] != "Succeeded"  # not this PruneJob's result


# -- suspend and Kueue -----------------------------------------------------------------


@asynchronous
async def test_suspend_creates_no_job_and_resume_creates_it() -> None:
    reconciler, api, watch, _ = make(prunejob_body("resnet", suspend=True))
    await reconcile(reconciler)
    assert api.verbs("create_job") == []
    status = status_of(api)
    assert (status["phase"], status["reason"]) == ("Suspended", "Suspended")
    suspended = {c["type"]: c["status"] for c in status["conditions"]}["Suspended"]
    assert suspended == "True"
    watch.prunejob(prunejob_body("resnet", generation=2, suspend=False))
    await reconcile(reconciler)
    assert api.verbs("create_job") == [("create_job", "resnet-g2")]
    assert status_of(api)["phase"] == "Pending"


@asynchronous
async def test_suspend_suspends_a_running_job_and_resume_starts_it_again() -> None:
    job = job_body("resnet", 1)
    reconciler, api, watch, _ = make(prunejob_body("resnet", generation=2, suspend=True), job)
    api.jobs[NS, "resnet-g1"] = job
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job))
    await reconcile(reconciler)
    assert api.verbs("set_job_suspended") == [("set_job_suspended", "resnet-g1", "True")]
    assert status_of(api)["phase"] == "Suspended"
    # The Job controller deletes the active pod: it holds no result.
    watch.job(job_body("resnet", 1, suspend=True))
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job, phase="Failed", deleting=True))
    await reconcile(reconciler)
    assert ("release", "resnet-g1-abcde") in api.calls
    # Resume: the same Job is unsuspended (the queue starts it; no cap here).
    watch.gone("resnet-g1-abcde")
    watch.prunejob(prunejob_body("resnet", generation=3, suspend=False))
    await reconcile(reconciler)
    assert api.verbs("set_job_suspended")[-1] == ("set_job_suspended", "resnet-g1", "False")
    assert api.verbs("create_job") == []


@asynchronous
async def test_suspend_deletes_a_kueue_job_which_kueue_would_unsuspend() -> None:
    labels = {"kueue.x-k8s.io/queue-name": "gpu"}
    job = job_body("resnet", 1, kueue=True)
    reconciler, api, watch, _ = make(
        prunejob_body("resnet", generation=2, suspend=True, labels=labels), job
    )
    await reconcile(reconciler)
    assert api.verbs("delete_job") == [("delete_job", "resnet-g1")]
    assert api.verbs("set_job_suspended") == []
    assert status_of(api)["phase"] == "Suspended"
    watch.gone("resnet-g1")
    watch.prunejob(prunejob_body("resnet", generation=3, labels=labels))
    await reconcile(reconciler)
    assert api.verbs("create_job") == [("create_job", "resnet-g3")]
    created = api.jobs[NS, "resnet-g3"]
    assert created["spec"]["suspend"] is True  # Kueue admits it; the operator never does
    assert created["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert api.verbs("set_job_suspended") == []


@asynchronous
async def test_kueue_labels_go_to_the_job_and_kueue_jobs_stay_out_of_the_cap() -> None:
    labels = {"kueue.x-k8s.io/queue-name": "gpu", "kueue.x-k8s.io/priority-class": "high"}
    reconciler, api, _, _ = make(prunejob_body("queued", labels=labels), cap=1)
    await reconcile(reconciler, "queued")
    job = api.jobs[NS, "queued-g1"]
    assert job["spec"]["suspend"] is True
    assert {k: job["metadata"]["labels"][k] for k in labels} == labels
    assert "Kueue" in status_of(api, "queued")["message"]


# -- the priority queue ----------------------------------------------------------------


@asynchronous
async def test_the_cap_admits_higher_priorities_first_then_fifo() -> None:
    reconciler, api, watch, _ = make(cap=1)
    watch.priority_class("high", 1000)
    watch.priority_class("standard", 100, default=True)
    names = ["old-standard", "new-high", "mid-default", "older-unknown-class"]
    bodies = [
        prunejob_body(names[0], created="2025-01-01T00:00:02Z", priorityClassName="standard"),
        prunejob_body(names[1], created="2025-01-01T00:00:05Z", priorityClassName="high"),
        prunejob_body(names[2], created="2025-01-01T00:00:03Z"),  # the globalDefault: 100
        prunejob_body(names[3], created="2025-01-01T00:00:01Z", priorityClassName="nope"),
    ]
    for body in bodies:
        watch.prunejob(body)
    for name in names:  # no Job event arrives meanwhile
        await reconcile(reconciler, name)

    def running() -> list[str]:
        return [name for name in names if not api.jobs[NS, f"{name}-g1"]["spec"]["suspend"]]

    order = []
    for _ in names:
        (started,) = running()
        order.append(started)
        for name in names:  # the watch shows every Job as it is now
            if name == started:
                done = job_body(name, 1, complete=True, key=key_of(prunejob_body(name)))
                watch.job(done)
            elif name not in order:
                watch_job(watch, api, f"{name}-g1")
        await reconciler.job_event("MODIFIED", NS, started, summarize_job(done))
        await settle(reconciler)
        api.jobs[NS, f"{started}-g1"]["spec"]["suspend"] = True  # out of running()
    # Highest priority first; equal priorities (the default for none or an unknown
    # class) first come, first served.
    assert order == ["new-high", "older-unknown-class", "old-standard", "mid-default"]


@asynchronous
async def test_a_created_job_that_the_watch_showed_and_then_lost_is_gone() -> None:
    # Our own creation is trusted only until the watch shows the Job; a deletion after
    # that must not leave it looking alive.
    reconciler, api, watch, _ = make(prunejob_body("resnet"))
    await reconcile(reconciler)
    watch_job(watch, api, "resnet-g1")
    await reconcile(reconciler)
    watch.gone("resnet-g1")
    assert reconciler.jobs_of(NS, "resnet") == []


@asynchronous
async def test_a_failed_job_waits_a_bounded_time_for_its_failed_pod() -> None:
    # The Job failed (podFailurePolicy) and its failed pod has not been seen. The status
    # waits for the pod's reason, and the reconciler looks again when the wait is up:
    # a pod that never comes (deleted in spite of the result finalizer) cannot hold the
    # PruneJob in Failing for ever.
    clock = ["2025-01-01T00:06:00Z"]
    job = job_body(
        "resnet", 1, failed="PodFailurePolicy", failed_at="2025-01-01T00:05:00Z", failed_pods=1
    )
    reconciler, api, _, slept = make(prunejob_body("resnet"), job, now=lambda: clock[0])
    await reconciler.reconcile(NS, "resnet")
    status = status_of(api)
    assert (status["phase"], status["reason"]) == ("Running", "Failing")
    await asyncio.sleep(0)  # the recheck's task starts its sleep
    assert slept == [60.0]  # the recheck, at the end of the 120 s wait
    clock[0] = "2025-01-01T00:07:01Z"  # the wait is up when the recheck runs
    await settle(reconciler)
    status = status_of(api)
    assert (status["phase"], status["reason"]) == ("Failed", "JobFailed")
    assert "Job failed (PodFailurePolicy)" in status["message"]
    assert "not seen within 120 s" in status["message"]
    assert slept == [60.0]  # nothing more to wait for


@asynchronous
async def test_a_failed_pod_that_arrives_during_the_wait_names_the_reason() -> None:
    job = job_body(
        "resnet", 1, failed="PodFailurePolicy", failed_at="2025-01-01T00:05:00Z", failed_pods=1
    )
    reconciler, api, watch, _ = make(
        prunejob_body("resnet"), job, now=lambda: "2025-01-01T00:05:10Z"
    )
    await reconciler.reconcile(NS, "resnet")
    assert status_of(api)["reason"] == "Failing"
    failed = failure_message("ModelNotFound", "s3://models/in.keras does not exist")
    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job, phase="Failed", message=failed))
    await reconciler.reconcile(NS, "resnet")  # the pod's event
    status = status_of(api)
    assert (status["phase"], status["reason"]) == ("Failed", "ModelNotFound")
    # the pending recheck then finds the result recorded: nothing changes
    await settle(reconciler)
    assert status_of(api)["reason"] == "ModelNotFound"
