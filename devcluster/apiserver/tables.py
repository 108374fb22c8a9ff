"""``meta.k8s.io/v1`` Table responses for ``kubectl get`` (pure functions).

Columns: ``Name``, then a CRD's ``additionalPrinterColumns`` (or ``Age`` when it has none);
pods get ``Status`` (phase or waiting reason) and jobs ``Status``; other built-ins Name/Age.
Printer-column JSONPath supports ``.a.b``, ``.a[0]`` and ``.a[?(@.k=="v")].b``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from devcluster.apiserver.resources import PrinterColumn, ResourceType

_FILTER = re.compile(r"""^\?\(@\.([\w.-]+)\s*==\s*["']([^"']*)["']\)$""")


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _tokens(path: str) -> list[str]:
    path = path.strip().removeprefix("{").removesuffix("}").strip()
    tokens: list[str] = []
    for match in re.finditer(r"\[([^\]]*)\]|\.?([^.\[]+)", path):
        tokens.append(f"[{match.group(1)}]" if match.group(1) is not None else match.group(2))
    return tokens


def jsonpath(obj: Any, path: str) -> Any:
    """A tiny JSONPath subset; ``None`` when the path leads nowhere."""
    value = obj
    for token in _tokens(path):
        if value is None:
            return None
        if token.startswith("["):
            inner = token[1:-1]
            if inner.isdigit() and isinstance(value, list):
                value = value[int(inner)] if int(inner) < len(value) else None
            elif (match := _FILTER.match(inner)) and isinstance(value, list):
                key, wanted = match.groups()
                value = next((v for v in value if str(jsonpath(v, "." + key)) == wanted), None)
            else:
                return None
        elif isinstance(value, Mapping):
            value = value.get(token)
        else:
            return None
    return value


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kubectl's short age format: 42s, 5m10s, 3h, 2d."""
    if not timestamp:
        return "<unknown>"
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(tz=datetime.UTC)) - created).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _cell(obj: Mapping[str, Any], column: PrinterColumn) -> Any:
    value = jsonpath(obj, column.json_path)
    if column.type == "date":
        return age(value) if isinstance(value, str) else "<unknown>"
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def _pod_status(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        for kind in ("waiting", "terminated"):
            if kind in state and state[kind].get("reason"):
                return str(state[kind]["reason"])
    return str(status.get("phase", "Pending"))


def _job_status(job: Mapping[str, Any]) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    if (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    return "Running"


def columns_for(resource: ResourceType) -> list[PrinterColumn]:
    name = PrinterColumn(name="Name", json_path=".metadata.name")
    created = PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date")
    if resource.printer_columns:
        return [name, *resource.printer_columns]
    if resource.key in (("", "pods"), ("batch", "jobs")):
        return [name, PrinterColumn(name="Status", json_path=""), created]
    return [name, created]


def render_table(
    resource: ResourceType,
    items: list[dict[str, Any]],
    resource_version: int,
    query: Mapping[str, str],
) -> dict[str, Any]:
    columns = columns_for(resource)
    include = query.get("includeObject", "Metadata")
    rows = []
    for obj in items:
        cells: list[Any] = []
        for column in columns:
            if column.name == "Status" and not column.json_path:
                cells.append(_pod_status(obj) if resource.plural == "pods" else _job_status(obj))
            else:
                cells.append(_cell(obj, column))
        if include == "Object":
            row_object: dict[str, Any] = obj
        elif include == "None":
            row_object = {}
        else:
            row_object = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append({"cells": cells, "object": row_object})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(resource_version)},
        "columnDefinitions": [
            {
                "name": column.name,
                "type": "string" if column.type == "date" else column.type,
                "format": "name" if column.name == "Name" else "",
                "description": "",
                "priority": column.priority,
            }
            for column in columns
        ],
        "rows": rows,
    }
