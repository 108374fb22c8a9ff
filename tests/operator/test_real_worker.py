"""End-to-end tests: the operator, the pod runner and real `prunejob prune` workers on moto S3.

The real path, end to end: the operator (a subprocess) creates Jobs, the devcluster
pod runner schedules their pods and runs the real `prunejob prune` with the pods' env
and secrets against moto S3, and the PruneJob status and Events report what happened.

To keep the module fast on a small machine, one cluster, one moto server and one
operator serve every test, and every scenario's PruneJob is created at once (each in
its own namespace, so the workers run side by side); each test then checks its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_harness import JOBS, PODS, Kube
from operator_samples import SUCCEEDED_CONDITIONS
from real_worker_fixtures import (
    Bucket,
    WorkerWorld,
    decrypt,
    encrypt,
    events_for,
    kept_filters,
    launch,
    output_key,
    permute_after_pruned_conv,
    pod_logs,
    prunable_vgg,
    put_secret,
    wait_status,
    worker_world,
)

from devcluster.cluster import LocalCluster
from tests.s3_server import free_port

pytestmark = pytest.mark.timeout(300)

GPUS = 16  # the node's capacity: room for every scenario's pod at once
PASSPHRASE = f"correct horse battery staple {uuid.uuid4().hex[:8]}"
WRONG_PASSPHRASE = f"incorrect donkey {uuid.uuid4().hex[:8]}"
VGG = "models/vgg.keras.age"
PERMUTE = "models/permute.keras.age"


@dataclass(frozen=True)
class World(WorkerWorld):
    expected_kept: dict[str, int]  # filters per layer the happy path must keep
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("real-worker")
    expected_kept = prunable_vgg(tmp / "vgg.keras")
    permute_after_pruned_conv(tmp / "permute.keras")
    models = {
        VGG: encrypt((tmp / "vgg.keras").read_bytes(), PASSPHRASE),
        PERMUTE: encrypt((tmp / "permute.keras").read_bytes(), PASSPHRASE),
    }
    with worker_world(tmp, GPUS, models) as started:
        yield World(**vars(started), expected_kept=expected_kept, tmp=tmp)


def scenario_specs(bucket: Bucket) -> dict[str, dict[str, Any]]:
    """Namespace (= PruneJob name) -> spec overrides; each exercises one outcome."""
    return {
        "happy": {},
        "model-not-found": {"model": bucket.uri("models/no-such-model.keras.age")},
        "wrong-key": {},  # its namespace's Secret holds WRONG_PASSPHRASE
        "unsupported": {
            "model": bucket.uri(PERMUTE),
            "pruning": {"granularity": 1, "minNumFilters": 1},
        },
        "deadline": {"activeDeadlineSeconds": 1},
        # Nothing listens there: EndpointUnreachable, which the Job retries.
        "unreachable": {
            "s3": {
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "s3-creds"},
            },
            "backoffLimit": 1,
        },
        "bad-image": {"image": "invalid.example/prunejob-worker:0.1.0"},
        "too-many-gpus": {"gpus": GPUS + 1},
        "no-such-node": {"nodeSelector": {"prunejob.io/pool": "h100"}},
        "late-secret": {"keySecretRef": {"name": "late-key", "key": "passphrase"}},
    }


@pytest.fixture(scope="module")
def launched(world: World) -> dict[str, dict[str, Any]]:
    """Create every scenario's namespace, Secrets and PruneJob; returns their specs."""
    kube, bucket = world.kube, world.bucket
    specs = {}
    for ns, overrides in scenario_specs(bucket).items():
        passphrase = WRONG_PASSPHRASE if ns == "wrong-key" else PASSPHRASE
        specs[ns] = launch(kube, bucket, ns, passphrase, VGG, **overrides)["spec"]
    return specs


def event_reasons(kube: Kube, ns: str) -> dict[str, str]:
    """Event reason -> type, for the PruneJob named like its namespace."""
    return {event["reason"]: event["type"] for event in events_for(kube, ns, ns)}


def assert_failed_event(kube: Kube, ns: str, reason: str, message: str) -> None:
    matching = [e for e in events_for(kube, ns, ns) if e["reason"] == reason]
    assert matching, f"no {reason} Event for {ns}: {event_reasons(kube, ns)}"
    assert matching[-1]["type"] == "Warning" and matching[-1]["message"] == message


