"""Run identity: which spec edits start a new run (the field table) and the run key."""

from __future__ import annotations

from typing import Any

import pytest

from prunejob_operator import crd, models, runs

BASE: dict[str, Any] = {
    "model": "s3://models/in/resnet.keras.age",
    "output": "s3://models/out/resnet.keras.age",
    "keySecretRef": {"name": "model-key", "key": "passphrase"},
    "s3": {
        "endpoint": "http://minio:9000",
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "s3"},
    },
    "pruning": {"threshold": 0.3, "excludedLayers": ["head", "stem"]},
    "gpus": 1,
}


def key(**changes: Any) -> str:
    spec = {**BASE, **changes}
    return runs.run_key(models.parse_spec({k: v for k, v in spec.items() if v is not None}))


# (what the edit is, the spec fields it sets, whether it starts a new run)
EDITS: list[tuple[str, dict[str, Any], bool]] = [
    # operational: how, where, with which identity the run executes
    ("ttl", {"ttlSecondsAfterFinished": 60}, False),
    ("deadline", {"activeDeadlineSeconds": 3600}, False),
    ("backoff", {"backoffLimit": 5}, False),
    ("priority", {"priorityClassName": "batch-high"}, False),
    ("queue", {"queueName": "gpu"}, False),
    ("suspend", {"suspend": True}, False),
    ("node selector", {"nodeSelector": {"pool": "a100"}}, False),
    ("tolerations", {"tolerations": [{"key": "gpu", "operator": "Exists"}]}, False),
    ("affinity", {"affinity": {"nodeAffinity": {}}}, False),
    ("resources", {"resources": {"limits": {"memory": "16Gi"}}}, False),
    ("gpus", {"gpus": 2}, False),
    ("service account", {"serviceAccountName": "pruner"}, False),
    ("pull secrets", {"imagePullSecrets": [{"name": "registry"}]}, False),
    ("credentials", {"s3": {**BASE["s3"], "credentialsSecretRef": {"name": "other"}}}, False),
    ("overwrite", {"overwrite": True}, False),
    # defaults written out, or a list in another order, are the same run
    (
        "explicit defaults",
        {"pruning": {**BASE["pruning"], "granularity": 8, "normalizer": "max"}},
        False,
    ),
    (
        "excluded reordered",
        {"pruning": {"threshold": 0.3, "excludedLayers": ["stem", "head"]}},
        False,
    ),
    ("empty runId", {"runId": ""}, False),
    # result-defining: what is pruned, how, with which key and worker, to where
    ("model", {"model": "s3://models/in/other.keras.age"}, True),
    ("output", {"output": "s3://models/out/other.keras.age"}, True),
    ("threshold", {"pruning": {**BASE["pruning"], "threshold": 0.4}}, True),
    ("target ratio", {"pruning": {**BASE["pruning"], "targetRatio": 0.5}}, True),
    ("excluded layers", {"pruning": {"threshold": 0.3, "excludedLayers": ["head"]}}, True),
    ("key secret", {"keySecretRef": {"name": "other-key", "key": "passphrase"}}, True),
    ("key secret key", {"keySecretRef": {"name": "model-key", "key": "other"}}, True),
    ("no key", {"keySecretRef": None}, True),
    ("endpoint", {"s3": {**BASE["s3"], "endpoint": "http://ceph:7480"}}, True),
    ("region", {"s3": {**BASE["s3"], "region": "us-east-1"}}, True),
    ("image", {"image": "registry/prunejob-worker:0.2.0"}, True),
    ("runId", {"runId": "1733000000"}, True),
]


@pytest.mark.parametrize(("edit", "changes", "new_run"), EDITS, ids=[e[0] for e in EDITS])
def test_which_edits_start_a_new_run(edit: str, changes: dict[str, Any], new_run: bool) -> None:
    assert (key(**changes) != key()) is new_run


def test_a_run_key_is_short_stable_and_label_safe() -> None:
    first = key()
    assert first == key() and len(first) == runs.KEY_LENGTH
    assert first.isalnum() and first.islower()
    assert key(runId="a") != key(runId="b")
    # A default written out is the same run as the default left out, at every depth.
    assert key(keySecretRef={"name": "k"}) == key(keySecretRef={"name": "k", "key": "key"})
    assert key(pruning=None) == key(pruning={"threshold": 0.1, "minNumFilters": 16})


def test_every_spec_field_has_one_role() -> None:
    """A new spec field must be classified here before it ships."""
    paths: list[str] = []
    for field in models.PruneJobSpec.model_fields.values():
        alias = field.alias or ""
        if alias == "s3":
            paths += [f"s3.{sub.alias}" for sub in models.S3Spec.model_fields.values()]
        else:
            paths.append(alias)
    classified = [item.path for item in runs.FIELDS]
    assert sorted(paths) == sorted(classified)
    assert len(set(classified)) == len(classified)
    assert runs.role_of("pruning.threshold") == "result"
    assert runs.role_of("s3.credentialsSecretRef.name") == "operational"
    assert runs.role_of("nope") is None


def test_the_roles_are_the_decided_ones() -> None:
    assert set(runs.RESULT_FIELDS) == {
        "model",
        "output",
        "pruning",
        "keySecretRef",
        "s3.endpoint",
        "s3.region",
        "image",
        "runId",
    }


def test_the_readme_has_the_field_table() -> None:
    readme = (crd.CRD_PATH.parents[1] / "README.md").read_text()
    assert runs.render_table().strip() in readme, (
        "README's field table is stale: paste `python -m prunejob_operator.crd --runs` into it"
    )
