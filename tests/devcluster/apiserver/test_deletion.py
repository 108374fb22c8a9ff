"""Tests of deletion in the API server: graceful, grace 0, foreground, propagation defaults.

Deletion in the API server (no pod runner): graceful deletion of bound pods, grace 0,
foreground deletion with blocking and non-blocking dependents, propagation defaults."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from tests.devcluster.apiserver.widgets import GROUP, PLURAL, VERSION, create_widget, widget

pytestmark = pytest.mark.timeout(60)


def pod(name: str, node: str | None = None, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "example/x:1"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, **meta}, "spec": spec}


def names(core: kubernetes.client.CoreV1Api, namespace: str) -> set[str]:
    return {p.metadata.name for p in core.list_namespaced_pod(namespace).items}


def test_bound_pods_terminate_gracefully(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, pod("unbound"))
    core.create_namespaced_pod(namespace, pod("bound", node="n1"))
    core.create_namespaced_pod(
        namespace, {**pod("quick", node="n1"), "spec": {**pod("q")["spec"], "nodeName": "n1",
                                                       "terminationGracePeriodSeconds": 5}}
    )  # fmt: skip
    core.delete_namespaced_pod("unbound", namespace)  # never scheduled: goes at once
    terminating = core.delete_namespaced_pod("bound", namespace)
    assert terminating.metadata.deletion_grace_period_seconds == 30
    assert (
        core.delete_namespaced_pod("quick", namespace).metadata.deletion_grace_period_seconds == 5
    )
    assert names(core, namespace) == {"bound", "quick"}  # until their kubelet confirms
    # A second delete may shorten the grace period; 0 is the kubelet's (or --force).
    core.delete_namespaced_pod("quick", namespace, grace_period_seconds=0)
    assert names(core, namespace) == {"bound"}
    core.patch_namespaced_pod_status("bound", namespace, {"status": {"phase": "Failed"}})
    assert names(core, namespace) == {"bound"}  # a terminal phase does not end the grace
    core.delete_namespaced_pod("bound", namespace, body={"gracePeriodSeconds": 0})
    assert names(core, namespace) == set()


def test_grace_zero_with_finalizers_waits_for_them(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod("held", node="n1", finalizers=["example.com/x"]))
    core.delete_namespaced_pod("held", namespace, grace_period_seconds=0)
    held = core.read_namespaced_pod("held", namespace)
    assert held.metadata.deletion_timestamp and held.metadata.deletion_grace_period_seconds == 0
    core.patch_namespaced_pod("held", namespace, {"metadata": {"finalizers": None}})
    assert names(core, namespace) == set()


def test_foreground_deletion(
    api: kubernetes.client.ApiClient, custom: Any, core: Any, namespace: str
) -> None:
    owner = create_widget(custom, namespace, widget("fg-owner"))

    def ref(block: bool) -> list[dict[str, Any]]:
        return [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": "fg-owner",
                 "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}]  # fmt: skip

    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "loose", "ownerReferences": ref(False)}}
    )
    core.create_namespaced_pod(
        namespace,
        pod("blocking", node="n1", ownerReferences=ref(True), finalizers=["example.com/x"]),
    )
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "fg-owner", body={"propagationPolicy": "Foreground"}
    )
    waiting = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fg-owner")
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert waiting["metadata"]["deletionTimestamp"]
    assert core.list_namespaced_config_map(namespace).items == []  # non-blocking: just deleted
    blocking = core.read_namespaced_pod("blocking", namespace)
    assert blocking.metadata.deletion_timestamp  # being deleted, its owner waits for it
    core.delete_namespaced_pod("blocking", namespace, grace_period_seconds=0)
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    core.patch_namespaced_pod("blocking", namespace, {"metadata": {"finalizers": None}})
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []


def test_foreground_without_dependents_is_immediate_and_a_bad_policy_is_refused(
    custom: Any, namespace: str
) -> None:
    create_widget(custom, namespace, widget("alone"))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "alone", body={"propagationPolicy": "Sometimes"}
        )
    assert caught.value.status == 400
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "alone", body={"propagationPolicy": "Foreground"}
    )
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
