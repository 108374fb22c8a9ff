"""Job + Pods -> PruneJob status, for every reason code."""

from __future__ import annotations

from typing import Any

import pytest
from operator_samples import SUCCEEDED_CONDITIONS, report

from prunejob_contract import errors
from prunejob_contract.termination import failure_message, success_message
from prunejob_operator import models
from prunejob_operator.records import summarize_job, summarize_pod
from prunejob_operator.status import (
    Observation,
    build_status,
    derive,
    invalid_spec,
    observe_generation,
    transition_event,
)

REPORT = report(
    [("conv1", 32, 24), ("conv2", 64, 40)],
    params=(1000, 600),
    filters=(96, 64),
    flops=(50000, 30000),
)
OUTPUT = {"uri": "s3://outputs/m.keras", "sha256": "ab" * 32, "bytes": 1234}


def job_body(*, suspend: bool = False, conditions: list | None = None, **extra: Any) -> dict:
    labels = {"prunejob.io/generation": "2", "app.kubernetes.io/managed-by": "prunejob"}
    labels.update(extra.pop("labels", {}))
    return {
        "metadata": {
            "name": "pj-g2",
            "namespace": "ml",
            "labels": labels,
            "annotations": {"prunejob.io/prunejob": "pj", "prunejob.io/queued-at": "T0"},
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], "startTime": "2025-01-01T00:00:00Z", **extra},
    }


def condition(type_: str, reason: str = "", message: str = "") -> dict:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:05:00Z",
    }


def pod_body(
    name: str = "pj-g2-abcde",
    *,
    phase: str = "Pending",
    state: dict | None = None,
    conditions: list | None = None,
    created: str = "2025-01-01T00:00:01Z",
) -> dict:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "prune", "state": state}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def terminated(code: int, message: str, reason: str = "Error") -> dict:
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


RUN = models.RunRef(key="k1", job_name="pj-g2", generation=2)


def observe(
    job: dict | None,
    pods: list[dict] = (),  # type: ignore[assignment]
    cap: int = 0,
    *,
    suspended: bool = False,
    backoff_limit: int = 2,
    generation: int = 2,
) -> Observation:
    return derive(
        generation=generation,
        job_name="pj-g2",
        job=summarize_job(job) if job else None,
        pods=[summarize_pod(pod) for pod in pods],
        max_running_jobs=cap,
        suspended=suspended,
        backoff_limit=backoff_limit,
        run=RUN,
    )


def test_no_job_yet_is_pending_creating() -> None:
    seen = observe(None)
    assert (seen.phase, seen.reason, seen.job_name) == ("Pending", "Creating", "pj-g2")


def test_suspended_job_is_queued() -> None:
    seen = observe(job_body(suspend=True), cap=3)
    assert (seen.phase, seen.reason) == ("Pending", "Queued")
    assert "3" in seen.message


def test_kueue_job_waits_for_kueue() -> None:
    body = job_body(suspend=True, labels={"kueue.x-k8s.io/queue-name": "q"})
    seen = observe(body)
    assert (seen.phase, seen.reason) == ("Pending", "Queued")
    assert "Kueue" in seen.message


def test_running_pod_is_running() -> None:
    seen = observe(job_body(active=1), [pod_body(phase="Running", state={"running": {}})])
    assert (seen.phase, seen.reason) == ("Running", "Running")
    assert seen.start_time == "2025-01-01T00:00:00Z"


def test_success_carries_the_counts_from_the_termination_message() -> None:
    message = success_message(REPORT, output=OUTPUT, report_uri="s3://outputs/m.keras.report.json")
    job = job_body(conditions=[condition("Complete")], completionTime="2025-01-01T00:09:00Z")
    seen = observe(job, [pod_body(phase="Succeeded", state=terminated(0, message, "Completed"))])
    assert (seen.phase, seen.reason) == ("Succeeded", "Succeeded")
    status = build_status(models.PruneJobStatus(), seen, "2025-01-01T00:10:00Z")
    assert status.filters == models.BeforeAfter(before=96, after=64)
    assert status.filters_summary == "96 -> 64"
    assert status.params == models.BeforeAfter(before=1000, after=600)
    assert status.flops == models.BeforeAfter(before=50000, after=30000)
    assert status.pruning_ratio == 0.6
    assert [(layer.name, layer.before, layer.after) for layer in status.layers] == [
        ("conv1", 32, 24),
        ("conv2", 64, 40),
    ]
    assert status.output == models.OutputRef(**OUTPUT)
    assert status.report_uri == "s3://outputs/m.keras.report.json"
    assert status.completion_time == "2025-01-01T00:09:00Z"
    assert status.observed_generation == 2 and status.job_name == "pj-g2"
    ready = {c.type: c.status for c in status.conditions}
    assert ready == SUCCEEDED_CONDITIONS


