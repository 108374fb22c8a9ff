"""Tests of deploy/: kustomize renders it; RBAC, leader election and pod security hold.

deploy/ renders with kustomize and keeps its promises: RBAC grants exactly what the
operator uses (recorded through a proxy while it runs a queue scenario), leader
election as the Deployment runs it, restricted pods."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from operator_harness import (
    JOBS,
    OPERATOR_NAMESPACE,
    PJ,
    REPO,
    DeploymentSpec,
    JobController,
    Kube,
    OperatorProcess,
    prunejob,
    wait_for,
)
from operator_samples import REPORT

from devcluster.cluster import LocalCluster
from devcluster.kubeconfig import write_kubeconfig
from devcluster.stack import free_port
from prunejob_contract.termination import success_message
from tests.kubectl_tool import KUBECTL

Request = tuple[str, str, str, str, str]  # (group, resource[/subresource], verb, namespace, name)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy")], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(rendered: list[dict], kind: str) -> dict:
    (document,) = [doc for doc in rendered if doc["kind"] == kind]
    return document


def test_everything_is_there(rendered: list[dict]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    for kind in (
        "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Namespace",
        "ServiceAccount",
    ):  # fmt: skip
        assert kind in kinds
    crds = {
        doc["metadata"]["name"] for doc in rendered if doc["kind"] == "CustomResourceDefinition"
    }
    assert crds == {"prunejobs.prunejob.io"}  # no kopf peering resources any more
    assert only(rendered, "Role")["metadata"]["namespace"] == OPERATOR_NAMESPACE


def test_rbac_never_touches_secrets_or_uses_wildcards(rendered: list[dict]) -> None:
    rules = only(rendered, "ClusterRole")["rules"] + only(rendered, "Role")["rules"]
    for rule in rules:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
    groups = {group for rule in rules for group in rule["apiGroups"]}
    assert "kopf.dev" not in groups and "apiextensions.k8s.io" not in groups
    cluster_resources = {
        r for rule in only(rendered, "ClusterRole")["rules"] for r in rule["resources"]
    }
    assert "leases" not in cluster_resources  # only in the operator's namespace (a Role)
    pods = next(
        rule for rule in only(rendered, "ClusterRole")["rules"] if rule["resources"] == ["pods"]
    )
    assert sorted(pods["verbs"]) == ["list", "patch", "watch"]


def test_the_deployment_runs_two_replicas_that_elect_a_leader(rendered: list[dict]) -> None:
    deployment = only(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert not any("peering" in arg or "standalone" in arg for arg in container["args"])
    fields = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    spec = DeploymentSpec.load()  # what the harness starts the tests' operators with
    assert spec.args == tuple(container["args"]) and spec.replicas == 2


def test_operator_pod_is_restricted_with_probes(rendered: list[dict]) -> None:
    deployment = only(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "limits" in container["resources"]


def test_examples_parse_as_prunejobs() -> None:
    from prunejob_operator.models import parse_spec

    for name in ("prunejob.yaml", "prunejob-minio.yaml", "prunejob-kueue.yaml"):
        document = yaml.safe_load((REPO / "deploy" / "examples" / name).read_text())
        assert document["kind"] == "PruneJob"
        parse_spec(document["spec"])


# -- RBAC against what the operator really does ---------------------------------------


class RecordingProxy:
    """A reverse proxy in a thread that forwards to `upstream` (streaming, watches too)
    and records every request as an RBAC request attribute tuple."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.query)))
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")
        }
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers=headers,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def attributes(method: str, path: str, query: dict[str, str]) -> Request | None:
    """The RBAC attributes of a request; None for discovery (allowed to everyone)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /api, /apis, /apis/GROUP[/VERSION], /version
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    name = rest[1] if len(rest) > 1 else ""
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else "get" if name else "list"
    else:
        verb = verbs[method]
    return (group, resource, verb, namespace, name)


def allows(rule: dict[str, Any], request: Request) -> bool:
    group, resource, verb, _, name = request
    names = rule.get("resourceNames")
    return (
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not names or name in names)
    )


def grants(rendered: list[dict]) -> list[tuple[str, str, str]]:
    rules = only(rendered, "ClusterRole")["rules"] + only(rendered, "Role")["rules"]
    return sorted(
        {
            (g, r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
    )


def permitted(rendered: list[dict], request: Request) -> bool:
    cluster_rules = only(rendered, "ClusterRole")["rules"]
    role = only(rendered, "Role")
    if any(allows(rule, request) for rule in cluster_rules):
        return True
    in_namespace = request[3] == role["metadata"]["namespace"]
    return in_namespace and any(allows(rule, request) for rule in role["rules"])


@pytest.mark.timeout(240)
def test_rbac_grants_exactly_what_the_operator_uses(rendered: list[dict], tmp_path: Path) -> None:
    with (
        LocalCluster(crd_paths=[REPO / "crds"], run_pods=False) as cluster,
        RecordingProxy(cluster.url) as proxy,
    ):
        kube = Kube(cluster.url)
        kube.namespace("ml")
        kubeconfig = write_kubeconfig(tmp_path / "through-proxy", proxy.url)
        # The Deployment's own args and env, with the built-in queue on (PriorityClasses).
        operator = OperatorProcess(
            kubeconfig, tmp_path / "operator.log", "--max-running-jobs", "1", setup_url=cluster.url
        )
        operator.start()
        try:
            controller = JobController(kube)
            kube.create(PJ, prunejob("first"))
            first = wait_for(lambda: [j for j in kube.items(JOBS) if not j["spec"]["suspend"]])[0]
            kube.create(PJ, prunejob("second"))
            wait_for(lambda: len(kube.items(JOBS)) == 2, what="the queued Job")
            # A result-defining edit of the queued one: its never-started Job is deleted.
            kube.patch(PJ, "second", {"spec": {"pruning": {"threshold": 0.3}}})
            wait_for(lambda: "second-g1" not in {j["metadata"]["name"] for j in kube.items(JOBS)})
            controller.run(first)
            controller.succeed(first, success_message(REPORT))
            waiting = {"second-g2"}
            second = wait_for(
                lambda: [
                    j
                    for j in kube.items(JOBS)
                    if j["metadata"]["name"] in waiting and not j["spec"]["suspend"]
                ],
                timeout=60,
                what="the queued Job started",
            )[0]
            controller.succeed(second, success_message(REPORT))
            wait_for(lambda: kube.status("second").get("phase") == "Succeeded", timeout=60)
        finally:
            operator.stop()  # SIGTERM: releases the Lease (an update)
        assert "released Lease" in operator.log()
    requests = {attributes(*seen) for seen in proxy.seen} - {None}
    refused = sorted(
        request for request in requests if request and not permitted(rendered, request)
    )
    assert refused == []
    used = {
        (group, resource, verb) for group, resource, verb, _, _ in requests if group is not None
    }  # type: ignore[misc]
    unused = set(grants(rendered)) - used
    # Removing the prunejob.io/result finalizer from finished pods (the semantics of
    # "results survive Job loss"): not exercised by this scenario's test-driven pods.
    assert unused <= {("", "pods", "patch")}, sorted(unused)
