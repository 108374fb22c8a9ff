"""Request dispatch: PATCH flavours, errors as Status objects, selectors, list bodies."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import GROUP, PLURAL, VERSION, create_widget, http, widget

pytestmark = pytest.mark.timeout(60)


def test_json_patch_test_operation_guards_resource_version(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    created = create_widget(custom, namespace, widget("jp"))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/jp"
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
    ]
    code, patched = http(cluster, "PATCH", path, ops, "application/json-patch+json")
    assert code == 200 and patched["metadata"]["finalizers"] == ["example.com/f"]
    code, status = http(cluster, "PATCH", path, ops, "application/json-patch+json")
    assert code == 422 and status["kind"] == "Status"


def test_errors_are_status_objects(cluster: LocalCluster, custom: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "nope")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'widgets.example.com "nope" not found'
    create_widget(custom, namespace, widget("dup"))
    with pytest.raises(ApiException) as duplicate:
        create_widget(custom, namespace, widget("dup"))
    assert duplicate.value.status == 409
    assert json.loads(duplicate.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as bad_name:
        create_widget(custom, namespace, widget("Bad_Name"))
    assert bad_name.value.status == 422
    bad_spec = widget("bad")
    bad_spec["spec"] = {"size": 99, "color": "green"}
    with pytest.raises(ApiException) as invalid:
        create_widget(custom, namespace, bad_spec)
    causes = {c["field"] for c in json.loads(invalid.value.body)["details"]["causes"]}
    assert invalid.value.status == 422 and causes == {"spec.size", "spec.color"}
    with pytest.raises(ApiException) as no_namespace:
        create_widget(custom, "no-such-namespace", widget("x"))
    assert no_namespace.value.status == 404
    code, status = http(cluster, "GET", "/apis/example.com/v1/nothings")
    assert code == 404 and status["kind"] == "Status"


def test_label_and_field_selectors(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})]:
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": labels}, "data": {}}
        )

    def names(**selectors: str) -> list[str]:
        items = core.list_namespaced_config_map(namespace, **selectors).items
        return [item.metadata.name for item in items]

    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app==y") == ["b"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x, y)") == ["a", "b"]
    assert names(label_selector="app notin (x)") == ["b", "c"]
    assert names(label_selector="app") == ["a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(label_selector="app,tier=1") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    all_namespaces = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={namespace},metadata.name=c"
    )
    assert [item.metadata.name for item in all_namespaces.items] == ["c"]


def test_list_has_kind_api_version_and_resource_version(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    create_widget(custom, namespace, widget("listed"))
    code, body = http(cluster, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    assert code == 200
    assert body["kind"] == "WidgetList" and body["apiVersion"] == "example.com/v1"
    assert int(body["metadata"]["resourceVersion"]) >= int(
        body["items"][0]["metadata"]["resourceVersion"]
    )