def succeeded_with(layer_count: int) -> Observation:
    layers = [{"name": f"conv_{i}", "before": 64, "after": 32} for i in range(layer_count)]
    message = success_message({**REPORT, "layers": layers}, output=OUTPUT)
    job = job_body(conditions=[condition("Complete")])
    return observe(job, [pod_body(phase="Succeeded", state=terminated(0, message, "Completed"))])


def test_compressed_layers_are_decoded_and_the_status_list_is_bounded() -> None:
    layers = [{"name": f"conv_{i}", "before": 64, "after": 32} for i in range(300)]
    assert "layersZ" in success_message({**REPORT, "layers": layers}, output=OUTPUT)
    seen = succeeded_with(300)  # compressed in the message, cut in the status
    status = build_status(models.PruneJobStatus(), seen, "t1")
    assert len(status.layers) == models.MAX_STATUS_LAYERS == 256
    assert [layer.name for layer in status.layers[:2]] == ["conv_0", "conv_1"]
    assert status.layers_truncated is True
    exactly = build_status(models.PruneJobStatus(), succeeded_with(256), "t1")
    assert len(exactly.layers) == 256 and exactly.layers_truncated is None


def test_layers_omitted_from_the_message_are_flagged_as_truncated() -> None:
    layers = [{"name": f"layer-{i:05d}-{'x' * 40}", "before": 64, "after": 32} for i in range(4000)]
    message = success_message({**REPORT, "layers": layers}, output=OUTPUT)
    assert "layersOmitted" in message
    job = job_body(conditions=[condition("Complete")])
    seen = observe(job, [pod_body(phase="Succeeded", state=terminated(0, message, "Completed"))])
    status = build_status(models.PruneJobStatus(), seen, "t1")
    assert status.layers == [] and status.layers_truncated is True


@pytest.mark.parametrize(
    "error",
    [
        errors.ModelNotFound,
        errors.DecryptionFailed,
        errors.UnsupportedLayer,
        errors.AccessDenied,
        errors.KeyRequired,
        errors.BucketNotFound,
        errors.OutputExists,
        errors.InvalidModel,
    ],
)
def test_worker_reason_from_the_termination_message(error: type[errors.PrunejobError]) -> None:
    message = failure_message(error.reason, f"{error.reason} happened to s3://inputs/m.keras")
    pod = pod_body(phase="Failed", state=terminated(error.exit_code, message))
    for job_reason in ("PodFailurePolicy", "BackoffLimitExceeded"):
        job = job_body(conditions=[condition("Failed", job_reason, "job failed")])
        seen = observe(job, [pod])
        assert (seen.phase, seen.reason) == ("Failed", error.reason)
        assert seen.message == f"{error.reason} happened to s3://inputs/m.keras"


def test_backoff_limit_with_a_transient_worker_error() -> None:
    message = failure_message("EndpointUnreachable", "cannot reach http://s3:9000")
    pods = [
        pod_body(f"pj-g2-{i}", phase="Failed", state=terminated(10, message), created=f"T{i}")
        for i in range(3)
    ]
    job = job_body(conditions=[condition("Failed", "BackoffLimitExceeded")], failed=3)
    seen = observe(job, pods)
    assert (seen.phase, seen.reason) == ("Failed", "BackoffLimitExceeded")
    assert "3 attempt(s)" in seen.message and "EndpointUnreachable" in seen.message


def test_backoff_limit_without_a_message() -> None:
    pod = pod_body(phase="Failed", state=terminated(137, "", "OOMKilled"))
    job = job_body(conditions=[condition("Failed", "BackoffLimitExceeded")], failed=1)
    seen = observe(job, [pod])
    assert (seen.phase, seen.reason) == ("Failed", "BackoffLimitExceeded")
    assert "OOMKilled" in seen.message and "137" in seen.message


def test_backoff_limit_with_a_log_tail_instead_of_a_result() -> None:
    # FallbackToLogsOnError: a worker that died before writing its result leaves its log.
    tail = "Traceback (most recent call last):\n  ...\nMemoryError: cannot allocate 4 GiB\n"
    pod = pod_body(phase="Failed", state=terminated(1, tail, "Error"))
    job = job_body(conditions=[condition("Failed", "BackoffLimitExceeded")], failed=1)
    seen = observe(job, [pod])
    assert (seen.phase, seen.reason) == ("Failed", "BackoffLimitExceeded")
    assert seen.message.endswith("(exit code 1): MemoryError: cannot allocate 4 GiB")


