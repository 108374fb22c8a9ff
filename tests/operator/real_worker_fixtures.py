"""Helpers of the real-worker tests: S3 buckets, encrypted models, status waits with evidence.

Helpers for test_real_worker.py and test_real_worker_runs.py: moto S3, tiny encrypted
models, the module's cluster with the operator, a scenario's namespace with its Secrets
and PruneJob, and waiting on PruneJob statuses with the evidence (pod logs, events) in
the failure message.

Everything here is real: moto in server mode over HTTP, Keras models saved to real
files and encrypted with the pruner's own age implementation, the devcluster API.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operator_harness import EVENTS, PJ, PODS, SECRETS, ApiError, Kube, OperatorProcess, prunejob

from devcluster.cluster import LocalCluster
from pruner.io import age
from tests.s3_server import moto_server

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REGION = "us-east-1"
# Low scrypt cost for the inputs we encrypt here (the worker accepts any valid one);
# the worker encrypts its output with age's default cost, as in production.
INPUT_WORK_FACTOR = 10
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Bucket:
    """One bucket on the moto endpoint, with the credentials the pods get from a Secret."""

    endpoint: str
    name: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.name, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=self.name, Key=key)["Body"].read())

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))


def new_bucket(endpoint: str) -> Bucket:
    bucket = Bucket(
        endpoint=endpoint,
        name=f"rw-{uuid.uuid4().hex[:10]}",
        access_key=f"AKIA{uuid.uuid4().hex[:16].upper()}",
        secret_key=f"aws-secret/{uuid.uuid4().hex}+",
    )
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


def encrypt(data: bytes, passphrase: str) -> bytes:
    out = io.BytesIO()
    age.encrypt_stream(io.BytesIO(data), out, passphrase, work_factor=INPUT_WORK_FACTOR)
    return out.getvalue()


def decrypt(data: bytes, passphrase: str) -> bytes:
    out = io.BytesIO()
    age.decrypt_stream(io.BytesIO(data), out, passphrase)
    return out.getvalue()


# -- models ----------------------------------------------------------------------------

# What the happy-path PruneJob asks for, and the filters we zero so it has work to do.
PRUNING = {"threshold": 0.1, "minNumFilters": 4, "granularity": 4}
ZEROED = list(range(8))


def prunable_vgg(path: Path) -> dict[str, int]:
    """Save a small VGG whose filters 0-7 are zero in every hidden layer; returns the
    filter count each layer should keep under PRUNING (the output layer keeps all)."""
    from tests.pruner.builders import randomize_weights, small_vgg, zero_in_every_layer

    model = randomize_weights(small_vgg(), seed=3)
    kept = zero_in_every_layer(model, ZEROED, keep=["logits"])
    model.save(path)
    return {name: len(indices) for name, indices in kept.items()}


def permute_after_pruned_conv(path: Path) -> None:
    """A conv whose filter 1 is zero, then a Permute that moves the channel axis: the
    pruner must refuse it (UnsupportedLayer), not produce a wrong model."""
    import keras
    from keras import layers

    from tests.pruner.builders import randomize_weights, zero_filters

    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="c1")(inputs)
    x = layers.Permute((3, 1, 2), name="perm")(x)
    outputs = layers.Dense(2, name="out")(layers.Flatten(name="flat")(x))
    model = randomize_weights(keras.Model(inputs, outputs))
    zero_filters(model, {"c1": [1]})
    model.save(path)


def kept_filters(path: Path) -> dict[str, int]:
    """Output filters per Conv2D/Dense layer of a saved model."""
    import keras

    model = keras.models.load_model(path)
    return {
        layer.name: int(layer.kernel.shape[-1])
        for layer in model.layers
        if type(layer).__name__ in ("Conv2D", "Dense")
    }


# -- cluster helpers --------------------------------------------------------------------


def put_secret(kube: Kube, ns: str, name: str, data: dict[str, str]) -> None:
    kube.create(SECRETS, {"metadata": {"name": name}, "stringData": data}, ns)


@dataclass(frozen=True)
class WorkerWorld:
    """What a real-worker module shares among its tests: cluster, bucket, operator."""

    cluster: LocalCluster
    kube: Kube
    bucket: Bucket
    operator: OperatorProcess


@contextlib.contextmanager
def worker_world(tmp: Path, gpus: int, models: Mapping[str, bytes]) -> Iterator[WorkerWorld]:
    """moto S3 with a bucket holding `models` (key -> bytes), a dev cluster that runs pods
    on a node of `gpus` GPUs, and the operator against it (its log in `tmp`)."""
    with (
        moto_server() as endpoint,
        LocalCluster(
            crd_paths=[REPO / "crds"], run_pods=True, gpus=gpus, pod_retry_interval=0.5
        ) as cluster,
    ):
        bucket = new_bucket(endpoint)
        for key, data in models.items():
            bucket.put(key, data)
        operator = OperatorProcess(cluster.kubeconfig_path, tmp / "operator.log").start()
        try:
            yield WorkerWorld(cluster, Kube(cluster.url), bucket, operator)
        finally:
            operator.stop()


def output_key(ns: str) -> str:
    """Where the scenario in namespace `ns` writes its pruned model."""
    return f"out/{ns}/vgg-pruned.keras.age"


def launch(
    kube: Kube, bucket: Bucket, ns: str, passphrase: str, model: str, /, **overrides: Any
) -> dict[str, Any]:
    """In a new namespace `ns`: the Secrets (`passphrase`, the bucket's credentials) and a
    PruneJob named `ns` that prunes `model` into output_key(ns), spec `overrides` on top
    (positional-only parameters: an override may be `model` too);
    returns the PruneJob as created."""
    kube.namespace(ns)
    put_secret(kube, ns, "model-key", {"passphrase": passphrase})
    put_secret(
        kube,
        ns,
        "s3-creds",
        {"AWS_ACCESS_KEY_ID": bucket.access_key, "AWS_SECRET_ACCESS_KEY": bucket.secret_key},
    )
    body = prunejob(ns)
    body["spec"] = {
        "model": bucket.uri(model),
        "output": bucket.uri(output_key(ns)),
        "keySecretRef": {"name": "model-key", "key": "passphrase"},
        "s3": {
            "endpoint": bucket.endpoint,
            "region": REGION,
            "credentialsSecretRef": {"name": "s3-creds"},
        },
        "pruning": PRUNING,
        **overrides,
    }
    return kube.create(PJ, body, ns)


def pod_logs(kube: Kube, ns: str) -> dict[str, str]:
    """Every pod's log in `ns` through the API (`kubectl logs`), by pod name."""
    logs: dict[str, str] = {}
    for pod in kube.items(PODS, ns):
        name = pod["metadata"]["name"]
        url = f"{kube.url}{PODS.format(ns=ns)}/{name}/log"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                logs[name] = response.read().decode(errors="replace")
        except OSError as err:  # a pod that never started has no log
            logs[name] = f"<no log: {err}>"
    return logs


def events_for(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        event
        for event in kube.items(EVENTS, ns)
        if event["involvedObject"].get("kind") == "PruneJob"
        and event["involvedObject"].get("name") == name
    ]


def evidence(kube: Kube, ns: str, name: str) -> str:
    """What a failing assertion should show: status, events and pod logs."""
    try:
        status = kube.status(name, ns)
        reasons = [(e["reason"], e.get("message", "")) for e in events_for(kube, ns, name)]
        logs = "\n".join(f"--- {pod}\n{text[-3000:]}" for pod, text in pod_logs(kube, ns).items())
    except ApiError as err:
        return f"<cannot read the evidence: {err}>"
    return f"status={status}\nevents={reasons}\npod logs:\n{logs}"


def wait_status(
    kube: Kube, ns: str, name: str, phase: str, reason: str, timeout: float = 180
) -> dict[str, Any]:
    """The status once it reads `phase`/`reason`; fails at once on another terminal
    state (no point in waiting for it to change) or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = kube.status(name, ns)
        if (status.get("phase"), status.get("reason")) == (phase, reason):
            return status
        if (
            status.get("phase") in TERMINAL
            and status.get("observedGeneration")
            == (kube.prunejob(name, ns)["metadata"]["generation"])
        ):
            break
        time.sleep(0.2)
    raise AssertionError(
        f"{ns}/{name}: wanted {phase}/{reason}, got {status.get('phase')}/"
        f"{status.get('reason')}\n{evidence(kube, ns, name)}"
    )
