"""``meta.k8s.io/v1`` Table responses for ``kubectl get`` (pure functions).

Custom resources: ``Name``, then the CRD's ``additionalPrinterColumns`` (or ``Age`` when it
has none). Built-in kinds: the columns the real API server's printers send (pods READY
STATUS RESTARTS AGE, jobs STATUS COMPLETIONS DURATION AGE, events LAST SEEN TYPE REASON
OBJECT MESSAGE, leases HOLDER, priorityclasses VALUE GLOBAL-DEFAULT...), wide-only columns
with ``priority: 1`` as the server marks them (kubectl shows them with ``-o wide``); other
kinds Name/Age. Ages are Go's ``duration.HumanDuration``. Printer-column JSONPath supports
``.a.b``, ``.a[0]`` and ``.a[?(@.k=="v")].b``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

from devcluster.apiserver.resources import PrinterColumn, ResourceType

_FILTER = re.compile(r"""^\?\(@\.([\w.-]+)\s*==\s*["']([^"']*)["']\)$""")
Obj = Mapping[str, Any]


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


def human_duration(seconds: float) -> str:
    """Go's ``duration.HumanDuration`` (what ``kubectl get`` prints as an age)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _parse(timestamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """How long ago ``timestamp`` was, as kubectl prints it; ``<unknown>`` without one."""
    if not timestamp:
        return "<unknown>"
    now = now or datetime.datetime.now(tz=datetime.UTC)
    return human_duration((now - _parse(timestamp)).total_seconds())


def _cell(obj: Obj, column: PrinterColumn) -> Any:
    value = jsonpath(obj, column.json_path)
    if column.type == "date":
        return age(value) if isinstance(value, str) else "<unknown>"
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return str(value)
    return value


# --------------------------------------------------------------------------- built-in printers


def _status(obj: Obj) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _has_condition(obj: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in _status(obj).get("conditions") or []
    )


def pod_status(pod: Obj) -> str:
    """kubectl's STATUS of a pod: the phase, a container's waiting/terminated reason, or
    Terminating."""
    status = _status(pod)
    reason = str(status.get("reason") or status.get("phase") or "Pending")
    running = False
    for container in reversed(status.get("containerStatuses") or []):
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated:
            code = terminated.get("exitCode", 0)
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
        elif container.get("ready") and "running" in state:
            running = True
    if reason == "Completed" and running:
        reason = "Running" if _has_condition(pod, "Ready") else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_cells(pod: Obj) -> list[Any]:
    status = _status(pod)
    statuses = status.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    return [
        f"{ready}/{total}",
        pod_status(pod),
        str(restarts),
        age(_meta(pod).get("creationTimestamp")),
        status.get("podIP") or "<none>",
        (pod.get("spec") or {}).get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{len(gates)}/{len(gates)}" if gates else "<none>",
    ]


def job_status(job: Obj) -> str:
    """kubectl's STATUS of a Job (1.31+ printer)."""
    for kind, shown in (("Complete", "Complete"), ("Failed", "Failed")):
        if _has_condition(job, kind):
            return shown
    if _meta(job).get("deletionTimestamp"):
        return "Terminating"
    for kind in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(job, kind):
            return kind
    return "Running"


def _job_cells(job: Obj) -> list[Any]:
    spec, status = job.get("spec") or {}, _status(job)
    completions = spec.get("completions")
    succeeded = int(status.get("succeeded") or 0)
    if completions is not None:
        shown = f"{succeeded}/{completions}"
    else:
        shown = f"{succeeded}/1 of {spec.get('parallelism', 1)}"
    duration = ""
    if status.get("startTime"):
        end = status.get("completionTime")
        finish = _parse(end) if end else datetime.datetime.now(tz=datetime.UTC)
        duration = human_duration((finish - _parse(status["startTime"])).total_seconds())
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return [
        job_status(job),
        shown,
        duration,
        age(_meta(job).get("creationTimestamp")),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
    ]


def _event_cells(event: Obj) -> list[Any]:
    first = event.get("firstTimestamp") or event.get("eventTime")
    first_seen = age(first) if first else "<unknown>"
    last = event.get("lastTimestamp")
    last_seen = age(last) if last else first_seen
    count = event.get("count") or 1
    series = event.get("series")
    if isinstance(series, Mapping):
        last_seen = age(series.get("lastObservedTime"))
        count = series.get("count") or count
    involved = event.get("involvedObject") or event.get("regarding") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingController") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return [
        last_seen,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        str(event.get("message") or event.get("note") or "").strip(),
        first_seen,
        int(count),
        _meta(event).get("name", ""),
    ]


