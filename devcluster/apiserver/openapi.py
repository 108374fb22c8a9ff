"""The OpenAPI v3 documents the API server serves, which kubectl validates against.

The OpenAPI v3 documents kubectl downloads: ``/openapi/v3`` (one entry per group version,
with a content hash in its URL) and ``/openapi/v3/apis/<group>/<version>`` (or
``/openapi/v3/api/v1``): paths with ``x-kubernetes-group-version-kind`` and the
``fieldValidation`` parameter on writes, and component schemas built from the CRDs'
``openAPIV3Schema`` and the built-in kinds' generated schemas.

kubectl 1.32 validates ``apply``/``create`` by checking, in these documents, that the
server supports ``fieldValidation`` for the kind's PATCH, then sends ``fieldValidation=Strict``
and lets the server refuse unknown fields; without the documents it refuses to apply
("failed to download openapi") unless ``--validate=false``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from devcluster.apiserver import builtin_schemas
from devcluster.apiserver.discovery import KUBERNETES_VERSION, Registry
from devcluster.apiserver.resources import ResourceType

OBJECT_META = "V1ObjectMeta"
_WRITE_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation")
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


def gv_path(group: str, version: str) -> str:
    """``api/v1`` or ``apis/<group>/<version>``: a document's key in ``/openapi/v3``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def crd_component(resource: ResourceType, version: str) -> str:
    """A custom resource's schema name as the API server writes it (reversed group)."""
    return ".".join([*reversed(resource.group.split(".")), version, resource.kind])


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "uniqueItems": True}}  # fmt: skip


def _json_content(ref: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}


def _operation(
    action: str,
    resource: ResourceType,
    version: str,
    component: str | None,
    *,
    scope: str,
    body: str | None = None,
) -> dict[str, Any]:
    kind = resource.kind if action != "list" else f"{resource.kind}List"
    verb = {
        "get": "read",
        "put": "replace",
        "post": "create",
        "deletecollection": "deletecollection",
    }
    words = [verb.get(action, action), scope, resource.kind]
    group_word = "".join(part.capitalize() for part in resource.group.replace("-", ".").split("."))
    operation: dict[str, Any] = {
        "operationId": words[0] + (group_word or "Core") + version.capitalize() + words[1]
        + (kind if action == "list" else resource.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": resource.group, "version": version, "kind": resource.kind,
        },
        "parameters": [_query(name) for name in _WRITE_PARAMETERS]
        if action in ("post", "put", "patch")
        else [],
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    }  # fmt: skip
    if component is not None and action in ("get", "post", "put", "patch"):
        operation["responses"]["200"]["content"] = _json_content(component)
    if action == "patch":
        # Custom resources take no strategic merge patch (kubectl reads this list to pick).
        types = [t for t in _PATCH_TYPES if not (resource.schemas and "strategic" in t)]
        operation["requestBody"] = {
            "content": {t: {"schema": {"type": "object"}} for t in types},
            "required": True,
        }
    elif action in ("post", "put") and component is not None:
        operation["requestBody"] = {"content": _json_content(component), "required": True}
    elif body is not None:
        operation["requestBody"] = {"content": _json_content(body)}
    return operation


def _paths(resource: ResourceType, version: str, component: str | None) -> dict[str, Any]:
    prefix = "/" + gv_path(resource.group, version)
    ns = "/namespaces/{namespace}" if resource.namespaced else ""
    scope = "Namespaced" if resource.namespaced else ""
    collection = f"{prefix}{ns}/{resource.plural}"
    item = f"{collection}/{{name}}"
    params = [_path_parameter("namespace")] if resource.namespaced else []
    paths: dict[str, Any] = {
        collection: {
            "get": _operation("list", resource, version, component, scope=scope),
            "post": _operation("post", resource, version, component, scope=scope),
            "delete": _operation("deletecollection", resource, version, None, scope=scope,
                                 body="V1DeleteOptions"),
            "parameters": params,
        },
        item: {
            "get": _operation("get", resource, version, component, scope=scope),
            "put": _operation("put", resource, version, component, scope=scope),
            "patch": _operation("patch", resource, version, component, scope=scope),
            "delete": _operation("delete", resource, version, None, scope=scope,
                                 body="V1DeleteOptions"),
            "parameters": [_path_parameter("name"), *params],
        },
    }  # fmt: skip
    if resource.namespaced:
        paths[f"{prefix}/{resource.plural}"] = {
            "get": _operation("list", resource, version, component, scope="ForAllNamespaces")
        }
    for sub in resource.subresources:
        if sub == "log":
            continue
        paths[f"{item}/{sub}"] = {
            "get": _operation("get", resource, version, component, scope=scope),
            "put": _operation("put", resource, version, component, scope=scope),
            "patch": _operation("patch", resource, version, component, scope=scope),
            "parameters": [_path_parameter("name"), *params],
        }
    return paths


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _closure(names: Iterable[str], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """These components and every one they refer to."""
    out: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in schemas:
            continue
        out[name] = schemas[name]
        todo.extend(_references(schemas[name]))
    return out


def crd_schema(resource: ResourceType, version: str) -> dict[str, Any]:
    """A custom resource's component: its openAPIV3Schema with apiVersion, kind and
    metadata (``ObjectMeta``) as the API server publishes them."""
    schema = copy.deepcopy(dict(resource.schemas.get(version) or {}))
    if not schema:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {"$ref": f"#/components/schemas/{OBJECT_META}"}
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [
        {"group": resource.group, "version": version, "kind": resource.kind}
    ]
    return schema


def document(resources: Iterable[ResourceType], group: str, version: str) -> dict[str, Any]:
    """The OpenAPI v3 document of one group version."""
    builtin = builtin_schemas.load()["schemas"]
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    wanted: list[str] = ["V1DeleteOptions", "V1Status"]
    for resource in sorted(resources, key=lambda r: r.plural):
        if resource.group != group or version not in resource.versions:
            continue
        name = builtin_schemas.kind_schema(group, version, resource.kind)
        if name is None:
            name = crd_component(resource, version)
            components[name] = crd_schema(resource, version)
            wanted.append(OBJECT_META)
        else:
            wanted.append(name)
        paths.update(_paths(resource, version, name))
    components.update(_closure(wanted, builtin))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }


class Documents:
    """The documents of the served types, rendered again only when the registry changed."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._revision: int | None = None
        self._rendered: dict[str, tuple[bytes, str]] = {}  # gv path -> (JSON, hash)

    def _refresh(self) -> None:
        if self._revision == self._registry.revision:
            return
        self._revision = self._registry.revision
        resources = self._registry.all()
        self._rendered = {}
        versions = sorted({(r.group, v) for r in resources for v in r.versions})
        for group, version in versions:
            body = json.dumps(document(resources, group, version), separators=(",", ":")).encode()
            self._rendered[gv_path(group, version)] = (
                body,
                hashlib.sha512(body).hexdigest().upper(),
            )

    def root(self) -> dict[str, Any]:
        """``/openapi/v3``."""
        self._refresh()
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
                for path, (_, digest) in sorted(self._rendered.items())
            }
        }

    def get(self, path: str) -> tuple[bytes, str] | None:
        """(document, hash) of ``api/v1`` or ``apis/<group>/<version>``."""
        self._refresh()
        return self._rendered.get(path)