@pytest.mark.parametrize(
    ("job_reason", "failed", "pods"),
    [
        ("PodFailurePolicy", 1, []),
        ("BackoffLimitExceeded", 3, []),
        ("PodFailurePolicy", 0, []),
        ("", 1, []),
        # the pod watch still shows the pod running when the Job's Failed arrives
        ("PodFailurePolicy", 1, [pod_body(phase="Running", state={"running": {}})]),
    ],
)
def test_a_failed_job_waits_for_its_failed_pod(job_reason: str, failed: int, pods: list) -> None:
    # The Job and Pod watches are not ordered; reporting before the pod arrives would
    # record JobFailed for good where the worker said ModelNotFound (seen under faults).
    job = job_body(conditions=[condition("Failed", job_reason)], failed=failed)
    seen = observe(job, pods)
    assert (seen.phase, seen.reason) == ("Running", "Failing")
    assert "waiting for its pod" in seen.message
    message = failure_message("ModelNotFound", "no object s3://inputs/m.keras")
    arrived = pod_body(phase="Failed", state=terminated(3, message))
    seen = observe(job, [arrived])
    assert (seen.phase, seen.reason) == ("Failed", "ModelNotFound")


def test_a_job_that_failed_without_a_pod_is_job_failed() -> None:
    job = job_body(conditions=[condition("Failed", "MaxFailedIndexesExceeded", "")])
    seen = observe(job, [])
    assert (seen.phase, seen.reason) == ("Failed", "JobFailed")
    assert seen.message == "Job failed (MaxFailedIndexesExceeded)"


def test_deadline_exceeded() -> None:
    job = job_body(
        conditions=[condition("Failed", "DeadlineExceeded", "Job was active longer than...")]
    )
    seen = observe(job, [pod_body(phase="Failed", state=terminated(137, "", "Error"))])
    assert (seen.phase, seen.reason) == ("Failed", "DeadlineExceeded")
    assert seen.completion_time == "2025-01-01T00:05:00Z"


def test_missing_secret_is_pending_secret_not_found() -> None:
    waiting = {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "key" not found'}
    }
    seen = observe(job_body(active=1), [pod_body(state=waiting)])
    assert (seen.phase, seen.reason) == ("Pending", "SecretNotFound")
    assert seen.message == 'secret "key" not found'


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_image_pull_failure(reason: str) -> None:
    waiting = {"waiting": {"reason": reason, "message": "pull access denied"}}
    seen = observe(job_body(active=1), [pod_body(state=waiting)])
    assert (seen.phase, seen.reason) == ("Pending", "ImagePullBackOff")


def test_unschedulable() -> None:
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes: insufficient nvidia.com/gpu",
    }
    seen = observe(job_body(active=1), [pod_body(conditions=[scheduled])])
    assert (seen.phase, seen.reason) == ("Pending", "Unschedulable")
    assert "nvidia.com/gpu" in seen.message


def test_failed_attempt_with_retries_left_is_retrying() -> None:
    message = failure_message("EndpointUnreachable", "cannot reach S3")
    seen = observe(job_body(active=0), [pod_body(phase="Failed", state=terminated(10, message))])
    assert (seen.phase, seen.reason) == ("Running", "Retrying")


@pytest.mark.parametrize("error", [errors.ModelNotFound, errors.DecryptionFailed])
def test_permanent_failure_before_the_job_fails_is_failing_not_retrying(
    error: type[errors.PrunejobError],
) -> None:
    message = failure_message(error.reason, "no use retrying")
    pod = pod_body(phase="Failed", state=terminated(error.exit_code, message))
    seen = observe(job_body(active=0), [pod])
    assert (seen.phase, seen.reason) == ("Running", "Failing")
    assert seen.message == f"the worker failed, no retry: {error.reason}: no use retrying"
    status = build_status(models.PruneJobStatus(), seen, "t1")
    assert transition_event(models.PruneJobStatus(), status) is None  # the Failed one follows


def test_last_allowed_attempt_failed_is_failing_not_retrying() -> None:
    message = failure_message("EndpointUnreachable", "cannot reach S3")
    job = job_body(active=0)
    job["spec"]["backoffLimit"] = 1
    first = pod_body("pj-g2-aaaaa", phase="Failed", state=terminated(10, message))
    second = pod_body(
        "pj-g2-bbbbb", phase="Failed", state=terminated(10, message), created="2025-01-01T00:01:00Z"
    )
    assert observe(job, [first]).reason == "Retrying"
    seen = observe(job, [first, second])
    assert (seen.phase, seen.reason) == ("Running", "Failing")
    assert seen.message.startswith("2 attempt(s) failed, no retries left: EndpointUnreachable")


