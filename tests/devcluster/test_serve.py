"""`python -m devcluster serve` as the README writes it, with its node flags.

The node's GPUs and labels, the kubeconfig, the CRD, a clean stop on SIGTERM, and
one-line errors for bad flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.loads(response.read())


def nodes_when_registered(url: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = get(url, "/api/v1/nodes")["items"]
        if items:
            return list(items)
        time.sleep(0.2)
    raise AssertionError("the pod runner registered no node in 30 s")


def test_serve_with_gpus_and_node_labels(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    process = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "serve", "--port", "0", "--crd", "crds/",
         "--kubeconfig", str(kubeconfig), "--gpus", "2", "--node-label", "zone=a",
         "--node-label", "pool=gpu-large"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        (node,) = nodes_when_registered(url)
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        labels = node["metadata"]["labels"]
        assert labels["zone"] == "a" and labels["pool"] == "gpu-large"
        assert f"server: {url}" in kubeconfig.read_text()
        served = get(url, "/apis/prunejob.io/v1alpha1")  # --crd crds/ registered the CRD
        assert [r["name"] for r in served["resources"] if "/" not in r["name"]] == ["prunejobs"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "devcluster: stopping" in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--node-label", "zone"], "--node-label 'zone' must be KEY=VALUE"),
        (["--crd", "no/such/crds"], "CRD path no/such/crds does not exist"),
        (["--gpus", "-1"], "--gpus -1: must be 0 or more"),
    ],
)
def test_serve_refuses_bad_flags_in_one_line(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devcluster", "serve", "--no-pods", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
