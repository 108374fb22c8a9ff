"""Tests of the API server's built-in kinds: Leases, PriorityClasses, Deployments, RBAC.

Built-in kinds the operator relies on: coordination.k8s.io/v1 Leases (optimistic
concurrency, MicroTime decoding, validation), scheduling.k8s.io/v1 PriorityClasses (system
classes, validation, one globalDefault) and the Priority admission of Pods; and the kinds
deploy/ applies: apps/v1 Deployments (defaults, env merged by name as `kubectl set env`
sends it, strict field validation) and RBAC objects (stored, not enforced)."""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import http, watch_lines

pytestmark = pytest.mark.timeout(60)
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
PCS = "/apis/scheduling.k8s.io/v1/priorityclasses"
NOW = "2025-01-01T12:00:00.123456Z"


def lease(name: str, holder: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": NOW,
            "renewTime": NOW,
            "leaseTransitions": 0,
            **spec,
        },
    }


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        call()
    body: dict[str, Any] = json.loads(caught.value.body)
    assert body["code"] == caught.value.status
    return body


def test_lease_crud_watch_and_optimistic_concurrency(
    cluster: LocalCluster, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    path = LEASES.format(ns=namespace)
    status, created = http(cluster, "POST", path, lease("op", "a_1"))
    assert status == 201 and created["spec"]["holderIdentity"] == "a_1"
    assert "generation" not in created["metadata"]  # Leases carry no generation
    # Two candidates race from the same read: one update wins, the other gets 409.
    first = json.loads(json.dumps(created))
    second = json.loads(json.dumps(created))
    first["spec"]["renewTime"] = "2025-01-01T12:00:02.000000Z"
    second["spec"].update(holderIdentity="b_2", leaseTransitions=1)
    status, renewed = http(cluster, "PUT", f"{path}/op", first)
    assert status == 200
    status, body = http(cluster, "PUT", f"{path}/op", second)
    assert status == 409 and body["reason"] == "Conflict"
    assert 'leases.coordination.k8s.io "op"' in body["message"]
    leases = kubernetes.client.CoordinationV1Api(api)
    assert leases.read_namespaced_lease("op", namespace).spec.holder_identity == "a_1"
    # A watch from the created version sees the renewal; a delete ends it.
    rv = created["metadata"]["resourceVersion"]
    threading.Timer(0.3, lambda: leases.delete_namespaced_lease("op", namespace)).start()
    events = watch_lines(cluster, f"{path}?watch=1&resourceVersion={rv}&timeoutSeconds=2")
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert (
        events[0]["object"]["metadata"]["resourceVersion"] == renewed["metadata"]["resourceVersion"]
    )


@pytest.mark.parametrize(
    ("spec", "code", "needle"),
    [
        ({"renewTime": "2025-01-01T12:00:00Z"}, 400, 'cannot parse "Z" as ".000000"'),
        ({"acquireTime": "2025-01-01T12:00:00.123Z"}, 400, 'cannot parse ".123Z" as ".000000"'),
        ({"leaseDurationSeconds": 0}, 422, "spec.leaseDurationSeconds: Invalid value: 0: must"),
        ({"leaseTransitions": -1}, 422, "spec.leaseTransitions: Invalid value: -1: must be"),
    ],
)
def test_lease_decoding_and_validation(
    cluster: LocalCluster, spec: dict[str, Any], code: int, needle: str
) -> None:
    status, body = http(cluster, "POST", LEASES.format(ns="default"), lease("bad", "x", **spec))
    assert status == code and needle in body["message"], body
    if code == 400:
        assert body["message"].startswith('Lease in version "v1" cannot be handled as a Lease: ')


def test_python_isoformat_of_a_whole_second_is_refused(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """What client-go writes (MicroTime, six digits) works; the Python client serialises a
    datetime with ``isoformat``, which drops the digits at microsecond 0, and the real API
    server refuses that (kubernetes/kubernetes#141204 is open about it)."""
    import datetime

    leases = kubernetes.client.CoordinationV1Api(api)
    whole = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    body = kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name="iso"),
        spec=kubernetes.client.V1LeaseSpec(holder_identity="h", renew_time=whole),
    )
    assert error_of(lambda: leases.create_namespaced_lease(namespace, body))["code"] == 400
    body.spec.renew_time = whole.replace(microsecond=1)
    assert leases.create_namespaced_lease(namespace, body).spec.holder_identity == "h"


