"""The README's "Install on a real cluster" block, run as written against the dev cluster.

Every kubectl line of the block runs as the README writes it (kustomize apply of deploy/,
`set image` of the operator, `set env` of the worker image, the example Secrets and
PruneJob, `get pj -w`, `get -o yaml`), against a dev cluster that starts empty (the CRD
comes from the apply). The `docker build`/`push` lines need a Docker engine and a
registry, which this machine lacks (the Dockerfile's stages are read by
tests/prunejob/test_images.py). The dev cluster runs no Deployment controller, so after
the edits the test starts the operator's replicas from the Deployment as the API server
stores it (replicas, args, env), as its pods would run, and checks what the edits must
change: the operator's image, and the worker image of the Job the PruneJob gets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import (
    JOBS,
    LEASE_NAME,
    LEASES,
    OPERATOR_NAMESPACE,
    REPO,
    Deployment,
    DeploymentSpec,
    Kube,
    wait_for,
)

from devcluster.cluster import LocalCluster
from tests import readme
from tests.kubectl_tool import KUBECTL, NO_VALIDATED_APPLY

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed"),
    pytest.mark.skipif(NO_VALIDATED_APPLY, reason=str(NO_VALIDATED_APPLY)),
]

DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"


def watch_until(words: list[str], env: dict[str, str], pattern: str) -> list[str]:
    """Run a `kubectl get -w` until a line matches `pattern`; the lines it printed."""
    seen: list[str] = []
    found = threading.Event()
    process = subprocess.Popen(
        words, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line.rstrip("\n"))
            if re.search(pattern, line):
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(60), f"{shlex.join(words)} never printed {pattern!r}: {seen}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
    return seen


def test_the_readmes_install_block_runs_as_written(tmp_path: Path) -> None:
    commands = readme.commands(readme.section("## Install on a real cluster"))
    docker = [words for words in commands if words[0] == "docker"]
    kubectl = [words for words in commands if words[0] == "kubectl"]
    assert len(docker) + len(kubectl) == len(commands), commands
    assert sorted(words[1] for words in docker) == ["build", "build", "push", "push"], docker
    (set_image,) = [words for words in kubectl if words[1:] and "image" in words]
    (set_env,) = [words for words in kubectl if words[1:] and "env" in words]
    image = dict(arg.split("=", 1) for arg in set_env if "=" in arg)
    assert list(image) == ["PRUNEJOB_OPERATOR_WORKER_IMAGE"], set_env
    operator_image = set_image[-1].split("=", 1)[1]
    built = {words[-2] for words in docker if words[1] == "build"}  # -t NAME .
    pushed = {words[2] for words in docker if words[1] == "push"}
    assert {operator_image, image["PRUNEJOB_OPERATOR_WORKER_IMAGE"]} == built == pushed

    # no CRD in the cluster: the apply brings it
    with LocalCluster(run_pods=False) as cluster, contextlib.ExitStack() as replicas:
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}
        kube = Kube(cluster.exempt_url)
        deployment: Deployment | None = None
        for words in kubectl:
            if "-w" in words:
                lines = watch_until(words, env, r"\bresnet50-pruned\s+Pending\b")
                assert lines[0].split()[:4] == ["NAME", "PHASE", "RATIO", "FILTERS"]
                continue
            done = subprocess.run(words, cwd=REPO, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{shlex.join(words)}: {done.stderr}"
            if words is set_env:  # the block's last edit of the Deployment
                deployment = replicas.enter_context(
                    start_replicas(kube, cluster.kubeconfig_path, tmp_path, image, operator_image)
                )
            if "-o" in words and "yaml" in words:
                shown = yaml.safe_load(done.stdout)
                assert shown["metadata"]["name"] == "resnet50-pruned"
                check_status(shown.get("status") or {})
        assert deployment is not None
        job = wait_for(lambda: job_of(kube, "resnet50-pruned"), what="the example's Job")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image["PRUNEJOB_OPERATOR_WORKER_IMAGE"]
        lease = kube.request("GET", f"{LEASES.format(ns=OPERATOR_NAMESPACE)}/{LEASE_NAME}")
        names = {replica.pod_name for replica in deployment.replicas}
        holder = lease["spec"]["holderIdentity"]  # POD_NAME + "_" + a per-process id
        assert holder.rsplit("_", 1)[0] in names, (holder, names)


def start_replicas(
    kube: Kube, kubeconfig: Path, workdir: Path, image: dict[str, str], operator_image: str
) -> Deployment:
    """The operator's pods, as the stored Deployment (after the edits) describes them."""
    stored = kube.get(DEPLOYMENTS, "prunejob-operator", ns=OPERATOR_NAMESPACE)
    assert stored["metadata"]["generation"] == 3  # the apply, then the two edits
    (container,) = stored["spec"]["template"]["spec"]["containers"]
    assert container["image"] == operator_image
    spec = DeploymentSpec.from_document(stored)
    shipped = DeploymentSpec.load()
    assert spec.replicas == 2 and spec == dataclasses.replace(shipped, env={**shipped.env, **image})
    return Deployment(kubeconfig, workdir, spec=spec)  # entered by the caller


def job_of(kube: Kube, name: str) -> dict[str, Any] | None:
    jobs = kube.items(JOBS, ns="default", selector=f"prunejob.io/name={name}")
    return jobs[0] if jobs else None


def check_status(status: dict[str, Any]) -> None:
    # The operator may not have written yet when the line runs; once it has, the status
    # carries all six conditions.
    if status:
        assert status["phase"] in ("Pending", "Running"), status
        assert len(status["conditions"]) == 6, status
