"""deploy/ renders with kustomize and keeps its promises (RBAC, restricted pods)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy")], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_everything_is_there(rendered: list[dict]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    for kind in ("ClusterRole", "ClusterRoleBinding", "Deployment", "Namespace", "ServiceAccount"):
        assert kind in kinds
    crds = {
        doc["metadata"]["name"] for doc in rendered if doc["kind"] == "CustomResourceDefinition"
    }
    assert "prunejobs.prunejob.io" in crds and "clusterkopfpeerings.kopf.dev" in crds


def test_rbac_never_touches_secrets_or_uses_wildcards(rendered: list[dict]) -> None:
    (role,) = [doc for doc in rendered if doc["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    pods = next(rule for rule in role["rules"] if rule["resources"] == ["pods"])
    assert sorted(pods["verbs"]) == ["list", "watch"]


def test_operator_pod_is_restricted_with_probes(rendered: list[dict]) -> None:
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "limits" in container["resources"]


def test_examples_parse_as_prunejobs() -> None:
    from prunejob_operator.models import parse_spec

    for name in ("prunejob.yaml", "prunejob-minio.yaml"):
        document = yaml.safe_load((REPO / "deploy" / "examples" / name).read_text())
        assert document["kind"] == "PruneJob"
        parse_spec(document["spec"])
