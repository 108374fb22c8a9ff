"""OpenAPI v3 schemas of the built-in kinds, generated from the kubernetes client's models.

OpenAPI v3 schemas of the built-in kinds the API server serves, for the documents kubectl
downloads (``/openapi/v3``) and for unknown-field checks (``fieldValidation``).

They are generated from the ``kubernetes`` client's models (themselves generated from
Kubernetes' OpenAPI) into ``builtin-schemas.json`` beside this module, so that serving needs
no client: ``python -m devcluster.apiserver.builtin_schemas --write`` regenerates it (a test
fails while it is stale). Component names are the client's model names (``V1PodSpec``).
The client's models carry no patch metadata, so the strategic-merge keys of the lists the
API merges by key are added from ``PATCH_KEYS`` (the Go types' ``patchStrategy`` tags).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("devcluster.apiserver")
DATA_FILE = Path(__file__).with_name("builtin-schemas.json")

# (group, version, kind) -> the client's model of it
KINDS: Mapping[tuple[str, str, str], str] = {
    ("", "v1", "Namespace"): "V1Namespace",
    ("", "v1", "Node"): "V1Node",
    ("", "v1", "Secret"): "V1Secret",
    ("", "v1", "ConfigMap"): "V1ConfigMap",
    ("", "v1", "ServiceAccount"): "V1ServiceAccount",
    ("", "v1", "Event"): "CoreV1Event",
    ("", "v1", "Pod"): "V1Pod",
    ("batch", "v1", "Job"): "V1Job",
    ("apps", "v1", "Deployment"): "V1Deployment",
    ("rbac.authorization.k8s.io", "v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io", "v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("events.k8s.io", "v1", "Event"): "EventsV1Event",
    ("coordination.k8s.io", "v1", "Lease"): "V1Lease",
    ("scheduling.k8s.io", "v1", "PriorityClass"): "V1PriorityClass",
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}
EXTRA_MODELS = ("V1Status", "V1DeleteOptions")  # what the paths' requests and answers use
# (model, field) -> (patch strategy, merge key): the lists strategic merge patches merge.
PATCH_KEYS: Mapping[tuple[str, str], tuple[str, str | None]] = {
    ("V1ObjectMeta", "finalizers"): ("merge", None),
    ("V1ObjectMeta", "ownerReferences"): ("merge", "uid"),
    ("V1PodSpec", "containers"): ("merge", "name"),
    ("V1PodSpec", "initContainers"): ("merge", "name"),
    ("V1PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("V1PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("V1PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("V1PodSpec", "hostAliases"): ("merge", "ip"),
    ("V1PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    ("V1PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    ("V1PodSpec", "schedulingGates"): ("merge", "name"),
    ("V1Container", "env"): ("merge", "name"),
    ("V1Container", "ports"): ("merge", "containerPort"),
    ("V1Container", "volumeMounts"): ("merge", "mountPath"),
    ("V1Container", "volumeDevices"): ("merge", "devicePath"),
    ("V1EphemeralContainer", "env"): ("merge", "name"),
    ("V1EphemeralContainer", "ports"): ("merge", "containerPort"),
    ("V1EphemeralContainer", "volumeMounts"): ("merge", "mountPath"),
    ("V1EphemeralContainer", "volumeDevices"): ("merge", "devicePath"),
    ("V1PodStatus", "conditions"): ("merge", "type"),
    ("V1PodStatus", "podIPs"): ("merge", "ip"),
    ("V1PodStatus", "hostIPs"): ("merge", "ip"),
    ("V1JobStatus", "conditions"): ("merge", "type"),
    ("V1DeploymentStatus", "conditions"): ("merge", "type"),
    ("V1NodeStatus", "conditions"): ("merge", "type"),
    ("V1NodeStatus", "addresses"): ("merge", "type"),
    ("V1NodeSpec", "podCIDRs"): ("merge", None),
    ("V1NamespaceStatus", "conditions"): ("merge", "type"),
    ("V1ServiceAccount", "secrets"): ("merge", "name"),
}
_DROPPED = ("title", "description", "default", "examples")


def _clean(node: Any) -> Any:
    """A pydantic JSON schema node as Kubernetes writes OpenAPI: no ``null`` alternatives,
    titles, ``additionalProperties: false``; refs to ``#/components/schemas``."""
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**options[0], **merged}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "$ref":
            out[key] = "#/components/schemas/" + str(value).rsplit("/", 1)[-1]
        elif key == "properties":
            out[key] = {name: _clean(sub) for name, sub in value.items()}
        else:
            out[key] = _clean(value)
    return out


def generate() -> dict[str, Any]:
    """The schemas from the installed ``kubernetes`` client (a development dependency)."""
    import kubernetes.client

    schemas: dict[str, Any] = {}
    for name in (*KINDS.values(), *EXTRA_MODELS):
        model = getattr(kubernetes.client, name)
        schema = model.model_json_schema(by_alias=True)
        for def_name, definition in (schema.pop("$defs", None) or {}).items():
            schemas[def_name] = _clean(definition)
        schemas[name] = _clean(schema)
    for (model_name, field), (strategy, key) in PATCH_KEYS.items():
        prop = schemas.get(model_name, {}).get("properties", {}).get(field)
        if prop is None:
            continue
        prop["x-kubernetes-patch-strategy"] = strategy
        if key:
            prop["x-kubernetes-patch-merge-key"] = key
    for (group, version, kind), name in KINDS.items():
        schemas[name]["x-kubernetes-group-version-kind"] = [
            {"group": group, "version": version, "kind": kind}
        ]
    kinds = {f"{g}/{v}/{k}": name for (g, v, k), name in KINDS.items()}
    return {"kinds": kinds, "schemas": dict(sorted(schemas.items()))}


@functools.cache
def load() -> dict[str, Any]:
    """The committed schemas; empty (no built-in checks) if the file is not installed."""
    try:
        data: dict[str, Any] = json.loads(DATA_FILE.read_text())
    except FileNotFoundError:
        log.warning(
            "devcluster: %s is missing: built-in kinds are served without schemas", DATA_FILE
        )
        return {"kinds": {}, "schemas": {}}
    return data


def kind_schema(group: str, version: str, kind: str) -> str | None:
    """The component name of a built-in kind's schema, if there is one."""
    name: str | None = load()["kinds"].get(f"{group}/{version}/{kind}")
    return name


def render(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DATA_FILE.name}")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.write:
        DATA_FILE.write_text(text)
        print(f"wrote {DATA_FILE} ({len(text)} bytes)")
        return 0
    current = DATA_FILE.read_text() if DATA_FILE.exists() else ""
    print("up to date" if current == text else f"{DATA_FILE.name} is stale: run with --write")
    return 0 if current == text else 1


if __name__ == "__main__":
    sys.exit(main())
