"""End-to-end tests of run semantics with real workers: reruns, overwrite, lost Jobs.

Run semantics end to end with real workers: the operator (a subprocess) creates Jobs,
the dev cluster's Job controller and kubelet run the real `prunejob prune` against moto
S3, and the PruneJob status says what happened.

- a rerun (`runId`) replaces the PruneJob's own earlier output without `overwrite`;
- an output written by someone else is refused (OutputExists) until `overwrite: true`
  and a rerun;
- a Job that finished while the operator was down and was then deleted (as its TTL
  does) still gets its result recorded by the restarted operator, and no new Job.

One cluster, one moto server and one operator for the module; each scenario in its own
namespace, all started at once so that the workers run side by side.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import JOBS, PJ, PODS, Kube, wait_for
from real_worker_fixtures import (
    Bucket,
    WorkerWorld,
    encrypt,
    launch,
    output_key,
    prunable_vgg,
    wait_status,
    worker_world,
)

pytestmark = pytest.mark.timeout(420)

PASSPHRASE = "a run of one's own"
MODEL = "models/vgg.keras.age"
OWNER_METADATA = "prunejob-owner"  # x-amz-meta-prunejob-owner, as the worker records it
FOREGROUND = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"}
SCENARIOS = ("rerun", "foreign", "lost")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerWorld]:
    tmp = tmp_path_factory.mktemp("real-worker-runs")
    prunable_vgg(tmp / "vgg.keras")
    models = {MODEL: encrypt((tmp / "vgg.keras").read_bytes(), PASSPHRASE)}
    with worker_world(tmp, 8, models) as started:
        yield started


@pytest.fixture(scope="module")
def launched(world: WorkerWorld) -> dict[str, str]:
    """Every scenario's namespace, Secrets and PruneJob; returns their uids."""
    kube, bucket = world.kube, world.bucket
    # Someone else's object sits where "foreign" writes (no owner recorded on it).
    bucket.put(output_key("foreign"), b"not this PruneJob's")
    uids = {}
    for ns in SCENARIOS:
        uids[ns] = launch(kube, bucket, ns, PASSPHRASE, MODEL)["metadata"]["uid"]
    return uids


def owner_of(bucket: Bucket, key: str) -> str | None:
    head = bucket.client().head_object(Bucket=bucket.name, Key=key)
    return (head.get("Metadata") or {}).get(OWNER_METADATA)


def rerun(kube: Kube, ns: str, run_id: str, **spec: Any) -> None:
    kube.patch(PJ, ns, {"spec": {"runId": run_id, **spec}}, ns)


def new_run_status(
    kube: Kube, ns: str, old_key: str, phase: str, reason: str, timeout: float = 240
) -> dict[str, Any]:
    """The status of the run after `old_key` once it reads `phase`/`reason`."""

    def check() -> dict[str, Any] | None:
        status = kube.status(ns, ns)
        run = status.get("run") or {}
        if run.get("key") not in (None, old_key) and (
            status.get("phase"),
            status.get("reason"),
        ) == (
            phase,
            reason,
        ):
            return status
        return None

    return wait_for(check, timeout=timeout, what=f"{ns}: a new run {phase}/{reason}")


def test_a_jobs_result_survives_the_job_lost_while_the_operator_was_down(
    world: WorkerWorld, launched: dict[str, str]
) -> None:
    kube, ns = world.kube, "lost"
    wait_for(lambda: kube.items(PODS, ns), timeout=60, what="the lost scenario's pod")
    world.operator.kill()
    try:

        def complete() -> bool:
            jobs = kube.items(JOBS, ns)
            conditions = (jobs[0].get("status") or {}).get("conditions") or [] if jobs else []
            return any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions
            )

        wait_for(complete, timeout=240, what="the Job finished while the operator is down")
        (job,) = kube.items(JOBS, ns)
        assert kube.status(ns, ns).get("phase") != "Succeeded"  # nobody recorded it yet
        # What ttlSecondsAfterFinished does: delete the Job (foreground).
        kube.request("DELETE", f"{JOBS.format(ns=ns)}/{job['metadata']['name']}", FOREGROUND)
        held = wait_for(
            lambda: [p for p in kube.items(PODS, ns) if p["metadata"].get("deletionTimestamp")],
            timeout=30,
            what="the pod held by the result finalizer",
        )
        assert all("prunejob.io/result" in p["metadata"]["finalizers"] for p in held)
        assert held[0]["status"]["phase"] == "Succeeded"
    finally:
        world.operator.start()
    status = wait_status(kube, ns, ns, "Succeeded", "Succeeded", timeout=120)
    stored = world.bucket.get(output_key(ns))
    assert status["output"]["sha256"] == hashlib.sha256(stored).hexdigest()
    assert status["filters"]["after"] < status["filters"]["before"]
    wait_for(lambda: not kube.items(PODS, ns), timeout=60, what="the pod released and gone")
    time.sleep(2)
    assert kube.items(JOBS, ns) == []  # the recorded run is not run again


def test_a_rerun_replaces_the_prunejobs_own_output_without_overwrite(
    world: WorkerWorld, launched: dict[str, str]
) -> None:
    kube, bucket, ns = world.kube, world.bucket, "rerun"
    first = wait_status(kube, ns, ns, "Succeeded", "Succeeded", timeout=240)
    assert owner_of(bucket, output_key(ns)) == launched[ns]
    rerun(kube, ns, "2")
    second = new_run_status(kube, ns, first["run"]["key"], "Succeeded", "Succeeded")
    assert second["jobName"] == "rerun-g2" and second["attempts"] == 1
    stored = bucket.get(output_key(ns))
    assert second["output"]["sha256"] == hashlib.sha256(stored).hexdigest()
    assert owner_of(bucket, output_key(ns)) == launched[ns]
    (job,) = [j for j in kube.items(JOBS, ns) if j["metadata"]["name"] == "rerun-g2"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--overwrite" not in args and args[args.index("--owner") + 1] == launched[ns]


def test_an_output_written_by_someone_else_is_refused_until_overwrite(
    world: WorkerWorld, launched: dict[str, str]
) -> None:
    kube, bucket, ns = world.kube, world.bucket, "foreign"
    refused = wait_status(kube, ns, ns, "Failed", "OutputExists", timeout=240)
    assert bucket.get(output_key(ns)) == b"not this PruneJob's"  # untouched
    # overwrite is operational: the failure stays recorded ...
    kube.patch(PJ, ns, {"spec": {"overwrite": True}}, ns)
    wait_for(lambda: kube.status(ns, ns).get("observedGeneration") == 2, what="the edit observed")
    assert kube.status(ns, ns)["reason"] == "OutputExists"
    assert [j["metadata"]["name"] for j in kube.items(JOBS, ns)] == ["foreign-g1"]
    # ... until a rerun, which may now replace it.
    rerun(kube, ns, "after-overwrite")
    done = new_run_status(kube, ns, refused["run"]["key"], "Succeeded", "Succeeded")
    assert done["output"]["sha256"] == hashlib.sha256(bucket.get(output_key(ns))).hexdigest()
    assert owner_of(bucket, output_key(ns)) == launched[ns]
