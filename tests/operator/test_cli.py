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


def test_leader_election_flags_and_env() -> None:
    from prunejob_operator import cli, settings

    def config(argv: list[str], env: dict[str, str] | None = None) -> settings.OperatorConfig:
        return cli.config_from_args(
            cli.build_parser().parse_args(argv), settings.from_env(env or {})
        )

    default = config([])
    assert default.leader_election and default.lease_name == "prunejob-operator"
    assert default.lease_namespace_or_default == "default"  # outside a pod
    in_pod = config([], {"POD_NAME": "op-7f9c-x2k4q", "POD_NAMESPACE": "prunejob-system"})
    assert (
        in_pod.pod_name == "op-7f9c-x2k4q"
        and in_pod.lease_namespace_or_default == "prunejob-system"
    )
    chosen = config(["--lease-name", "mine", "--lease-namespace", "ops"], {"POD_NAMESPACE": "x"})
    assert (chosen.lease_name, chosen.lease_namespace_or_default) == ("mine", "ops")
    assert not config(["--no-leader-election"]).leader_election
    assert not config([], {"PRUNEJOB_OPERATOR_LEADER_ELECTION": "false"}).leader_election
    standalone = config(["--standalone"])
    assert not standalone.leader_election and "--no-leader-election" in standalone.notices[0]
    peering = config(["--peering=prunejob"])
    assert peering.leader_election and "kopf peering is gone" in peering.notices[0]
    assert config([], {"PRUNEJOB_OPERATOR_WATCH_STALE_SECONDS": "7"}).watch_stale_seconds == 7


def test_an_obsolete_flag_is_one_warning_line(tmp_path: Path) -> None:
    result = run_operator(tmp_path / "missing", "--peering=prunejob")
    assert result.returncode == 1
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("prunejob operator: warning: --peering is ignored: kopf peering")
    assert error.startswith("prunejob operator: error: no Kubernetes configuration")
