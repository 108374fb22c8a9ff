"""Tests of object lifecycle in the API server, from creation to garbage collection.

Object lifecycle in the API server: metadata stamping, generation, the status subresource,
conflicts, generateName, Secrets' stringData, finalizers, garbage collection, namespaces."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.devcluster.apiserver.widgets import GROUP, PLURAL, VERSION, create_widget, widget

pytestmark = pytest.mark.timeout(60)


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
