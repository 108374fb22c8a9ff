"""The Reconciler without kopf: a fake KubeApi and fake watch caches (plain dicts).

Each test decides how far the watch lags behind the writes (`reconciler_fakes`).
"""

from __future__ import annotations

import asyncio

import pytest
from async_test import asynchronous
from reconciler_fakes import (
    NS,
    Clock,
    job_body,
    make,
    pod_body,
    prunejob_body,
    record_of,
    settle,
    summarize_job,
)

from prunejob_operator.kubeapi import ApiError


@asynchronous
async def test_a_new_prunejob_gets_its_job_a_status_and_an_event() -> None:
    reconciler, api, _, _ = make(prunejob_body("resnet"))
    await reconciler.prunejob_event("ADDED", record_of(prunejob_body("resnet")))
    await settle(reconciler)

    assert api.verbs("create_job") == [("create_job", "resnet-g1")]
    job = api.jobs[NS, "resnet-g1"]
    assert job["spec"]["suspend"] is False
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-resnet"
    assert api.verbs("patch_status") == [("patch_status", "resnet", "Pending", "Starting")]
    assert api.statuses[NS, "resnet"]["jobName"] == "resnet-g1"
    assert api.events == [("resnet", "Normal", "JobCreated")]


@asynchronous
async def test_no_second_job_before_or_after_the_watch_catches_up() -> None:
    reconciler, api, watch, _ = make(prunejob_body("resnet"))
    await reconciler.reconcile(NS, "resnet")
    await reconciler.reconcile(NS, "resnet")  # the Job's event has not arrived yet
    watch.job(job_body("resnet"))
    await reconciler.reconcile(NS, "resnet")
    assert api.verbs("create_job") == [("create_job", "resnet-g1")]


@asynchronous
async def test_an_existing_job_is_a_409_not_an_error_or_an_event() -> None:
    reconciler, api, watch, _ = make()
    api.jobs[NS, "resnet-g1"] = job_body("resnet")  # created by a previous process
    watch.prunejob(prunejob_body("resnet"))
    await reconciler.reconcile(NS, "resnet")
    await settle(reconciler)
    assert api.verbs("create_job") == [("create_job", "resnet-g1")]
    assert api.verbs("patch_status") == [("patch_status", "resnet", "Pending", "Creating")]
    assert api.events == []
    assert reconciler.queue.failures(("prunejob", NS, "resnet")) == 0


@asynchronous
async def test_the_status_is_written_once_per_change() -> None:
    reconciler, api, watch, _ = make(prunejob_body("resnet"), job_body("resnet"))
    await reconciler.reconcile(NS, "resnet")
    await reconciler.reconcile(NS, "resnet")
    assert len(api.verbs("patch_status")) == 1

    watch.pod("resnet-g1", pod_body("resnet-g1-abcde", job_body("resnet")))
    await reconciler.reconcile(NS, "resnet")
    await reconciler.reconcile(NS, "resnet")
    assert api.verbs("patch_status") == [
        ("patch_status", "resnet", "Pending", "Starting"),
        ("patch_status", "resnet", "Running", "Running"),
    ]
    await settle(reconciler)
    assert api.events == [("resnet", "Normal", "Running")]


@asynchronous
async def test_the_event_of_our_own_status_patch_is_not_reconciled() -> None:
    reconciler, api, watch, _ = make(prunejob_body("resnet"), job_body("resnet"))
    await reconciler.reconcile(NS, "resnet")
    written_version = api.versions[NS, "resnet"]

    reconciled: list[str] = []
    original = reconciler.reconcile

    async def spy(namespace: str, name: str) -> None:
        reconciled.append(name)
        await original(namespace, name)

    reconciler.reconcile = spy  # type: ignore[method-assign]
    own = prunejob_body("resnet", version=written_version, status=api.statuses[NS, "resnet"])
    watch.prunejob(own)
    await reconciler.prunejob_event("MODIFIED", record_of(own))
    assert reconciled == []

    someone_else = prunejob_body("resnet", version=str(int(written_version) + 1))
    await reconciler.prunejob_event("MODIFIED", record_of(someone_else))
    assert reconciled == ["resnet"]


