"""Tests of kubectl 1.32 against the local API server.

kubectl 1.32 against the local API server: apply with kubectl's own validation (the
server's OpenAPI v3 documents), get (table, yaml), wait, logs, events, delete."""

from __future__ import annotations

import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import LocalCluster
from tests.kubectl_tool import KUBECTL, NO_VALIDATED_APPLY

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
pytestmark = [
    pytest.mark.skipif(NO_VALIDATED_APPLY is not None, reason=str(NO_VALIDATED_APPLY)),
    pytest.mark.timeout(90),
]

WIDGET = textwrap.dedent(
    """
    apiVersion: example.com/v1
    kind: Widget
    metadata:
      name: tiny
    spec:
      size: {size}
    """
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        crd_paths=[DATA / "widgets.yaml", ROOT / "crds" / "prunejob.yaml"], run_pods=True, gpus=1
    ) as running:
        yield running


def run_kubectl(
    cluster: LocalCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster's kubeconfig, its output captured as text."""
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.kubeconfig_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def kubectl(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    result = run_kubectl(cluster, *args, stdin=stdin)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def refused(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    """kubectl's error output for a command that must fail."""
    result = run_kubectl(cluster, *args, stdin=stdin)
    assert result.returncode != 0, f"kubectl {' '.join(args)} succeeded: {result.stdout}"
    return result.stderr


def test_apply_get_wait_delete(cluster: LocalCluster) -> None:
    out = kubectl(cluster, "apply", "-f", "-", stdin=WIDGET.format(size=3))
    assert "widget.example.com/tiny created" in out
    again = kubectl(cluster, "apply", "-f", "-", stdin=WIDGET.format(size=3))
    assert "unchanged" in again
    table = kubectl(cluster, "get", "wd")
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "SIZE", "AGE"]
    assert row.split()[:2] == ["tiny", "3"]
    kubectl(cluster, "apply", "-f", "-", stdin=WIDGET.format(size=4))
    generation = kubectl(cluster, "get", "widget", "tiny", "-o", "jsonpath={.metadata.generation}")
    assert generation == "2"
    assert "color: red" in kubectl(cluster, "get", "wd", "tiny", "-o", "yaml")

    def finish() -> None:
        time.sleep(0.5)
        kubectl(
            cluster,
            "patch",
            "wd",
            "tiny",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"phase": "Done"}}',
        )

    patcher = threading.Thread(target=finish)
    patcher.start()
    kubectl(cluster, "wait", "--for=jsonpath={.status.phase}=Done", "wd/tiny", "--timeout=20s")
    patcher.join()
    assert "deleted" in kubectl(cluster, "delete", "wd", "tiny")
    assert "No resources found" in run_kubectl(cluster, "get", "wd").stderr


def test_invalid_spec_is_rejected_with_field_messages(cluster: LocalCluster) -> None:
    err = refused(cluster, "apply", "-f", "-", stdin=WIDGET.format(size=99))
    assert "spec.size" in err and "less than or equal to 10" in err


def test_job_runs_and_kubectl_shows_status_and_logs(cluster: LocalCluster) -> None:
    job = textwrap.dedent(
        """
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: hello
        spec:
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: main
                image: example/hello:1
                command: [python, -c, "print('hi from kubectl logs')"]
        """
    )
    kubectl(cluster, "apply", "-f", "-", stdin=job)
    kubectl(cluster, "wait", "--for=condition=Complete", "job/hello", "--timeout=30s")
    assert "Complete" in kubectl(cluster, "get", "jobs")
    assert "hi from kubectl logs" in kubectl(cluster, "logs", "job/hello")
    assert "Completed" in kubectl(cluster, "get", "pods", "-l", "job-name=hello")