def _node_cells(node: Obj) -> list[Any]:
    ready = next(
        (c for c in _status(node).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    state = (
        "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    )
    info = _status(node).get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in _status(node).get("addresses") or []}
    return [
        state,
        "<none>",
        age(_meta(node).get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _created(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


Printer = tuple[tuple[PrinterColumn, ...], Callable[[Obj], list[Any]]]


def _columns(*spec: str) -> tuple[PrinterColumn, ...]:
    """Column names; ``type:`` and a trailing ``*`` (wide only) as in ``"integer:Value"``."""
    columns = []
    for item in spec:
        wide = item.endswith("*")
        kind, _, name = item.rstrip("*").rpartition(":")
        columns.append(PrinterColumn(name=name, json_path="", type=kind or "string",
                                     priority=1 if wide else 0))  # fmt: skip
    return tuple(columns)


BUILTIN_PRINTERS: Mapping[tuple[str, str], Printer] = {
    ("", "pods"): (
        _columns("Ready", "Status", "Restarts", "Age", "IP*", "Node*", "Nominated Node*",
                 "Readiness Gates*"),
        _pod_cells,
    ),
    ("batch", "jobs"): (
        _columns("Status", "Completions", "Duration", "Age", "Containers*", "Images*",
                 "Selector*"),
        _job_cells,
    ),
    ("", "events"): (
        _columns("Last Seen", "Type", "Reason", "Object", "Subobject*", "Source*", "Message",
                 "First Seen*", "Count*", "Name*"),
        _event_cells,
    ),
    ("events.k8s.io", "events"): (
        _columns("Last Seen", "Type", "Reason", "Object", "Subobject*", "Source*", "Message",
                 "First Seen*", "Count*", "Name*"),
        _event_cells,
    ),
    ("coordination.k8s.io", "leases"): (
        _columns("Holder", "Age"),
        lambda o: [(o.get("spec") or {}).get("holderIdentity") or "", _created(o)],
    ),
    ("scheduling.k8s.io", "priorityclasses"): (
        _columns("integer:Value", "boolean:Global-Default", "Age", "PreemptionPolicy"),
        lambda o: [o.get("value", 0), bool(o.get("globalDefault")), _created(o),
                   o.get("preemptionPolicy", "")],
    ),
    ("", "namespaces"): (
        _columns("Status", "Age"),
        lambda o: [_status(o).get("phase", ""), _created(o)],
    ),
    ("", "nodes"): (
        _columns("Status", "Roles", "Age", "Version", "Internal-IP*", "External-IP*",
                 "OS-Image*", "Kernel-Version*", "Container-Runtime*"),
        _node_cells,
    ),
    ("", "secrets"): (
        _columns("Type", "integer:Data", "Age"),
        lambda o: [o.get("type", "Opaque"), len(o.get("data") or {}), _created(o)],
    ),
    ("", "configmaps"): (
        _columns("integer:Data", "Age"),
        lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _created(o)],
    ),
    ("", "serviceaccounts"): (
        _columns("integer:Secrets", "Age"),
        lambda o: [len(o.get("secrets") or []), _created(o)],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        _columns("date:Created At"),
        lambda o: [_meta(o).get("creationTimestamp", "")],
    ),
}  # fmt: skip
_NAME = PrinterColumn(name="Name", json_path=".metadata.name")
_AGE = PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date")


def columns_for(resource: ResourceType) -> list[PrinterColumn]:
    if resource.printer_columns:
        return [_NAME, *resource.printer_columns]
    printer = BUILTIN_PRINTERS.get(resource.key)
    if printer is not None:
        columns = list(printer[0])
        # Events name themselves in a wide column; every other table starts with Name.
        return columns if resource.plural == "events" else [_NAME, *columns]
    return [_NAME, _AGE]


def _cells(resource: ResourceType, obj: Obj, columns: list[PrinterColumn]) -> list[Any]:
    printer = None if resource.printer_columns else BUILTIN_PRINTERS.get(resource.key)
    if printer is None:
        return [_cell(obj, column) for column in columns]
    cells = printer[1](obj)
    return cells if resource.plural == "events" else [_meta(obj).get("name", ""), *cells]


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
        rows.append({"cells": _cells(resource, obj, columns), "object": row_object})
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