def test_system_priority_classes_and_validation(cluster: LocalCluster) -> None:
    status, listing = http(cluster, "GET", PCS)
    values = {pc["metadata"]["name"]: pc["value"] for pc in listing["items"]}
    assert values["system-cluster-critical"] == 2000000000
    assert values["system-node-critical"] == 2000001000
    status, created = http(cluster, "POST", PCS, {"metadata": {"name": "high"}, "value": 1000})
    assert status == 201 and created["preemptionPolicy"] == "PreemptLowerPriority"
    assert "generation" not in created["metadata"]
    for body, needle in [
        ({"metadata": {"name": "huge"}, "value": 1_000_000_001},
         "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
        ({"metadata": {"name": "system-mine"}, "value": 1},
         "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved"),
        ({"metadata": {"name": "odd"}, "value": 1, "preemptionPolicy": "Sometimes"},
         'preemptionPolicy: Unsupported value: "Sometimes"'),
    ]:  # fmt: skip
        status, error = http(cluster, "POST", PCS, body)
        assert status == 422 and needle in error["message"], error
        assert error["details"]["kind"] == "PriorityClass"
    status, error = http(cluster, "PATCH", f"{PCS}/high", {"value": 5},
                         "application/merge-patch+json")  # fmt: skip
    assert status == 422
    assert error["message"] == (
        'PriorityClass.scheduling.k8s.io "high" is invalid: '
        "value: Forbidden: may not be changed in an update."
    )
    status, _ = http(cluster, "PATCH", f"{PCS}/high", {"description": "d"},
                     "application/merge-patch+json")  # fmt: skip
    assert status == 200
    http(cluster, "DELETE", f"{PCS}/high")


def test_only_one_global_default_and_pod_priority_admission(
    cluster: LocalCluster, core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    def pod(name: str, **spec: Any) -> dict[str, Any]:
        containers = [{"name": "c", "image": "example/x:1"}]
        return {"metadata": {"name": name}, "spec": {"containers": containers, **spec}}

    plain = core.create_namespaced_pod(namespace, pod("plain"))
    assert plain.spec.priority == 0 and plain.spec.priority_class_name is None
    default = {"metadata": {"name": "batch-low"}, "value": 10, "globalDefault": True}
    status, _ = http(cluster, "POST", PCS, default)
    assert status == 201
    try:
        another = {"metadata": {"name": "another"}, "value": 5, "globalDefault": True}
        status, error = http(cluster, "POST", PCS, another)
        assert status == 403 and error["reason"] == "Forbidden"
        assert error["message"] == (
            'priorityclasses.scheduling.k8s.io "another" is forbidden: PriorityClass batch-low '
            "is already marked as default. Only one default can exist"
        )
        defaulted = core.create_namespaced_pod(namespace, pod("defaulted"))
        assert defaulted.spec.priority == 10
        assert defaulted.spec.priority_class_name == "batch-low"
        assert defaulted.spec.preemption_policy == "PreemptLowerPriority"
        critical = core.create_namespaced_pod(
            namespace, pod("critical", priorityClassName="system-cluster-critical")
        )
        assert critical.spec.priority == 2000000000
        body = error_of(
            lambda: core.create_namespaced_pod(namespace, pod("x", priorityClassName="nope"))
        )
        assert body["reason"] == "Forbidden"
        assert body["message"] == 'pods "x" is forbidden: no PriorityClass with name nope was found'
        generated = {"metadata": {"generateName": "gen-"}, "spec": pod("")["spec"]}
        generated["spec"]["priorityClassName"] = "nope"
        body = error_of(lambda: core.create_namespaced_pod(namespace, generated))
        assert body["message"].startswith('pods "gen-" is forbidden: ')
        body = error_of(
            lambda: core.create_namespaced_pod(
                namespace, pod("y", priorityClassName="batch-low", priority=3)
            )
        )
        assert "the integer value of priority (3) must not be provided" in body["message"]
    finally:
        http(cluster, "DELETE", f"{PCS}/batch-low")


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def test_deployments_are_stored_with_defaults_and_merge_env_by_name(
    cluster: LocalCluster, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(namespace, deployment("web"))
    assert created.spec.replicas == 1 and created.spec.strategy.type == "RollingUpdate"
    assert created.spec.revision_history_limit == 10 and created.metadata.generation == 1
    (container,) = created.spec.template.spec.containers
    assert container.termination_message_policy == "File"
    # what `kubectl set env` sends: a strategic merge of the container's env by name
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}],
                        }
                    ]
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment("web", namespace, patch)
    (container,) = patched.spec.template.spec.containers
    assert {e.name: e.value for e in container.env} == {"A": "3", "B": "2"}
    assert container.image == "busybox" and patched.metadata.generation == 2
    bad = deployment("bad")
    bad["spec"]["replikas"] = 2  # kubectl's validated apply sends fieldValidation=Strict
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments?fieldValidation=Strict"
    code, status = http(cluster, "POST", path, bad)
    assert code == 400 and 'unknown field "spec.replikas"' in status["message"], status


