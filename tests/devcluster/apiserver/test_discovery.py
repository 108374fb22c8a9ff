"""Discovery documents, and CRDs created (and deleted) through the API."""

from __future__ import annotations

import pytest

from devcluster.apiserver.discovery import Registry
from devcluster.apiserver.resources import BUILTIN_RESOURCES
from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import crd, http

pytestmark = pytest.mark.timeout(60)


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
    gadgets = crd(
        "example.org",
        "gadgets",
        "Gadget",
        scope="Cluster",
        version="v2",
        schema={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    code, created = http(
        cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", gadgets
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


def test_registry_serves_each_type_at_its_urls() -> None:
    registry = Registry()
    for resource in BUILTIN_RESOURCES:
        registry.register(resource)
    jobs = registry.at_url("batch", "v1", "jobs")
    assert jobs is not None and jobs.kind == "Job" and registry[("batch", "jobs")] is jobs
    assert registry.unregister(("batch", "jobs")) is jobs
    assert registry.at_url("batch", "v1", "jobs") is None and registry.get(jobs.key) is None
