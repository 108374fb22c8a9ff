"""The local API server against the real ``kubernetes`` client and plain HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from devcluster.cluster import LocalCluster

DATA = Path(__file__).parent / "data"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(crd_paths=[DATA / "widgets.yaml"], run_pods=False) as running:
        yield running


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def namespace(core: kubernetes.client.CoreV1Api, request: pytest.FixtureRequest) -> str:
    name = request.node.name.lower().replace("_", "-")[:40].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    return name


def http(
    cluster: LocalCluster,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        cluster.url + path, data=data, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def watch_lines(cluster: LocalCluster, path: str) -> list[dict[str, Any]]:
    """Read a watch stream until the server ends it (the path carries timeoutSeconds)."""
    with urllib.request.urlopen(cluster.url + path, timeout=15) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def widget(name: str, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, **extra},
        "spec": {"size": size},
    }


def create_widget(custom: kubernetes.client.CustomObjectsApi, ns: str, body: Any) -> Any:
    return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def test_create_stamps_metadata_defaults_and_prunes(custom: Any, namespace: str) -> None:
    body = widget("w1")
    body["spec"]["unknownField"] = "dropped"
    first = create_widget(custom, namespace, body)
    second = create_widget(custom, namespace, widget("w2"))
    meta = first["metadata"]
    assert len(meta["uid"]) == 36 and meta["uid"] != second["metadata"]["uid"]
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert meta["namespace"] == namespace
    assert first["spec"] == {"size": 1, "color": "red"}  # default filled, unknown field pruned


def test_generation_bumps_only_on_spec_changes(custom: Any, namespace: str) -> None:
    create_widget(custom, namespace, widget("gen"))
    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gen", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    with_status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "gen", {"status": {"phase": "Busy"}}
    )
    assert with_status["metadata"]["generation"] == 1
    changed = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gen", {"spec": {"size": 5}}
    )
    assert changed["metadata"]["generation"] == 2
    same = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gen", {"spec": {"size": 5}}
    )
    assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]


def test_status_subresource_separates_spec_and_status(custom: Any, namespace: str) -> None:
    create_widget(custom, namespace, widget("st", size=2))
    main = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "st", {"status": {"phase": "Ignored"}}
    )
    assert "status" not in main
    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "st", {"spec": {"size": 9}, "status": {"phase": "Ok"}}
    )
    assert status["status"] == {"phase": "Ok"}
    assert status["spec"]["size"] == 2


def test_put_with_stale_resource_version_conflicts(custom: Any, namespace: str) -> None:
    created = create_widget(custom, namespace, widget("cas"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "cas", {"spec": {"size": 3}}
    )
    with pytest.raises(ApiException) as error:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cas", created)
    assert error.value.status == 409
    assert json.loads(error.value.body)["reason"] == "Conflict"
    fresh = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cas")
    fresh["spec"]["size"] = 7
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "cas", fresh
    )
    assert replaced["spec"]["size"] == 7


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


def test_watch_from_resource_version_sends_only_newer_events(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    create_widget(custom, namespace, widget("old"))
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    _, listing = http(cluster, "GET", base)
    since = listing["metadata"]["resourceVersion"]
    create_widget(custom, namespace, widget("new"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "old", {"spec": {"size": 4}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "new")
    started = time.monotonic()
    events = watch_lines(cluster, f"{base}?watch=true&resourceVersion={since}&timeoutSeconds=1")
    assert time.monotonic() - started >= 0.9  # the server held the stream until the timeout
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "new"), ("MODIFIED", "old"), ("DELETED", "new")]
    everything = watch_lines(cluster, f"{base}?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in everything] == [("ADDED", "old")]


def test_watch_delivers_live_events_with_field_selector(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    path = f"{base}?watch=true&timeoutSeconds=2&fieldSelector=metadata.name%3Dlive"
    result: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: result.append(watch_lines(cluster, path)))
    reader.start()
    time.sleep(0.3)
    create_widget(custom, namespace, widget("other"))
    create_widget(custom, namespace, widget("live"))
    reader.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in result[0]] == [("ADDED", "live")]


def test_watch_from_a_compacted_resource_version_is_gone(cluster: LocalCluster) -> None:
    def compact(server: Any) -> None:
        server._compacted[("", "configmaps")] = server.resource_version

    cluster.call_in_server(compact)
    events = watch_lines(cluster, "/api/v1/configmaps?watch=true&resourceVersion=1")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_generate_name(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    body = {"metadata": {"generateName": "ev-"}, "involvedObject": {"name": "x"}}
    names = {core.create_namespaced_event(namespace, body).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("ev-") and len(n) == 8 for n in names)


def test_secret_string_data_is_stored_as_data(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    created = core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "s"}, "stringData": {"key": "pass phrase"}, "data": {"a": "YQ=="}},
    )
    assert created.string_data is None
    assert created.data == {"key": base64.b64encode(b"pass phrase").decode(), "a": "YQ=="}
    core.patch_namespaced_secret("s", namespace, {"stringData": {"a": "b"}})
    read = core.read_namespaced_secret("s", namespace)
    assert read.string_data is None and read.data["a"] == base64.b64encode(b"b").decode()


def test_owner_references_are_garbage_collected(
    api: kubernetes.client.ApiClient, custom: Any, core: Any, namespace: str
) -> None:
    batch = kubernetes.client.BatchV1Api(api)
    owner = create_widget(custom, namespace, widget("owner"))
    job = batch.create_namespaced_job(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "example.com/v1",
                        "kind": "Widget",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}
                }
            },
        },
    )
    assert job.spec.template.metadata.labels["job-name"] == "child"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": "grandchild",
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "child",
                        "uid": job.metadata.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        },
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "owner")
    assert batch.list_namespaced_job(namespace).items == []
    assert core.list_namespaced_pod(namespace).items == []


def test_orphan_propagation_keeps_dependents(custom: Any, core: Any, namespace: str) -> None:
    owner = create_widget(custom, namespace, widget("parent"))
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "parent",
        "uid": owner["metadata"]["uid"],
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "kept", "ownerReferences": [ref]}}
    )
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "parent", propagation_policy="Orphan"
    )
    kept = core.read_namespaced_config_map("kept", namespace)
    assert not kept.metadata.owner_references


def test_finalizers_hold_deletion(custom: Any, namespace: str) -> None:
    create_widget(custom, namespace, widget("fin", finalizers=["example.com/hold"]))
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fin")
    held = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fin")
    assert held["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "fin", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fin")
    assert gone.value.status == 404


def test_namespace_deletion_removes_its_objects(core: Any, namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "data": {}})
    core.delete_namespace(namespace)
    assert (
        core.list_secret_for_all_namespaces(field_selector=f"metadata.namespace={namespace}").items
        == []
    )


def test_discovery(cluster: LocalCluster) -> None:
    code, core_v1 = http(cluster, "GET", "/api/v1")
    assert code == 200 and core_v1["groupVersion"] == "v1"
    pods = next(r for r in core_v1["resources"] if r["name"] == "pods")
    assert pods["namespaced"] is True and "watch" in pods["verbs"] and pods["shortNames"] == ["po"]
    assert any(r["name"] == "pods/status" for r in core_v1["resources"])
    code, groups = http(cluster, "GET", "/apis")
    by_name = {g["name"]: g for g in groups["groups"]}
    assert by_name["example.com"]["preferredVersion"] == {
        "groupVersion": "example.com/v1",
        "version": "v1",
    }
    assert {"batch", "coordination.k8s.io", "kopf.dev", "events.k8s.io"} <= set(by_name)
    code, widgets = http(cluster, "GET", "/apis/example.com/v1")
    entry = next(r for r in widgets["resources"] if r["name"] == "widgets")
    assert entry == {
        "name": "widgets",
        "singularName": "widget",
        "namespaced": True,
        "kind": "Widget",
        "verbs": entry["verbs"],
        "shortNames": ["wd"],
        "categories": ["toys"],
    }
    assert {"create", "get", "list", "watch", "patch", "delete"} <= set(entry["verbs"])


def test_crd_created_through_the_api_is_served(cluster: LocalCluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.org"},
        "spec": {
            "group": "example.org",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v2",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    code, created = http(
        cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert code == 201
    assert {c["type"] for c in created["status"]["conditions"]} == {"Established", "NamesAccepted"}
    code, gadget = http(
        cluster,
        "POST",
        "/apis/example.org/v2/gadgets",
        {"metadata": {"name": "g"}, "spec": {"any": 1}},
    )
    assert code == 201 and gadget["metadata"].get("namespace") is None
    http(
        cluster,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.org",
    )
    code, _ = http(cluster, "GET", "/apis/example.org/v2/gadgets")
    assert code == 404
