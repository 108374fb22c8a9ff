"""The Job manifest built from a PruneJob spec."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from prunejob_contract.errors import EXIT_CODES
from prunejob_operator import manifests, models


def build(
    spec: dict[str, Any],
    *,
    name: str = "resnet",
    suspend: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return manifests.build_job(
        name=name,
        namespace="ml",
        uid="uid-1",
        generation=3,
        created_at="2025-01-01T00:00:00Z",
        spec=models.parse_spec(
            {"model": "s3://inputs/m.keras", "output": "s3://outputs/m.keras", **spec}
        ),
        default_image="worker:1",
        suspend=suspend,
        run_key="0123456789abcdef",
        prunejob_labels=labels,
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_job_name_is_deterministic_and_short() -> None:
    assert manifests.job_name("resnet", 3) == "resnet-g3"
    long = "a" * 200
    name = manifests.job_name(long, 12)
    assert len(name) <= 63 and name.endswith("-g12")
    assert name == manifests.job_name(long, 12)
    assert name != manifests.job_name("a" * 199 + "b", 12)


def test_owner_reference_and_labels() -> None:
    job = build({})
    metadata = job["metadata"]
    assert metadata["name"] == "resnet-g3" and metadata["namespace"] == "ml"
    (owner,) = metadata["ownerReferences"]
    assert owner == {
        "apiVersion": "prunejob.io/v1alpha1",
        "kind": "PruneJob",
        "name": "resnet",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for labels in (metadata["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["prunejob.io/name"] == "resnet"
        assert labels["prunejob.io/generation"] == "3"
        assert labels["prunejob.io/run-key"] == "0123456789abcdef"
        assert labels["app.kubernetes.io/managed-by"] == "prunejob"
    template = job["spec"]["template"]["metadata"]
    for notes in (metadata["annotations"], template["annotations"]):
        assert notes["prunejob.io/prunejob"] == "resnet"
        assert notes["prunejob.io/prunejob-uid"] == "uid-1"
    assert template["annotations"]["prunejob.io/backoff-limit"] == "2"


def test_pods_hold_the_result_finalizer() -> None:
    template = build({})["spec"]["template"]["metadata"]
    assert template["finalizers"] == ["prunejob.io/result"] == [manifests.RESULT_FINALIZER]


def test_the_worker_may_replace_the_prunejobs_own_output() -> None:
    args = container(build({}))["args"]
    assert args[args.index("--owner") + 1] == "uid-1"
    assert "--overwrite" not in args


def test_worker_command_and_flags() -> None:
    job = build(
        {
            "pruning": {
                "normalizer": "L2",
                "equalizationCriterion": "geometric_mean",
                "granularity": 4,
                "threshold": 0.25,
                "minNumFilters": 8,
                "excludedLayers": ["conv1", "head"],
                "targetRatio": 0.5,
            },
            "overwrite": True,
            "s3": {"endpoint": "http://minio:9000", "region": "eu-west-1"},
        }
    )
    main = container(job)
    assert main["command"] == ["prunejob", "prune"]
    args = main["args"]
    pairs = dict(itertools.pairwise(args[:-3]))
    assert pairs["-m"] == "s3://inputs/m.keras" and pairs["-o"] == "s3://outputs/m.keras"
    assert pairs["-n"] == "L2" and pairs["-eq"] == "geometric_mean"
    assert pairs["-pg"] == "4" and pairs["-pth"] == "0.25" and pairs["-nf"] == "8"
    assert pairs["--target-ratio"] == "0.5"
    assert pairs["--s3-endpoint"] == "http://minio:9000"
    assert pairs["--termination-log"] == main["terminationMessagePath"]
    assert "--overwrite" in args
    assert args[-3:] == ["-el", "conv1", "head"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in main["env"]
    assert main["image"] == "worker:1"


def test_secrets_only_by_reference() -> None:
    job = build(
        {
            "keySecretRef": {"name": "model-key", "key": "passphrase"},
            "s3": {"credentialsSecretRef": {"name": "s3-creds"}},
        }
    )
    env = {item["name"]: item for item in container(job)["env"]}
    assert env["PRUNEJOB_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "model-key",
        "key": "passphrase",
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": name}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "-k" not in container(job)["args"] and "--key" not in container(job)["args"]


def test_no_key_no_credentials_no_secret_env() -> None:
    env = container(build({}))["env"]
    assert not [item for item in env if "valueFrom" in item]


def test_restricted_pod_security() -> None:
    job = build({})
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(job)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]
    assert {"name": "TMPDIR", "value": "/scratch"} in container(job)["env"]


def test_pod_settings_pass_through() -> None:
    job = build(
        {
            "image": "my/worker:2",
            "gpus": 2,
            "resources": {"limits": {"memory": "8Gi"}, "requests": {"cpu": "2"}},
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "team", "operator": "Equal", "value": "ml"}],
            "affinity": {"nodeAffinity": {"x": 1}},
            "priorityClassName": "batch-low",
            "serviceAccountName": "pruner",
            "imagePullSecrets": [{"name": "registry"}],
            "backoffLimit": 5,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
        }
    )
    pod = job["spec"]["template"]["spec"]
    assert container(job)["image"] == "my/worker:2"
    assert container(job)["resources"] == {
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "2"},
        "requests": {"cpu": "2"},
    }
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert {"key": "team", "operator": "Equal", "value": "ml"} in pod["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert pod["priorityClassName"] == "batch-low"
    assert pod["serviceAccountName"] == "pruner"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert job["spec"]["backoffLimit"] == 5
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_zero_gpus_sets_no_gpu_limit() -> None:
    job = build({"gpus": 0})
    assert "nvidia.com/gpu" not in container(job)["resources"].get("limits", {})
    assert "tolerations" not in job["spec"]["template"]["spec"]


@pytest.mark.parametrize("suspend", [True, False])
def test_suspend_follows_the_queue(suspend: bool) -> None:
    job = build({}, suspend=suspend)
    assert job["spec"]["suspend"] is suspend
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_kueue_jobs_are_suspended_with_the_queue_label() -> None:
    job = build({"queueName": "gpu-queue"}, suspend=False)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"


@pytest.mark.parametrize(
    ("spec", "labels", "queue", "priority"),
    [
        ({}, {"kueue.x-k8s.io/queue-name": "team-a"}, "team-a", None),
        (
            {},
            {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "urgent"},
            "team-a",
            "urgent",
        ),
        ({"queueName": "alias"}, {"kueue.x-k8s.io/priority-class": "low"}, "alias", "low"),
        ({"queueName": "alias"}, {"kueue.x-k8s.io/queue-name": "label"}, "label", None),
        ({}, {"kueue.x-k8s.io/priority-class": "urgent"}, None, "urgent"),
    ],
)
def test_kueue_labels_of_the_prunejob_are_copied_to_the_job(
    spec: dict, labels: dict, queue: str | None, priority: str | None
) -> None:
    job = build(spec, labels={**labels, "team": "not-copied"})
    job_labels = job["metadata"]["labels"]
    assert job_labels.get("kueue.x-k8s.io/queue-name") == queue
    assert job_labels.get("kueue.x-k8s.io/priority-class") == priority
    assert "team" not in job_labels
    assert job["spec"]["suspend"] is (queue is not None)  # Kueue admits it


def test_permanent_worker_errors_fail_the_job_at_once() -> None:
    rules = build({})["spec"]["podFailurePolicy"]["rules"]
    codes = rules[0]["onExitCodes"]["values"]
    assert rules[0]["action"] == "FailJob"
    assert EXIT_CODES["ModelNotFound"] in codes and EXIT_CODES["DecryptionFailed"] in codes
    assert EXIT_CODES["EndpointUnreachable"] not in codes  # transient: retried
    assert 1 not in codes


def test_long_names_fit_in_labels() -> None:
    name = "x" * 100
    job = build({}, name=name)
    assert len(job["metadata"]["name"]) <= 63
    assert len(job["metadata"]["labels"]["prunejob.io/name"]) <= 63
    assert job["metadata"]["annotations"]["prunejob.io/prunejob"] == name