def test_examples_apply_validated_and_reapply_edited(cluster: LocalCluster) -> None:
    out = kubectl(cluster, "apply", "-f", str(EXAMPLES / "secrets.yaml"))
    assert "secret/model-key created" in out and "secret/s3-credentials created" in out
    examples = [
        ("prunejob.yaml", "resnet50-pruned"),
        ("prunejob-minio.yaml", ""),
        ("prunejob-kueue.yaml", "resnet50-pruned-kueue"),
    ]
    for example, name in examples:
        out = kubectl(cluster, "apply", "-f", str(EXAMPLES / example))
        assert f"prunejob.prunejob.io/{name}" in out and "created" in out
    manifest = (EXAMPLES / "prunejob.yaml").read_text()
    assert "unchanged" in kubectl(cluster, "apply", "-f", "-", stdin=manifest)
    # An edited manifest: a changed field, a removed one (the last-applied annotation
    # tells kubectl to delete it).
    edited = manifest.replace("backoffLimit: 2", "backoffLimit: 3")
    edited = "".join(
        line for line in edited.splitlines(keepends=True) if "ttlSecondsAfterFinished" not in line
    )
    assert "ttlSecondsAfterFinished" not in edited
    assert "configured" in kubectl(cluster, "apply", "-f", "-", stdin=edited)
    spec = kubectl(
        cluster,
        "get",
        "pj",
        "resnet50-pruned",
        "-o",
        "jsonpath={.metadata.generation} {.spec.backoffLimit} {.spec.ttlSecondsAfterFinished}",
    )
    assert spec.split() == ["2", "3"]
    kubectl(cluster, "delete", "-f", str(EXAMPLES / "prunejob.yaml"))
    kubectl(cluster, "delete", "-f", str(EXAMPLES / "prunejob-minio.yaml"))
    kubectl(cluster, "delete", "-f", str(EXAMPLES / "prunejob-kueue.yaml"))
    kubectl(cluster, "delete", "-f", str(EXAMPLES / "secrets.yaml"))


def test_schema_invalid_manifests_are_refused(cluster: LocalCluster) -> None:
    manifest = (EXAMPLES / "prunejob.yaml").read_text().replace("resnet50-pruned", "invalid")
    unknown = manifest.replace("  gpus: 1\n", "  gpus: 1\n  gpu: 2\n")
    err = refused(cluster, "apply", "-f", "-", stdin=unknown)
    assert 'error when creating "STDIN"' in err
    assert (
        'PruneJob in version "v1alpha1" cannot be handled as a PruneJob: strict decoding error: '
        'unknown field "spec.gpu"'
    ) in err
    wrong_type = manifest.replace("  gpus: 1\n", "  gpus: one\n")
    err = refused(cluster, "apply", "-f", "-", stdin=wrong_type)
    assert 'The PruneJob "invalid" is invalid' in err
    assert "spec.gpus in body must be of type integer" in err
    pod = textwrap.dedent(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: typo
        spec:
          containers:
          - name: main
            image: example/app:1
            imagePullPolicy: Never
            comand: [sleep, "1"]
        """
    )
    err = refused(cluster, "apply", "-f", "-", stdin=pod)
    assert 'strict decoding error: unknown field "spec.containers[0].comand"' in err
    # --validate=warn sends fieldValidation=Warn: the server drops the field and warns.
    result = run_kubectl(
        cluster, "create", "--validate=warn", "--dry-run=server", "-f", "-", stdin=pod
    )
    assert result.returncode == 0, result.stderr
    assert 'Warning: unknown field "spec.containers[0].comand"' in result.stderr
    assert "Error from server (NotFound)" in refused(cluster, "get", "pj", "invalid")


def test_pod_apply_and_events_columns(cluster: LocalCluster) -> None:
    pod = textwrap.dedent(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: sleeper
          labels: {app: sleeper}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: example/sleeper:1
            command: [python, -c, "print('slept')"]
        """
    )
    assert "pod/sleeper created" in kubectl(cluster, "apply", "-f", "-", stdin=pod)
    relabelled = pod.replace("{app: sleeper}", "{app: sleeper, tier: batch}")
    assert "pod/sleeper configured" in kubectl(cluster, "apply", "-f", "-", stdin=relabelled)
    labels = kubectl(cluster, "get", "pod", "sleeper", "-o", "jsonpath={.metadata.labels}")
    assert '"tier":"batch"' in labels
    event = textwrap.dedent(
        """
        apiVersion: v1
        kind: Event
        metadata:
          name: sleeper.note
        involvedObject: {apiVersion: v1, kind: Pod, name: sleeper, namespace: default}
        type: Warning
        reason: Noted
        message: a note for kubectl get events
        source: {component: test}
        """
    )
    kubectl(cluster, "apply", "-f", "-", stdin=event)
    header, *rows = kubectl(cluster, "get", "events").splitlines()
    assert header.split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    row = next(r for r in rows if "Noted" in r)
    assert row.split()[1:5] == ["Warning", "Noted", "pod/sleeper", "a"]
    kubectl(cluster, "delete", "pod", "sleeper", "--wait=false")
