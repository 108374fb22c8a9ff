"""`prunejob operator` start-up errors: one line and a non-zero exit, before kopf runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_operator(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "prunejob", "operator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "content", [None, "clusters: [\n`not yaml", "apiVersion: v1\nkind: Config\n"]
)
def test_unusable_kubeconfig_is_one_line(tmp_path: Path, content: str | None) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    result = run_operator(kubeconfig)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prunejob operator: error: no Kubernetes configuration")
    assert str(kubeconfig) in lines[0] and "KUBECONFIG" in lines[0]


def test_bad_flag_value_is_one_line(tmp_path: Path) -> None:
    result = run_operator(tmp_path / "unused", "--max-running-jobs", "-3")
    assert result.returncode == 2
    expected = "prunejob operator: error: --max-running-jobs must be >= 0, got -3"
    assert result.stderr.strip() == expected