@asynchronous
async def test_until_the_watch_catches_up_the_own_status_is_the_previous_one() -> None:
    clock = Clock()
    reconciler, api, _, _ = make(prunejob_body("resnet"), job_body("resnet"), clock=clock)
    await reconciler.reconcile(NS, "resnet")
    # The cache still shows the PruneJob without a status: no second identical patch.
    await reconciler.reconcile(NS, "resnet")
    assert len(api.verbs("patch_status")) == 1
    # After the grace period the cache is trusted again (the event was lost).
    clock.now = 31.0
    await reconciler.reconcile(NS, "resnet")
    assert len(api.verbs("patch_status")) == 2


@asynchronous
async def test_an_api_error_is_retried_with_growing_backoff() -> None:
    reconciler, api, watch, slept = make()
    api.failures["create_job"] = [ApiError("HTTP 500"), ApiError("HTTP 500")]
    watch.prunejob(prunejob_body("resnet"))
    await reconciler.trigger(NS, "resnet")
    await settle(reconciler)

    assert slept == [1.0, 2.0]
    assert len(api.verbs("create_job")) == 3
    assert (NS, "resnet-g1") in api.jobs
    assert reconciler.queue.failures(("prunejob", NS, "resnet")) == 0
    errors = reconciler.metrics.reconcile_errors.labels(step="prunejob")._value.get()
    assert errors == 2


@asynchronous
async def test_a_trigger_while_running_runs_once_more() -> None:
    reconciler, _, _, _ = make()
    runs: list[int] = []
    release = asyncio.Event()

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            await release.wait()

    first = asyncio.create_task(reconciler.queue.run("k", work))
    await asyncio.sleep(0)
    await reconciler.queue.run("k", work)  # while the first runs: marks it dirty
    await reconciler.queue.run("k", work)  # and again: still one more run only
    assert runs == [0]
    release.set()
    await first
    assert runs == [0, 1]


@asynchronous
async def test_the_cap_admits_the_oldest_and_starts_the_next_when_one_finishes() -> None:
    reconciler, api, watch, _ = make(cap=2)
    names = ["a", "b", "c"]
    for i, name in enumerate(names):
        watch.prunejob(prunejob_body(name, created=f"2025-01-01T00:00:0{i}Z"))
    for name in names:  # no Job event has arrived yet: the starts are in flight
        await reconciler.reconcile(NS, name)
    suspended = {name: api.jobs[NS, f"{name}-g1"]["spec"]["suspend"] for name in names}
    assert suspended == {"a": False, "b": False, "c": True}
    assert api.statuses[NS, "c"]["reason"] == "Queued"

    for name in names:
        watch.job(job_body(name, suspend=suspended[name]))
    await reconciler.admit()
    assert api.verbs("set_job_suspended") == []  # still two running

    watch.job(job_body("a", complete=True))
    await reconciler.job_event("MODIFIED", NS, "a", summarize_job(job_body("a", complete=True)))
    assert api.verbs("set_job_suspended") == [("set_job_suspended", "c-g1", "False")]
    assert api.jobs[NS, "c-g1"]["spec"]["suspend"] is False


@asynchronous
async def test_a_finished_generation_whose_job_is_gone_is_not_run_again() -> None:
    reconciler, api, watch, _ = make()
    done = {"phase": "Succeeded", "observedGeneration": 1, "reason": "Succeeded"}
    watch.prunejob(prunejob_body("resnet", status=done))
    await reconciler.reconcile(NS, "resnet")
    assert api.calls == []
    # A new generation does run.
    watch.prunejob(prunejob_body("resnet", generation=2, status=done))
    await reconciler.reconcile(NS, "resnet")
    assert api.verbs("create_job") == [("create_job", "resnet-g2")]


@asynchronous
async def test_an_invalid_spec_fails_without_a_job() -> None:
    reconciler, api, _, _ = make(prunejob_body("bad", gpus=-1))
    await reconciler.reconcile(NS, "bad")
    await settle(reconciler)
    assert api.verbs("create_job") == []
    assert api.verbs("patch_status") == [("patch_status", "bad", "Failed", "InvalidSpec")]
    assert api.events == [("bad", "Warning", "InvalidSpec")]


@pytest.mark.parametrize("event_type", ["DELETED", "MODIFIED"])
@asynchronous
async def test_events_of_owned_objects_reconcile_the_owner(event_type: str) -> None:
    # A deleted Job or pod may let the run go on (a lost Job, a superseded run's last pod).
    reconciler, api, _, _ = make(prunejob_body("resnet"))
    await reconciler.owned_event(event_type, NS, "resnet")
    assert len(api.verbs("create_job")) == 1
