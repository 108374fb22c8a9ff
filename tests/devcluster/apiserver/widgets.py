"""Helpers of the API server tests: the Widget custom resource, raw HTTP and watch reads."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes.client

from devcluster.cluster import LocalCluster

DATA = Path(__file__).parent.parent / "data"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"


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


def watch_lines(
    cluster: LocalCluster, path: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read a watch stream until the server ends it (the path carries timeoutSeconds)."""
    request = urllib.request.Request(cluster.url + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=15) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def widget(name: str, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, **extra},
        "spec": {"size": size},
    }


def crd(
    group: str, plural: str, kind: str, *, scope: str, version: str, schema: dict[str, Any]
) -> dict[str, Any]:
    """A CustomResourceDefinition of one served and stored version, ``<plural>.<group>``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def create_widget(custom: kubernetes.client.CustomObjectsApi, ns: str, body: Any) -> Any:
    return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