def test_invalid_spec_is_failed_and_stalled() -> None:
    status = build_status(models.PruneJobStatus(), invalid_spec(4, "spec.gpus: bad"), "now")
    assert (status.phase, status.reason, status.observed_generation) == ("Failed", "InvalidSpec", 4)
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")


def test_conditions_keep_their_transition_time() -> None:
    first = build_status(models.PruneJobStatus(), observe(job_body(suspend=True)), "t1")
    second = build_status(first, observe(job_body(suspend=True)), "t2")
    assert second == first  # nothing changed: nothing to patch
    running = observe(job_body(active=1), [pod_body(phase="Running", state={"running": {}})])
    third = build_status(second, running, "t3")
    times = {c.type: c.last_transition_time for c in third.conditions}
    assert set(times.values()) == {"t1"}  # every condition kept its status
    assert third.reason == "Running"


def test_a_new_generation_clears_the_previous_results() -> None:
    message = success_message(REPORT, output=OUTPUT)
    job = job_body(conditions=[condition("Complete")])
    done = observe(job, [pod_body(phase="Succeeded", state=terminated(0, message, "Completed"))])
    succeeded = build_status(models.PruneJobStatus(), done, "t1")
    fresh = derive(generation=3, job_name="pj-g3", job=None, pods=[])
    restarted = build_status(succeeded, fresh, "t2")
    patch = restarted.to_patch()
    assert patch["filters"] is None and patch["layers"] == [] and patch["output"] is None
    assert patch["observedGeneration"] == 3 and patch["phase"] == "Pending"


def test_events_on_transitions_only() -> None:
    empty = models.PruneJobStatus()
    queued = build_status(empty, observe(job_body(suspend=True)), "t1")
    assert transition_event(empty, queued).reason == "Queued"
    assert transition_event(queued, queued) is None
    failed_obs = observe(job_body(conditions=[condition("Failed", "DeadlineExceeded")]))
    failed = build_status(queued, failed_obs, "t2")
    event = transition_event(queued, failed)
    assert (event.type, event.reason) == ("Warning", "DeadlineExceeded")


def test_complete_job_waits_for_the_pod_result() -> None:
    seen = observe(job_body(conditions=[condition("Complete")]), [])
    assert (seen.phase, seen.reason) == ("Running", "Finishing")


# -- runs, suspend, lost Jobs, attempt counts ------------------------------------------


def success_pod(name: str = "pj-g2-abcde") -> dict:
    message = success_message(REPORT, output=OUTPUT)
    return pod_body(name, phase="Succeeded", state=terminated(0, message, "Completed"))


def failed_pod(name: str, reason: str, exit_code: int, created: str = "T1") -> dict:
    message = failure_message(reason, f"{reason} happened")
    return pod_body(name, phase="Failed", state=terminated(exit_code, message), created=created)


def test_a_succeeded_pod_is_success_before_the_jobs_complete_condition() -> None:
    seen = observe(job_body(active=0), [success_pod()])
    assert (seen.phase, seen.reason) == ("Succeeded", "Succeeded")
    assert seen.results["filters_summary"] == "96 -> 64"


@pytest.mark.parametrize(
    ("pods", "phase", "reason"),
    [
        ([success_pod()], "Succeeded", "Succeeded"),
        ([failed_pod("a", "ModelNotFound", 3)], "Failed", "ModelNotFound"),
        (
            [failed_pod(f"p{i}", "EndpointUnreachable", 10, created=f"T{i}") for i in range(3)],
            "Failed",
            "BackoffLimitExceeded",
        ),
        ([failed_pod("a", "EndpointUnreachable", 10)], "Pending", "Creating"),  # unfinished
        ([], "Pending", "Creating"),
    ],
    ids=["success", "permanent-failure", "backoff-exhausted", "retries-left", "no-pods"],
)
def test_without_its_job_the_result_is_read_from_the_pods(
    pods: list[dict], phase: str, reason: str
) -> None:
    seen = observe(None, pods, backoff_limit=2)
    assert (seen.phase, seen.reason) == (phase, reason)


def test_the_pods_backoff_annotation_wins_over_the_spec() -> None:
    pods = [failed_pod(f"p{i}", "EndpointUnreachable", 10, created=f"T{i}") for i in range(2)]
    for pod in pods:
        pod["metadata"]["annotations"] = {"prunejob.io/backoff-limit": "1"}
    assert observe(None, pods, backoff_limit=5).reason == "BackoffLimitExceeded"