def test_rbac_objects_are_stored_not_enforced(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    name = f"{namespace}-reader"
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [rule]})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [rule]})
    subject = {"kind": "ServiceAccount", "name": "app", "namespace": namespace}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}
    rbac.create_namespaced_role_binding(
        namespace, {"metadata": {"name": "reader"}, "roleRef": ref, "subjects": [subject]}
    )
    assert rbac.read_cluster_role(name).rules[0].verbs == ["get"]
    assert rbac.read_namespaced_role_binding("reader", namespace).role_ref.name == "reader"
    assert name in [item.metadata.name for item in rbac.list_cluster_role().items]
    rbac.delete_cluster_role(name)
    status = error_of(lambda: rbac.read_cluster_role(name))
    assert status["code"] == 404


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (lambda d: d["spec"].pop("selector"), "spec.selector", "Required value"),
        (
            lambda d: d["spec"]["selector"].update(matchLabels={"app": "other"}),
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ),
        (
            lambda d: d["spec"]["selector"].update(
                matchLabels={},
                matchExpressions=[{"key": "app", "operator": "NotIn", "values": ["x"]}],
            ),
            None,
            None,
        ),
        (lambda d: d["spec"].update(replicas=-1), "spec.replicas", "greater than or equal to 0"),
        (
            lambda d: d["spec"]["template"]["spec"].update(restartPolicy="Never"),
            "spec.template.spec.restartPolicy",
            'supported values: "Always"',
        ),
    ],
)
def test_deployment_validation(
    cluster: LocalCluster, change: Any, field: str | None, text: str | None
) -> None:
    body = deployment(f"checked-{secrets.token_hex(4)}")
    change(body)
    code, status = http(cluster, "POST", "/apis/apps/v1/namespaces/default/deployments", body)
    if field is None:
        assert code == 201, status
        return
    assert code == 422, status
    (cause,) = status["details"]["causes"]
    assert cause["field"] == field and text in cause["message"], status


def test_a_deployments_selector_is_immutable(cluster: LocalCluster, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    assert http(cluster, "POST", path, deployment("fixed"))[0] == 201
    patch = {"spec": {"selector": {"matchLabels": {"app": "fixed", "tier": "x"}}}}
    code, status = http(cluster, "PATCH", f"{path}/fixed", patch, "application/merge-patch+json")
    assert code == 422, status
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert "spec.selector" in fields, status
