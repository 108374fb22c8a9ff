"""Which resource types are served, and the discovery documents that describe them.

``Registry`` maps (group, plural) and URL (group, version, plural) to a ``ResourceType``;
CRDs add and remove entries at run time. The functions below render ``/``, ``/api``,
``/apis``, ``/apis/<group>[/<version>]``, ``/api/v1`` and ``/version`` for kopf and kubectl.
"""

from __future__ import annotations

from typing import Any

from devcluster.apiserver.errors import NotFound
from devcluster.apiserver.resources import ResourceType, TypeKey

KUBERNETES_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-devcluster"}
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")


class Registry:
    """The served resource types, by key and by URL."""

    def __init__(self) -> None:
        self._types: dict[TypeKey, ResourceType] = {}
        self._by_url: dict[tuple[str, str, str], ResourceType] = {}

    def register(self, resource: ResourceType) -> None:
        """Serve a type (a CRD's new version replaces its old URLs)."""
        old = self._types.get(resource.key)
        if old is not None:
            for version in old.versions:
                self._by_url.pop((old.group, version, old.plural), None)
        self._types[resource.key] = resource
        for version in resource.versions:
            self._by_url[(resource.group, version, resource.plural)] = resource

    def unregister(self, key: TypeKey) -> ResourceType | None:
        resource = self._types.pop(key, None)
        if resource is not None:
            for version in resource.versions:
                self._by_url.pop((resource.group, version, resource.plural), None)
        return resource

    def get(self, key: TypeKey) -> ResourceType | None:
        return self._types.get(key)

    def __getitem__(self, key: TypeKey) -> ResourceType:
        return self._types[key]

    def at_url(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_url.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[ResourceType]]:
        groups: dict[str, list[ResourceType]] = {}
        for resource in self._types.values():
            groups.setdefault(resource.group, []).append(resource)
        return groups


def _group_versions(registry: Registry, group: str) -> list[str]:
    versions: list[str] = []
    for resource in registry.groups().get(group, []):
        for version in resource.versions:
            if version not in versions:
                versions.append(version)
    return versions


def api_versions(server_address: str) -> dict[str, Any]:
    """``/api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any]:
    """``/apis/<group>``."""
    versions = _group_versions(registry, group)
    if not versions:
        raise NotFound("the server could not find the requested resource")
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    """``/apis``."""
    groups = [api_group(registry, group) for group in sorted(registry.groups()) if group]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    """``/api/v1`` and ``/apis/<group>/<version>``: resources, verbs, names, subresources."""
    resources = [r for r in registry.groups().get(group, []) if version in r.versions]
    if not resources:
        raise NotFound("the server could not find the requested resource")
    entries: list[dict[str, Any]] = []
    for resource in sorted(resources, key=lambda r: r.plural):
        entries.append(
            {
                "name": resource.plural,
                "singularName": resource.singular_name,
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": list(resource.verbs),
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            }
        )
        for sub in resource.subresources:
            entries.append(
                {
                    "name": f"{resource.plural}/{sub}",
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def root_paths(registry: Registry) -> list[str]:
    """``/``: every path a client may discover from."""
    paths = {"/api", "/api/v1", "/apis", "/version", *HEALTH_PATHS}
    for resource in registry.all():
        if resource.group:
            paths.add(f"/apis/{resource.group}")
            paths.update(f"/apis/{resource.group}/{v}" for v in resource.versions)
    return sorted(paths)
