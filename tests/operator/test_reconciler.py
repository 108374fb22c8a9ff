"""The Reconciler without kopf: a fake KubeApi and fake watch caches (plain dicts).

The fake API records every call and keeps what was written; the caches only change
when a test says the watch delivered something (`watch_*`), so each test decides
how far the watch lags behind the writes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from prunejob_operator import cache, manifests
from prunejob_operator.expectations import Expectations
from prunejob_operator.kubeapi import ApiError, ObjectRef
from prunejob_operator.reconciler import Reconciler
from prunejob_operator.records import record_of, summarize_job, summarize_pod
from prunejob_operator.settings import OperatorConfig

NS = "ml"


class FakeApi:
    """Keeps Jobs and statuses by name; `failures[verb]` are raised first, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], str] = {}  # resourceVersion of the last patch
        self.events: list[tuple[str, str, str]] = []  # (object name, type, reason)
        self.failures: dict[str, list[Exception]] = {}
        self._versions = itertools.count(100)

    def _maybe_fail(self, verb: str) -> None:
        pending = self.failures.get(verb)
        if pending:
            raise pending.pop(0)

    def verbs(self, verb: str) -> list[tuple[str, ...]]:
        return [call for call in self.calls if call[0] == verb]

    async def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        self.calls.append(("create_job", meta["name"]))
        self._maybe_fail("create_job")
        key = (meta["namespace"], meta["name"])
        if key in self.jobs:
            return None  # 409
        created = {**manifest, "metadata": {**meta, "resourceVersion": str(next(self._versions))}}
        self.jobs[key] = created
        return created

    async def set_job_suspended(self, namespace: str, name: str, suspended: bool) -> bool:
        self.calls.append(("set_job_suspended", name, str(suspended)))
        self._maybe_fail("set_job_suspended")
        if (namespace, name) not in self.jobs:
            return False
        self.jobs[namespace, name]["spec"]["suspend"] = suspended
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete_job", name))
        self._maybe_fail("delete_job")
        self.jobs.pop((namespace, name), None)

    async def patch_prunejob_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch_status", name, str(status.get("phase")), str(status["reason"])))
        self._maybe_fail("patch_status")
        self.statuses[namespace, name] = dict(status)
        self.versions[namespace, name] = str(next(self._versions))
        return {"metadata": {"resourceVersion": self.versions[namespace, name]}, "status": status}

    async def emit_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        self.events.append((ref.name, type, reason))


class Watch:
    """The three indices as kopf files them, fed by hand."""

    def __init__(self) -> None:
        self.prunejobs: dict[Any, list[Any]] = {}
        self.jobs: dict[Any, list[Any]] = {}
        self.pods: dict[Any, list[Any]] = {}
        self.view = cache.IndexedCache(self.prunejobs, self.jobs, self.pods)

    @staticmethod
    def _file(index: dict[Any, list[Any]], name: str, entries: Mapping[Any, Any]) -> None:
        """As kopf does: each key holds one value per object; a new one replaces the old."""
        for values in index.values():
            values[:] = [value for value in values if value.name != name]
        for key, value in entries.items():
            index.setdefault(key, []).append(value)

    def prunejob(self, body: dict[str, Any]) -> None:
        record = record_of(body)
        self._file(self.prunejobs, record.name, cache.prunejob_entries(record))

    def job(self, body: dict[str, Any]) -> None:
        summary = summarize_job(body)
        assert summary is not None
        self._file(self.jobs, summary.name, cache.job_entries(summary))

    def pod(self, job_name: str, body: dict[str, Any]) -> None:
        pod = summarize_pod(body)
        self._file(self.pods, pod.name, cache.pod_entries(NS, job_name, pod))


def prunejob_body(
    name: str,
    *,
    generation: int = 1,
    created: str = "2025-01-01T00:00:00Z",
    version: str = "1",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "prunejob.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": generation,
            "creationTimestamp": created,
            "resourceVersion": version,
        },
        "spec": {"model": "s3://models/in.keras", "output": f"s3://models/{name}.keras", **spec},
        "status": status or {},
    }


def job_body(
    prunejob: str, generation: int = 1, *, suspend: bool = False, complete: bool = False
) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "metadata": {
            "name": manifests.job_name(prunejob, generation),
            "namespace": NS,
            "labels": {manifests.LABEL_GENERATION: str(generation)},
            "annotations": {manifests.ANNOTATION_OWNER: prunejob},
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions},
    }


def running_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2025-01-01T00:00:05Z"},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "prune", "state": {"running": {}}}],
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    *watched: dict[str, Any], cap: int = 0, clock: Clock | None = None
) -> tuple[Reconciler, FakeApi, Watch, list[float]]:
    """A reconciler whose caches already hold `watched` (PruneJob and Job bodies)."""
    api, watch, slept = FakeApi(), Watch(), []
    for body in watched:
        (watch.prunejob if body.get("kind") == "PruneJob" else watch.job)(body)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    expectations = Expectations(clock=clock or Clock())
    reconciler = Reconciler(
        OperatorConfig(max_running_jobs=cap),
        api,
        watch.view,
        expectations=expectations,
        sleep=sleep,
        now=lambda: "2025-01-01T00:01:00Z",
    )
    return reconciler, api, watch, slept


def asynchronous(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function on a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def settle(reconciler: Reconciler) -> None:
    """Let retries and Event posts run to the end."""
    for _ in range(1000):
        if not reconciler.queue.busy() and not reconciler.events.pending():
            return
        await asyncio.sleep(0)
    raise AssertionError("the reconciler never settled")


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

    watch.pod("resnet-g1", running_pod("resnet-g1-abcde"))
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
async def test_a_superseded_job_that_never_started_is_deleted() -> None:
    reconciler, api, _, _ = make(
        prunejob_body("resnet", generation=3),
        job_body("resnet", 1, suspend=True),  # queued, never started: goes
        job_body("resnet", 2),  # running: left to finish
    )
    api.jobs[NS, "resnet-g1"] = job_body("resnet", 1, suspend=True)
    await reconciler.reconcile(NS, "resnet")
    assert api.verbs("delete_job") == [("delete_job", "resnet-g1")]
    assert api.verbs("create_job") == [("create_job", "resnet-g3")]


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
async def test_events_of_owned_objects_reconcile_the_owner_unless_deleted(event_type: str) -> None:
    reconciler, api, _, _ = make(prunejob_body("resnet"))
    await reconciler.owned_event(event_type, NS, "resnet")
    assert len(api.verbs("create_job")) == (0 if event_type == "DELETED" else 1)