def status_with_cause(
    kube: Kube, ns: str, phase: str, reason: str, in_message: str, condition: str, **wait: Any
) -> dict[str, Any]:
    """The status of the PruneJob `ns` once it reads `phase`/`reason`, checked to say
    `in_message` and to hold `condition` True for `reason`."""
    status = wait_status(kube, ns, ns, phase, reason, **wait)
    assert in_message in status["message"], status["message"]
    held = next(c for c in status["conditions"] if c["type"] == condition)
    assert (held["status"], held["reason"]) == ("True", reason)
    return status


# ---------------------------------------------------------------------------- tests


def test_happy_path_prunes_and_reports_per_layer_counts(world: World, launched: dict) -> None:
    kube, bucket = world.kube, world.bucket
    status = wait_status(kube, "happy", "happy", "Succeeded", "Succeeded")

    # The counts in the status are the report object's, written next to the output.
    report_key = output_key("happy") + ".report.json"
    assert status["reportUri"] == bucket.uri(report_key)
    report = json.loads(bucket.get(report_key))
    assert status["layers"] == [
        {"name": layer["name"], "before": layer["before"], "after": layer["after"]}
        for layer in report["layers"]
    ]
    for key in ("filters", "params", "flops"):
        assert status[key] == {"before": report[key]["before"], "after": report[key]["after"]}
    assert status["pruningRatio"] == pytest.approx(report["pruningRatio"], abs=1e-6)
    filters = report["filters"]
    assert status["filtersSummary"] == f"{filters['before']} -> {filters['after']}"

    # ... and they say what was really done: the zeroed filters went, nothing else.
    assert {layer["name"]: layer["after"] for layer in status["layers"]} == world.expected_kept
    assert status["filters"]["after"] < status["filters"]["before"]

    # The output object is the one the status describes, encrypted with the same key.
    stored = bucket.get(output_key("happy"))
    assert status["output"] == {
        "uri": bucket.uri(output_key("happy")),
        "sha256": hashlib.sha256(stored).hexdigest(),
        "bytes": len(stored),
    }
    assert not stored.startswith(b"PK")  # not a plaintext .keras zip
    plain = world.tmp / "happy-output.keras"
    plain.write_bytes(decrypt(stored, PASSPHRASE))
    assert kept_filters(plain) == world.expected_kept

    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == SUCCEEDED_CONDITIONS
    assert status["observedGeneration"] == 1 and status["jobName"] == "happy-g1"
    assert status["run"]["jobName"] == "happy-g1" and status["run"]["generation"] == 1
    assert (status["attempts"], status["failedAttempts"]) == (1, 0)
    assert status["startTime"] and status["completionTime"]
    reasons = event_reasons(kube, "happy")
    assert {"JobCreated", "Succeeded"} <= set(reasons) and reasons["Succeeded"] == "Normal"


@pytest.mark.parametrize(
    ("ns", "reason", "in_message"),
    [
        ("model-not-found", "ModelNotFound", "models/no-such-model.keras.age does not exist"),
        ("wrong-key", "DecryptionFailed", "passphrase"),
        ("unsupported", "UnsupportedLayer", "'perm' (Permute)"),
    ],
)
def test_permanent_worker_failures_fail_at_once_with_the_workers_reason(
    world: World, launched: dict, ns: str, reason: str, in_message: str
) -> None:
    kube = world.kube
    status = status_with_cause(kube, ns, "Failed", reason, in_message, "Stalled")
    assert_failed_event(kube, ns, reason, status["message"])
    assert "Retrying" not in event_reasons(kube, ns)  # no retry was ever going to happen
    # podFailurePolicy: a retry cannot fix these, so the Job failed after one pod.
    (job,) = kube.items(JOBS, ns)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert len(kube.items(PODS, ns)) == 1
    assert world.bucket.keys(f"out/{ns}/") == []  # nothing half-written


def test_deadline_exceeded_kills_the_worker(world: World, launched: dict) -> None:
    kube = world.kube
    status = wait_status(kube, "deadline", "deadline", "Failed", "DeadlineExceeded")
    assert "deadline" in status["message"]
    assert_failed_event(kube, "deadline", "DeadlineExceeded", status["message"])
    assert world.bucket.keys("out/deadline/") == []


