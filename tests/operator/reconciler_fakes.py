"""Fakes for driving the Reconciler without kopf: a fake KubeApi and watch caches.

The fake API records every call and keeps what was written; the caches only change
when a test says the watch delivered something (`Watch.*`), so each test decides
how far the watch lags behind the writes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prunejob_operator import cache, manifests
from prunejob_operator.expectations import Expectations
from prunejob_operator.kubeapi import ObjectRef
from prunejob_operator.reconciler import Reconciler
from prunejob_operator.records import (
    record_of,
    summarize_job,
    summarize_pod,
    summarize_priority_class,
)
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

    async def remove_pod_finalizer(
        self, namespace: str, name: str, finalizer: str, *, finalizers: Sequence[str], version: str
    ) -> bool:
        self.calls.append(("release", name))
        self._maybe_fail("release")
        return True

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
    """The indices as kopf files them, fed by hand."""

    def __init__(self) -> None:
        self.prunejobs: dict[Any, list[Any]] = {}
        self.jobs: dict[Any, list[Any]] = {}
        self.pods: dict[Any, list[Any]] = {}
        self.classes: dict[Any, list[Any]] = {}
        self.view = cache.IndexedCache(self.prunejobs, self.jobs, self.pods, self.classes)

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

    def priority_class(self, name: str, value: int, *, default: bool = False) -> None:
        body = {"metadata": {"name": name}, "value": value, "globalDefault": default}
        item = summarize_priority_class(body)
        self._file(self.classes, name, cache.priority_class_entries(item))

    def gone(self, name: str) -> None:
        """The DELETED event of the object `name` (a Job or a Pod)."""
        for index in (self.jobs, self.pods):
            for values in index.values():
                values[:] = [value for value in values if value.name != name]


def prunejob_body(
    name: str,
    *,
    generation: int = 1,
    created: str = "2025-01-01T00:00:00Z",
    version: str = "1",
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    uid: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "prunejob.io/v1alpha1",
        "kind": "PruneJob",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid or f"uid-{name}",
            "generation": generation,
            "creationTimestamp": created,
            "resourceVersion": version,
            "labels": labels or {},
        },
        "spec": {"model": "s3://models/in.keras", "output": f"s3://models/{name}.keras", **spec},
        "status": status or {},
    }


def key_of(body: dict[str, Any]) -> str:
    key = record_of(body).run_key
    assert key is not None
    return key


def job_body(
    prunejob: str,
    generation: int = 1,
    *,
    suspend: bool = False,
    complete: bool = False,
    failed: str | None = None,
    key: str | None = None,
    kueue: bool = False,
    deleting: bool = False,
    failed_at: str | None = None,
    failed_pods: int = 0,
) -> dict[str, Any]:
    """A Job of PruneJob `prunejob` created at `generation`; `key` defaults to the run key
    of `prunejob_body(prunejob)` ("" for a Job of an operator before run keys); `failed`
    is the Failed condition's reason (`failed_at` its time), `failed_pods` status.failed."""
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    if failed:
        condition = {"type": "Failed", "status": "True", "reason": failed}
        if failed_at:
            condition["lastTransitionTime"] = failed_at
        conditions.append(condition)
    labels = {
        manifests.LABEL_GENERATION: str(generation),
        manifests.LABEL_RUN_KEY: key_of(prunejob_body(prunejob)) if key is None else key,
    }
    if kueue:
        labels[manifests.LABEL_KUEUE_QUEUE] = "gpu"
    name = manifests.job_name(prunejob, generation)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "labels": labels,
        "annotations": {manifests.ANNOTATION_OWNER: prunejob},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T00:00:30Z"
    return {
        "metadata": metadata,
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions, **({"failed": failed_pods} if failed_pods else {})},
    }


def pod_body(
    name: str,
    job: dict[str, Any],
    *,
    phase: str = "Running",
    message: str = "",
    deleting: bool = False,
    finalizer: bool = True,
    owner_uid: str | None = None,
    created: str = "2025-01-01T00:00:05Z",
) -> dict[str, Any]:
    """A pod of `job` (as the Job controller makes it from the template)."""
    prunejob = job["metadata"]["annotations"][manifests.ANNOTATION_OWNER]
    if phase == "Running":
        state: dict[str, Any] = {"running": {}}
    elif phase in ("Succeeded", "Failed"):
        code = 0 if phase == "Succeeded" else 10
        state = {"terminated": {"exitCode": code, "message": message}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    metadata: dict[str, Any] = {
        "name": name,
        "creationTimestamp": created,
        "resourceVersion": "7",
        "annotations": {
            manifests.ANNOTATION_OWNER: prunejob,
            manifests.ANNOTATION_OWNER_UID: owner_uid or f"uid-{prunejob}",
        },
        "ownerReferences": [
            {"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}
        ],
        "finalizers": [manifests.RESULT_FINALIZER] if finalizer else [],
    }
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T00:00:30Z"
    return {
        "metadata": metadata,
        "status": {"phase": phase, "containerStatuses": [{"name": "prune", "state": state}]},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    *watched: dict[str, Any],
    cap: int = 0,
    clock: Clock | None = None,
    now: Callable[[], str] = lambda: "2025-01-01T00:01:00Z",
) -> tuple[Reconciler, FakeApi, Watch, list[float]]:
    """A reconciler whose caches already hold `watched` (PruneJob and Job bodies); `now`
    is its wall clock (status timestamps, bounded waits)."""
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
        now=now,
    )
    return reconciler, api, watch, slept


async def settle(reconciler: Reconciler) -> None:
    """Let retries and Event posts run to the end."""
    for _ in range(1000):
        if not reconciler.queue.busy() and not reconciler.events.pending():
            return
        await asyncio.sleep(0)
    raise AssertionError("the reconciler never settled")
