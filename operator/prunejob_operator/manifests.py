"""PruneJob spec -> batch/v1 Job manifest. Pure functions, no API calls.

The Job runs the one worker code path, `prunejob prune`, with S3 URIs. Secrets reach
the pod only through `secretKeyRef` env vars, so their values never appear in the
Job, the PruneJob, events or logs; the operator itself never reads a Secret.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from prunejob_contract import errors, worker
from prunejob_contract.settings import PruneSettings
from prunejob_contract.termination import TERMINATION_LOG
from prunejob_operator.models import API_VERSION, KIND, PruneJobSpec

LABEL_NAME = "prunejob.io/name"
LABEL_GENERATION = "prunejob.io/generation"  # the generation that started the run
LABEL_RUN_KEY = "prunejob.io/run-key"  # runs.run_key of the spec the Job runs
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "prunejob"
# Kueue's labels on a workload; copied from the PruneJob's labels to its Job.
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
KUEUE_LABELS = (LABEL_KUEUE_QUEUE, LABEL_KUEUE_PRIORITY)
# Annotations carry what labels cannot: the full PruneJob name (labels stop at 63
# characters), its uid, the PruneJob's creation time (the concurrency queue's order),
# and on the pods the Job's backoffLimit (read when the Job itself is gone).
ANNOTATION_OWNER = "prunejob.io/prunejob"
ANNOTATION_OWNER_UID = "prunejob.io/prunejob-uid"
ANNOTATION_QUEUED_AT = "prunejob.io/queued-at"
ANNOTATION_BACKOFF_LIMIT = "prunejob.io/backoff-limit"
# Held on every worker pod until the operator has recorded the run's result in the
# PruneJob status (as the Job controller's batch.kubernetes.io/job-tracking): a finished
# pod and its termination message outlive its Job (TTL, a person, garbage collection).
RESULT_FINALIZER = "prunejob.io/result"

CONTAINER_NAME = "prune"
SCRATCH_DIR = "/scratch"
WORKER_UID = 65532  # the `nonroot` user of distroless-style images; the Dockerfile uses it too
MAX_NAME = 63  # pods carry the Job name in a label: 63 characters at most

# Worker failures that a retry cannot fix fail the Job at once (podFailurePolicy)
# instead of burning `backoffLimit` retries; EndpointUnreachable and internal errors
# stay retryable. Which are permanent is the contract's decision.
PERMANENT_EXIT_CODES: tuple[int, ...] = errors.PERMANENT_EXIT_CODES


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def job_name(prunejob_name: str, generation: int) -> str:
    """`<name>-g<generation>`; names too long for a label are cut and get a hash
    of the full name, so the result stays unique and deterministic."""
    suffix = f"-g{generation}"
    name = prunejob_name + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = "-" + _short_hash(prunejob_name)
    keep = MAX_NAME - len(suffix) - len(digest)
    return prunejob_name[:keep].rstrip("-.") + digest + suffix


def label_value(text: str) -> str:
    """A label-safe value (<= 63 characters) that still identifies `text`."""
    if len(text) <= 63:
        return text
    return re.sub(r"[^A-Za-z0-9]+$", "", text[:54]) + "-" + _short_hash(text)


def kueue_queue(spec: PruneJobSpec, labels: Mapping[str, str]) -> str | None:
    """The Kueue LocalQueue of a PruneJob: its queue-name label, else `spec.queueName`."""
    return labels.get(LABEL_KUEUE_QUEUE) or spec.queue_name or None


def worker_args(spec: PruneJobSpec, owner: str | None = None) -> list[str]:
    """The `prunejob prune` arguments for a spec (never any secret); `owner` (the
    PruneJob's uid) lets a run replace an output that an earlier run of it wrote."""
    pruning = spec.pruning
    return worker.WorkerCall(
        model=spec.model,
        output=spec.output,
        settings=PruneSettings(
            normalizer=pruning.normalizer,
            equalization_criterion=pruning.equalization_criterion,
            granularity=pruning.granularity,
            threshold=pruning.threshold,
            min_num_filters=pruning.min_num_filters,
            excluded_layers=tuple(pruning.excluded_layers),
        ),
        target_ratio=pruning.target_ratio,
        overwrite=spec.overwrite,
        owner=owner,
        s3_endpoint=spec.s3.endpoint,
        termination_log=TERMINATION_LOG,
    ).argv()


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def worker_env(spec: PruneJobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "TMPDIR", "value": SCRATCH_DIR},
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "KERAS_HOME", "value": f"{SCRATCH_DIR}/.keras"},
        {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.key_secret_ref is not None:
        env.append(_secret_env(worker.KEY_ENV, spec.key_secret_ref.name, spec.key_secret_ref.key))
    credentials = spec.s3.credentials_secret_ref
    if credentials is not None:
        env.append(_secret_env("AWS_ACCESS_KEY_ID", credentials.name, "AWS_ACCESS_KEY_ID"))
        env.append(_secret_env("AWS_SECRET_ACCESS_KEY", credentials.name, "AWS_SECRET_ACCESS_KEY"))
        env.append(
            _secret_env("AWS_SESSION_TOKEN", credentials.name, "AWS_SESSION_TOKEN", optional=True)
        )
    if spec.s3.region:
        env.append({"name": "AWS_REGION", "value": spec.s3.region})
    return env


def worker_resources(spec: PruneJobSpec) -> dict[str, Any]:
    """spec.resources plus the GPU limit (GPUs are limits-only in Kubernetes)."""
    # Quantities are strings on the wire (the API server returns them so).
    limits = {name: str(value) for name, value in spec.resources.limits.items()}
    requests = {name: str(value) for name, value in spec.resources.requests.items()}
    if spec.gpus > 0:
        limits["nvidia.com/gpu"] = str(spec.gpus)
        requests.pop("nvidia.com/gpu", None)
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return resources


RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    created_at: str,
    spec: PruneJobSpec,
    default_image: str,
    suspend: bool,
    run_key: str,
    prunejob_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job of the run `run_key` of a PruneJob, started at `generation`.

    `suspend`: create it suspended (the operator's concurrency queue unsuspends it);
    with a Kueue queue (label or `spec.queueName`) it is always suspended and Kueue
    admits it. The PruneJob's Kueue labels are copied to the Job.
    """
    labels = {
        LABEL_NAME: label_value(name),
        LABEL_GENERATION: str(generation),
        LABEL_RUN_KEY: run_key,
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "prunejob-worker",
        "app.kubernetes.io/instance": label_value(name),
    }
    annotations = {
        ANNOTATION_OWNER: name,
        ANNOTATION_OWNER_UID: uid,
        ANNOTATION_QUEUED_AT: created_at,
    }
    pod_annotations = {**annotations, ANNOTATION_BACKOFF_LIMIT: str(spec.backoff_limit)}
    job_labels = dict(labels)
    source_labels = prunejob_labels or {}
    for key in KUEUE_LABELS:
        if source_labels.get(key):
            job_labels[key] = source_labels[key]
    queue = kueue_queue(spec, source_labels)
    if queue:
        job_labels[LABEL_KUEUE_QUEUE] = queue
        suspend = True

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The worker talks to S3 only; it needs no Kubernetes API token.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": RESTRICTED_POD_SECURITY,
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": spec.image or default_image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(worker.COMMAND),
                "args": worker_args(spec, owner=uid),
                "env": worker_env(spec),
                "resources": worker_resources(spec),
                "securityContext": RESTRICTED_CONTAINER_SECURITY,
                "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    if spec.gpus > 0:
        # The usual taint on GPU nodes; harmless where absent.
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    if spec.tolerations:
        pod_spec["tolerations"] = pod_spec.get("tolerations", []) + [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]

    job_spec: dict[str, Any] = {
        "suspend": suspend,
        "backoffLimit": spec.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": list(PERMANENT_EXIT_CODES),
                    },
                },
                # A pod evicted or preempted is not the worker's fault: retry for free.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": pod_annotations,
                "finalizers": [RESULT_FINALIZER],
            },
            "spec": pod_spec,
        },
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, generation),
            "namespace": namespace,
            "labels": job_labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