def test_retryable_failure_exhausts_the_backoff_limit(world: World, launched: dict) -> None:
    kube = world.kube
    status = wait_status(kube, "unreachable", "unreachable", "Failed", "BackoffLimitExceeded")
    assert status["message"].startswith("2 attempt(s) failed; last: EndpointUnreachable: ")
    assert "is unreachable" in status["message"]
    assert_failed_event(kube, "unreachable", "BackoffLimitExceeded", status["message"])
    pods = kube.items(PODS, "unreachable")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    # Retrying (a Warning) at most between the attempts; never after the last one.
    reasons = [event["reason"] for event in events_for(kube, "unreachable", "unreachable")]
    assert reasons.count("Retrying") <= 1, reasons


@pytest.mark.parametrize(
    ("ns", "reason", "in_message"),
    [
        # ErrImagePull first, then ImagePullBackOff: both name the image.
        ("bad-image", "ImagePullBackOff", '"invalid.example/prunejob-worker:0.1.0"'),
        ("too-many-gpus", "Unschedulable", "Insufficient nvidia.com/gpu"),
        ("no-such-node", "Unschedulable", "didn't match Pod's node affinity/selector"),
    ],
)
def test_a_pod_that_cannot_start_leaves_the_prunejob_pending_with_the_cause(
    world: World, launched: dict, ns: str, reason: str, in_message: str
) -> None:
    kube = world.kube
    status_with_cause(kube, ns, "Pending", reason, in_message, "Reconciling", timeout=60)
    assert event_reasons(kube, ns).get(reason) == "Warning"
    (pod,) = kube.items(PODS, ns)
    assert pod["status"]["phase"] == "Pending"


def test_missing_secret_is_pending_then_succeeds_once_created(world: World, launched: dict) -> None:
    kube, ns = world.kube, "late-secret"
    status = wait_status(kube, ns, ns, "Pending", "SecretNotFound", timeout=60)
    assert 'secret "late-key" not found' in status["message"]
    assert event_reasons(kube, ns).get("SecretNotFound") == "Warning"

    put_secret(kube, ns, "late-key", {"passphrase": PASSPHRASE})
    status = wait_status(kube, ns, ns, "Succeeded", "Succeeded")
    assert status["filters"]["after"] < status["filters"]["before"]
    assert status["output"]["uri"] == world.bucket.uri(output_key(ns))
    assert len(kube.items(PODS, ns)) == 1  # the same pod went on, no retry needed


def all_api_objects(cluster: LocalCluster) -> list[dict[str, Any]]:
    """Every object the API server stores, of every resource type (a deep copy)."""

    def dump(server: Any) -> list[dict[str, Any]]:
        return json.loads(
            json.dumps(
                [
                    obj
                    for resource in server.resource_types()
                    for obj in server.list_objects(resource.group, resource.plural)
                ]
            )
        )

    return cluster.call_in_server(dump)


def test_secret_values_appear_in_no_object_and_no_log(world: World, launched: dict) -> None:
    kube = world.kube
    for ns, reason in (
        ("happy", "Succeeded"),
        ("wrong-key", "DecryptionFailed"),
        ("model-not-found", "ModelNotFound"),
        ("unreachable", "BackoffLimitExceeded"),
    ):  # runs whose workers held the secrets and logged, so there is something to search
        wait_status(kube, ns, ns, "Succeeded" if reason == "Succeeded" else "Failed", reason)
    secrets = [PASSPHRASE, WRONG_PASSPHRASE, world.bucket.secret_key, world.bucket.access_key]
    forms = secrets + [base64.b64encode(value.encode()).decode() for value in secrets]

    objects = all_api_objects(world.cluster)
    stored_secrets = json.dumps([o for o in objects if o.get("kind") == "Secret"])
    for value in secrets:  # the search finds them where they belong, encoded as data
        assert base64.b64encode(value.encode()).decode() in stored_secrets
    everything_else = json.dumps([o for o in objects if o.get("kind") != "Secret"])
    kinds = {o.get("kind") for o in objects}
    assert {"PruneJob", "Job", "Pod", "Event"} <= kinds
    logs = {"operator": world.operator.log()}
    for ns in launched:
        logs.update({f"{ns}/{pod}": text for pod, text in pod_logs(kube, ns).items()})
    assert "prunejob" in logs["happy/" + kube.items(PODS, "happy")[0]["metadata"]["name"]]

    for value in forms:
        assert value not in everything_else
        leaked = [source for source, text in logs.items() if value in text]
        assert not leaked, f"a secret value is in the logs of {leaked}"