def test_suspended_runs_hold_until_resumed() -> None:
    for job in (None, job_body(suspend=True), job_body(active=1)):
        seen = observe(job, suspended=True)
        assert (seen.phase, seen.reason) == ("Suspended", "Suspended")
    status = build_status(models.PruneJobStatus(), observe(None, suspended=True), "t1")
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions["Suspended"] == ("True", "Suspended")
    assert conditions["Reconciling"][0] == conditions["Ready"][0] == "False"
    # A run that ended before the suspend keeps its result.
    finished = observe(
        job_body(conditions=[condition("Complete")]), [success_pod()], suspended=True
    )
    assert finished.phase == "Succeeded"


def test_job_style_conditions_for_kubectl_wait() -> None:
    done = build_status(models.PruneJobStatus(), observe(job_body(), [success_pod()]), "t1")
    failed = build_status(
        models.PruneJobStatus(),
        observe(job_body(conditions=[condition("Failed", "DeadlineExceeded")])),
        "t1",
    )
    for status, true_ones in ((done, {"Ready", "Complete"}), (failed, {"Stalled", "Failed"})):
        assert {c.type for c in status.conditions if c.status == "True"} == true_ones
        assert {c.type for c in status.conditions} == {
            "Ready", "Reconciling", "Stalled", "Complete", "Failed", "Suspended"
        }  # fmt: skip


def test_attempts_count_pods_created_and_failed_and_never_go_down_within_a_run() -> None:
    retry = [failed_pod("a", "EndpointUnreachable", 10, created="T1"), pod_body("b", created="T2")]
    seen = observe(job_body(active=1, failed=1), retry)
    assert (seen.attempts, seen.failed_attempts) == (2, 1)
    first = build_status(models.PruneJobStatus(), seen, "t1")
    # The Job and the failed pod are gone: the counts stay.
    later = build_status(first, observe(None, [pod_body("b", created="T2")]), "t2")
    assert (later.attempts, later.failed_attempts) == (2, 1)
    # A new run counts from zero.
    other = derive(generation=3, job_name="pj-g3", job=None, pods=[], run=RUN.model_copy(
        update={"key": "k2", "job_name": "pj-g3", "generation": 3}))  # fmt: skip
    assert build_status(first, other, "t3").attempts == 0


def test_suspend_deleted_pods_are_not_failed_attempts_while_the_job_counts() -> None:
    killed = pod_body("a", phase="Failed", state=terminated(143, "", "Error"))
    seen = observe(job_body(suspend=True, active=0, failed=0), [killed], suspended=True)
    assert (seen.attempts, seen.failed_attempts) == (1, 0)


def test_an_operational_edit_of_a_recorded_run_only_moves_the_generation() -> None:
    done = build_status(models.PruneJobStatus(), observe(job_body(), [success_pod()]), "t1")
    moved = observe_generation(done, 5)
    assert moved.observed_generation == 5
    assert {c.observed_generation for c in moved.conditions} == {5}
    assert [c.last_transition_time for c in moved.conditions] == [
        c.last_transition_time for c in done.conditions
    ]
    assert (
        moved.model_copy(update={"observed_generation": 2, "conditions": done.conditions}) == done
    )
    assert transition_event(done, moved) is None


def test_a_new_run_posts_its_events_again() -> None:
    empty = models.PruneJobStatus()
    first = build_status(empty, observe(job_body(suspend=True)), "t1")
    rerun = derive(
        generation=3,
        job_name="pj-g3",
        job=summarize_job(job_body(suspend=True)),
        pods=[],
        run=models.RunRef(key="k2", job_name="pj-g3", generation=3),
    )
    second = build_status(first, rerun, "t2")
    assert (first.reason, second.reason) == ("Queued", "Queued")
    assert transition_event(first, second) is not None


def test_the_wait_for_a_failed_pod_is_bounded() -> None:
    job = summarize_job(
        job_body(
            conditions=[condition("Failed", "PodFailurePolicy")],  # at 2025-01-01T00:05:00Z
            failed=1,
        )
    )

    def at(now: str) -> Observation:
        return derive(generation=2, job_name="pj-g2", job=job, pods=[], run=RUN, now=now)

    waiting = at("2025-01-01T00:05:30Z")
    assert (waiting.phase, waiting.reason, waiting.recheck_after) == ("Running", "Failing", 90.0)
    assert at("2025-01-01T00:06:59Z").recheck_after == 1.0  # never sooner than a second
    done = at("2025-01-01T00:07:00Z")
    assert (done.phase, done.reason, done.recheck_after) == ("Failed", "JobFailed", None)
    assert done.message == (
        "Job failed (PodFailurePolicy); its failed pod, which would say why, was not seen "
        "within 120 s"
    )
