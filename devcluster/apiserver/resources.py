"""Resource types the local API server serves: built-ins and CustomResourceDefinitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)

TypeKey = tuple[str, str]  # (group, plural)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0


@dataclass(frozen=True)
class ResourceType:
    """One served resource; objects are stored once per (group, plural), whatever version."""

    group: str
    versions: tuple[str, ...]  # served versions, the preferred (storage) one first
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    extra_subresources: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    schemas: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def key(self) -> TypeKey:
        return (self.group, self.plural)

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def group_resource(self) -> str:
        """``plural.group`` as the API names it in messages (``pods`` for the core group)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def versioned(self, obj: dict[str, Any], version: str) -> dict[str, Any]:
        """The object as served at ``version`` (objects are stored once, at any version)."""
        api_version = self.api_version(version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    @property
    def subresources(self) -> tuple[str, ...]:
        return (("status",) if self.has_status else ()) + self.extra_subresources


NAMESPACES: TypeKey = ("", "namespaces")
NODES: TypeKey = ("", "nodes")
SECRETS: TypeKey = ("", "secrets")
PODS: TypeKey = ("", "pods")
JOBS: TypeKey = ("batch", "jobs")
DEPLOYMENTS: TypeKey = ("apps", "deployments")
CRDS: TypeKey = ("apiextensions.k8s.io", "customresourcedefinitions")
EVENTS: TypeKey = ("", "events")
LEASES: TypeKey = ("coordination.k8s.io", "leases")
PRIORITY_CLASSES: TypeKey = ("scheduling.k8s.io", "priorityclasses")


RBAC = "rbac.authorization.k8s.io"


def _v1(group: str, plural: str, kind: str, **kwargs: Any) -> ResourceType:
    return ResourceType(group=group, versions=("v1",), plural=plural, kind=kind, **kwargs)


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _v1("", "namespaces", "Namespace", namespaced=False, short_names=("ns",), has_status=True),
    _v1("", "nodes", "Node", namespaced=False, short_names=("no",), has_status=True),
    _v1("", "secrets", "Secret"),
    _v1("", "configmaps", "ConfigMap", short_names=("cm",)),
    _v1("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _v1("", "events", "Event", short_names=("ev",)),
    _v1("", "pods", "Pod", short_names=("po",), categories=("all",), has_status=True,
        extra_subresources=("log",)),
    _v1("batch", "jobs", "Job", categories=("all",), has_status=True),
    # Stored and validated as the API server does; no controller runs them here (the
    # tests start the operator's replicas from the stored Deployment, as its pods would).
    _v1("apps", "deployments", "Deployment", short_names=("deploy",), categories=("all",),
        has_status=True),
    # RBAC objects are stored and validated, not enforced (every client is admin here).
    _v1(RBAC, "roles", "Role"),
    _v1(RBAC, "rolebindings", "RoleBinding"),
    _v1(RBAC, "clusterroles", "ClusterRole", namespaced=False),
    _v1(RBAC, "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _v1("events.k8s.io", "events", "Event"),
    _v1("coordination.k8s.io", "leases", "Lease"),
    _v1("scheduling.k8s.io", "priorityclasses", "PriorityClass", namespaced=False,
        short_names=("pc",)),
    _v1("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition",
        namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",),
        has_status=True),
    # kopf's peering resources, so that kopf can run with peering instead of --standalone.
    _v1("kopf.dev", "kopfpeerings", "KopfPeering"),
    _v1("kopf.dev", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
)  # fmt: skip


class CrdError(ValueError):
    """A CRD document that cannot be served; the message names the file and the field."""


def resource_from_crd(crd: Mapping[str, Any], *, origin: str = "CRD") -> ResourceType:
    """Translate an ``apiextensions.k8s.io/v1`` CustomResourceDefinition into a ResourceType."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise CrdError(f"{origin}: kind is {crd.get('kind')!r}, expected CustomResourceDefinition")
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    plural = names.get("plural")
    kind = names.get("kind")
    if not group or not plural or not kind:
        raise CrdError(f"{origin}: spec.group, spec.names.plural and spec.names.kind are required")
    expected_name = f"{plural}.{group}"
    actual_name = (crd.get("metadata") or {}).get("name")
    if actual_name != expected_name:
        raise CrdError(f"{origin}: metadata.name must be {expected_name!r}, not {actual_name!r}")
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not served:
        raise CrdError(f"{origin}: spec.versions has no served version")
    storage = [v for v in served if v.get("storage")] or served[:1]
    ordered = storage + [v for v in served if v is not storage[0]]
    preferred = ordered[0]
    columns = tuple(
        PrinterColumn(
            name=column["name"],
            json_path=column["jsonPath"],
            type=column.get("type", "string"),
            priority=int(column.get("priority", 0)),
        )
        for column in preferred.get("additionalPrinterColumns") or []
    )
    return ResourceType(
        group=group,
        versions=tuple(v["name"] for v in ordered),
        plural=plural,
        kind=kind,
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular") or kind.lower(),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        has_status="status" in (preferred.get("subresources") or {}),
        printer_columns=columns,
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in ordered},
    )


def iter_crd_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        elif path.is_file():
            yield path
        else:
            raise CrdError(f"CRD path {path} does not exist: pass a CRD YAML file or a folder")


def load_crds(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All CustomResourceDefinition documents in the given files/folders (others skipped)."""
    crds: list[dict[str, Any]] = []
    for path in iter_crd_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise CrdError(f"{path}: not valid YAML ({exc})") from exc
        for document in documents:
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                resource_from_crd(document, origin=str(path))  # validate early, name the file
                crds.append(document)
    return crds
