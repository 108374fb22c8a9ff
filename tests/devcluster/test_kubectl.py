"""kubectl 1.32 against the local API server: apply, get (table, yaml), wait, logs, delete."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import LocalCluster

DATA = Path(__file__).parent / "data"
KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed"),
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
    with LocalCluster(crd_paths=[DATA / "widgets.yaml"], run_pods=True, gpus=1) as running:
        yield running


def kubectl(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.kubeconfig_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_apply_get_wait_delete(cluster: LocalCluster) -> None:
    out = kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=WIDGET.format(size=3))
    assert "widget.example.com/tiny created" in out
    again = kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=WIDGET.format(size=3))
    assert "unchanged" in again
    table = kubectl(cluster, "get", "wd")
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "SIZE", "AGE"]
    assert row.split()[:2] == ["tiny", "3"]
    kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=WIDGET.format(size=4))
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
    assert (
        "No resources found"
        in subprocess.run(
            [KUBECTL, "--kubeconfig", str(cluster.kubeconfig_path), "get", "wd"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr
    )


def test_invalid_spec_is_rejected_with_field_messages(cluster: LocalCluster) -> None:
    assert KUBECTL is not None
    result = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "apply",
            "--validate=false",
            "-f",
            "-",
        ],
        input=WIDGET.format(size=99),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "spec.size" in result.stderr and "less than or equal to 10" in result.stderr


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
    kubectl(cluster, "apply", "--validate=false", "-f", "-", stdin=job)
    kubectl(cluster, "wait", "--for=condition=Complete", "job/hello", "--timeout=30s")
    assert "Complete" in kubectl(cluster, "get", "jobs")
    assert "hi from kubectl logs" in kubectl(cluster, "logs", "job/hello")
    assert "Completed" in kubectl(cluster, "get", "pods", "-l", "job-name=hello")
