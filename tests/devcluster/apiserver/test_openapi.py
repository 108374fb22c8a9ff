"""Tests of OpenAPI, fieldValidation, strategic merge patch and a Job's immutable fields.

OpenAPI v3 documents, ``fieldValidation`` (unknown fields), strategic merge patch and a
Job's immutable fields, over HTTP as kubectl meets them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from devcluster.apiserver import builtin_schemas, fieldcheck, strategic
from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import crd, http, widget

pytestmark = pytest.mark.timeout(60)

STRATEGIC = "application/strategic-merge-patch+json"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def call(
    cluster: LocalCluster, method: str, path: str, body: Any = None, content_type: str = ""
) -> tuple[int, Any, list[str], dict[str, str]]:
    """(status, JSON body, Warning headers, headers), redirects not followed."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type or "application/json"}
    request = urllib.request.Request(cluster.url + path, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            raw, code, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, code, got = error.read(), error.code, error.headers
    parsed = json.loads(raw) if raw.strip().startswith(b"{") else None
    return code, parsed, got.get_all("Warning") or [], dict(got)


def pod(name: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "example/app:1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def test_builtin_schemas_file_is_up_to_date() -> None:
    assert builtin_schemas.DATA_FILE.read_text() == builtin_schemas.render(
        builtin_schemas.generate()
    ), "run: python -m devcluster.apiserver.builtin_schemas --write"


def test_openapi_v3_root_and_group_documents(cluster: LocalCluster) -> None:
    code, root, _, _ = call(cluster, "GET", "/openapi/v3")
    assert code == 200
    assert {"api/v1", "apis/batch/v1", "apis/example.com/v1"} <= set(root["paths"])
    url = root["paths"]["apis/example.com/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/example.com/v1?hash=")
    code, doc, _, headers = call(cluster, "GET", url)
    assert code == 200 and headers["Cache-Control"] == "public, immutable"
    widget_schema = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget_schema["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "version": "v1", "kind": "Widget"}
    ]
    assert widget_schema["properties"]["spec"]["properties"]["size"]["maximum"] == 10
    assert widget_schema["properties"]["metadata"] == {"$ref": "#/components/schemas/V1ObjectMeta"}
    assert "V1ObjectMeta" in doc["components"]["schemas"]
    item = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    assert STRATEGIC not in item["patch"]["requestBody"]["content"]  # custom resources
    # A stale hash is sent to the current document, as the real server does.
    path = url.split("?", 1)[0]
    code, _, _, headers = call(cluster, "GET", f"{path}?hash=0BAD")
    assert code == 301 and headers["Location"] == url
    code, core, _, _ = call(cluster, "GET", root["paths"]["api/v1"]["serverRelativeURL"])
    pods = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert STRATEGIC in pods["patch"]["requestBody"]["content"]
    spec = core["components"]["schemas"]["V1PodSpec"]["properties"]["containers"]
    assert spec["x-kubernetes-patch-merge-key"] == "name"


def test_a_new_crd_changes_the_documents(cluster: LocalCluster) -> None:
    _, before, _, _ = call(cluster, "GET", "/openapi/v3")
    sprockets = crd(
        "example.net",
        "sprockets",
        "Sprocket",
        scope="Namespaced",
        version="v1",
        schema={"type": "object"},
    )
    code, _ = http(
        cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", sprockets
    )
    assert code == 201
    try:
        _, after, _, _ = call(cluster, "GET", "/openapi/v3")
        assert "apis/example.net/v1" not in before["paths"]
        assert "apis/example.net/v1" in after["paths"]
    finally:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sprockets.example.net"
        http(cluster, "DELETE", path)


def test_field_validation_strict_warn_ignore(cluster: LocalCluster) -> None:
    pods = "/api/v1/namespaces/default/pods"
    bad = pod("strict-one", bogus=1)
    code, body, _, _ = call(cluster, "POST", f"{pods}?fieldValidation=Strict", bad)
    assert code == 400
    assert body["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.bogus"'
    )
    code, body, warnings, _ = call(cluster, "POST", pods, pod("warned", bogus=1))
    assert code == 201 and "bogus" not in body["spec"]
    assert warnings == ['299 - "unknown field \\"spec.bogus\\""']
    code, _, warnings, _ = call(
        cluster, "POST", f"{pods}?fieldValidation=Ignore", pod("ignored", bogus=1)
    )
    assert code == 201 and warnings == []
    code, body, _, _ = call(cluster, "POST", f"{pods}?fieldValidation=Loose", pod("x"))
    assert code == 400 and "fieldValidation" in body["message"]
    # Custom resources: the schema's pruning and ObjectMeta's fields count.
    widgets = "/apis/example.com/v1/namespaces/default/widgets"
    odd = widget("odd-one")
    odd["spec"]["shape"] = "round"
    odd["metadata"]["labelz"] = {"a": "b"}
    code, body, _, _ = call(cluster, "POST", f"{widgets}?fieldValidation=Strict", odd)
    assert code == 400
    assert 'unknown field "metadata.labelz"' in body["message"]
    assert 'unknown field "spec.shape"' in body["message"]


def test_strategic_merge_patch_on_builtins_not_on_custom_resources(cluster: LocalCluster) -> None:
    pods = "/api/v1/namespaces/default/pods"
    body = pod("merged")
    body["metadata"]["finalizers"] = ["example.com/a"]
    body["spec"]["containers"].append({"name": "side", "image": "example/side:1"})
    assert call(cluster, "POST", pods, body)[0] == 201
    patch = {
        "metadata": {"finalizers": ["example.com/b"], "labels": {"x": "1"}},
        "spec": {"containers": [{"name": "side", "image": "example/side:2"}]},
    }
    code, patched, _, _ = call(cluster, "PATCH", f"{pods}/merged", patch, STRATEGIC)
    assert code == 200
    assert patched["metadata"]["finalizers"] == ["example.com/a", "example.com/b"]
    images = [(c["name"], c["image"]) for c in patched["spec"]["containers"]]
    assert images == [("main", "example/app:1"), ("side", "example/side:2")]
    remove = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a", "example.com/b"]}
    }
    code, patched, _, _ = call(cluster, "PATCH", f"{pods}/merged", remove, STRATEGIC)
    assert code == 200 and not patched["metadata"].get("finalizers")
    http(cluster, "POST", "/apis/example.com/v1/namespaces/default/widgets", widget("plain"))
    code, body, _, _ = call(
        cluster,
        "PATCH",
        "/apis/example.com/v1/namespaces/default/widgets/plain",
        {"spec": {"size": 2}},
        STRATEGIC,
    )
    assert code == 415 and "application/merge-patch+json" in body["message"]


def test_strategic_merge_directives() -> None:
    schema = fieldcheck.resolve({"$ref": "V1PodSpec"})
    original = {
        "containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "tolerations": [{"key": "k"}],
    }
    patch = {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
        ],
        "volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {}}],
        "tolerations": [{"key": "other"}],  # no merge strategy: replaced
    }
    merged = strategic.apply(original, patch, schema, fieldcheck.resolve)
    assert merged["containers"] == [
        {
            "name": "a",
            "image": "a:1",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        }
    ]
    assert merged["volumes"] == [{"name": "data", "hostPath": {}}]
    assert merged["tolerations"] == [{"key": "other"}]
    replaced = strategic.apply(
        original, {"containers": [{"$patch": "replace"}, {"name": "c"}]}, schema, fieldcheck.resolve
    )
    assert replaced["containers"] == [{"name": "c"}]


def test_job_spec_is_immutable_except_a_suspended_jobs_scheduling(cluster: LocalCluster) -> None:
    jobs = "/apis/batch/v1/namespaces/default/jobs"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fixed"},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example/app:1"}],
                }
            },
        },
    }
    assert call(cluster, "POST", jobs, job)[0] == 201
    scheduling = {"spec": {"template": {"spec": {"nodeSelector": {"pool": "gpu"}}}}}
    code, _, _, _ = call(cluster, "PATCH", f"{jobs}/fixed", scheduling, STRATEGIC)
    assert code == 200
    image = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "x:2"}]}}}}
    code, body, _, _ = call(cluster, "PATCH", f"{jobs}/fixed", image, STRATEGIC)
    assert code == 422
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: {...}: field is immutable",
            "field": "spec.template",
        }
    ]
    code, body, _, _ = call(
        cluster, "PATCH", f"{jobs}/fixed", {"spec": {"completions": 3}}, STRATEGIC
    )
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.completions"
