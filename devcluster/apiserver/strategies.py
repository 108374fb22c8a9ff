"""What the API server does to an object of a given type before storing it (pure functions).

Kubernetes calls these the registry strategies: name and kind checks, the defaults a
built-in type gets on create (Pods, Jobs, Namespaces, Secrets' ``stringData``), a CRD's
structural schema (defaults, pruning, validation) and a CRD's accepted status. The
per-type defaults are data (``POD_CONTAINER_DEFAULTS``, ``JOB_SPEC_DEFAULTS``), so a new
default is one line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from devcluster.apiserver import fieldcheck, schema
from devcluster.apiserver.errors import BadRequest, Invalid, details
from devcluster.apiserver.resources import (
    DEPLOYMENTS,
    JOBS,
    NAMESPACES,
    NODES,
    PODS,
    SECRETS,
    CrdError,
    ResourceType,
    resource_from_crd,
)
from devcluster.clock import utc_now

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Kubernetes' own defaults (not the worker contract's): the kubelet reads this path.
POD_CONTAINER_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
# The Deployment defaults (apps/v1 SetDefaults_Deployment) that clients read back.
DEPLOYMENT_SPEC_DEFAULTS: dict[str, Any] = {
    "replicas": 1,
    "revisionHistoryLimit": 10,
    "progressDeadlineSeconds": 600,
}
JOB_SPEC_DEFAULTS = {
    "backoffLimit": 6,
    "completions": 1,
    "parallelism": 1,
    "suspend": False,
    "completionMode": "NonIndexed",
}
# Metadata a client may send but the server sets (create) or keeps from the stored object.
TRANSIENT_ON_CREATE = ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields")
IMMUTABLE_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "namespace",
    "name",
)


DEFAULT_TERMINATION_GRACE_SECONDS = 30
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


def go_strings(values: list[str]) -> str:
    """A list of strings as Go's ``%#v`` prints a ``[]string``."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def deletion_finished(obj: Mapping[str, Any]) -> bool:
    """A terminating object goes once no finalizer holds it and its grace period is over
    (a Pod's kubelet ends that with a grace-0 DELETE)."""
    meta = obj.get("metadata") or {}
    return (
        bool(meta.get("deletionTimestamp"))
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


def propagation_policy(
    resource: ResourceType, options: Mapping[str, Any], query: Mapping[str, str]
) -> str:
    """DeleteOptions' policy: explicit, ``orphanDependents``, or the resource's default
    (batch/v1 Jobs orphan their Pods, for backwards compatibility; all else Background)."""
    policy = query.get("propagationPolicy") or options.get("propagationPolicy")
    if policy in ("Orphan", "Background", "Foreground"):
        return str(policy)
    if policy:
        raise BadRequest(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", '
            '"Background", "Orphan"'
        )
    orphan = options.get("orphanDependents")
    if orphan is None and "orphanDependents" in query:
        orphan = query["orphanDependents"] in ("true", "1")
    if orphan is not None:
        return "Orphan" if orphan else "Background"
    return "Orphan" if resource.key == JOBS else "Background"


def grace_period(
    resource: ResourceType,
    obj: Mapping[str, Any],
    options: Mapping[str, Any],
    query: Mapping[str, str],
) -> int | None:
    """Seconds a deleted Pod gets to terminate (``None`` for other kinds): 0 when it is not
    bound to a node or already finished, else the request's ``gracePeriodSeconds`` or its
    ``terminationGracePeriodSeconds`` (30)."""
    if resource.key != PODS:
        return None
    spec = obj.get("spec") or {}
    phase = (obj.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in TERMINAL_POD_PHASES:
        return 0
    given = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    if given is None:
        given = spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS)
    try:
        return max(int(given), 0)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid gracePeriodSeconds {given!r}") from exc


def spec_part(obj: Mapping[str, Any], with_status: bool) -> dict[str, Any]:
    """What a generation tracks: everything but metadata (and status if it is a subresource)."""
    skipped = {"metadata", "status"} if with_status else {"metadata"}
    return {key: value for key, value in obj.items() if key not in skipped}


def fold_string_data(secret: dict[str, Any]) -> None:
    """A Secret's ``stringData`` is write-only: the API server merges it into ``data``
    (base64) and never returns it, so it must not be stored as given either."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data


def validate_name(resource: ResourceType, name: str) -> None:
    pattern, limit = (_DNS_LABEL, 63) if resource.plural == "namespaces" else (_DNS_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        raise Invalid(
            f'{resource.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
            f"a lowercase RFC 1123 name must consist of lower case alphanumeric characters, "
            f"'-' or '.', start and end with an alphanumeric character, at most {limit} long",
            details=details(resource.group, resource.plural, name),
        )


def check_kind(resource: ResourceType, body: Mapping[str, Any]) -> None:
    kind = body.get("kind")
    if kind not in (None, "", resource.kind):
        raise BadRequest(
            f"the body is a {kind!r} but the URL is for {resource.kind!r} ({resource.plural})"
        )
    api_version = body.get("apiVersion")
    if api_version and api_version.rpartition("/")[0] != resource.group:
        raise BadRequest(
            f"the body's apiVersion {api_version!r} does not match the URL's group "
            f"{resource.group or 'core'!r}"
        )


def _default_pod_spec(spec: dict[str, Any]) -> None:
    """A pod spec's defaults (a Pod's, or a Deployment's template's)."""
    spec.setdefault("restartPolicy", "Always")
    for container in spec.get("containers") or []:
        for field, value in POD_CONTAINER_DEFAULTS.items():
            container.setdefault(field, value)


def prepare_for_create(resource: ResourceType, obj: dict[str, Any]) -> None:
    """The defaults the real API server's strategies apply that clients look at."""
    if resource.has_status and resource.key != NODES:
        obj.pop("status", None)
    if resource.key == NAMESPACES:
        obj["status"] = {"phase": "Active"}
    elif resource.key == SECRETS:
        fold_string_data(obj)
    elif resource.key == PODS:
        _default_pod_spec(obj.setdefault("spec", {}))
        obj["status"] = {"phase": "Pending"}
    elif resource.key == JOBS:
        spec = obj.setdefault("spec", {})
        uid = obj["metadata"]["uid"]
        name = obj["metadata"]["name"]
        for field, value in JOB_SPEC_DEFAULTS.items():
            spec.setdefault(field, value)
        template = spec.setdefault("template", {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(
            {
                "controller-uid": uid,
                "batch.kubernetes.io/controller-uid": uid,
                "job-name": name,
                "batch.kubernetes.io/job-name": name,
            }
        )
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        obj["status"] = {}
    elif resource.key == DEPLOYMENTS:
        spec = obj.setdefault("spec", {})
        for field, value in DEPLOYMENT_SPEC_DEFAULTS.items():
            spec.setdefault(field, value)
        rolling = {"maxUnavailable": "25%", "maxSurge": "25%"}
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": rolling})
        template = spec.get("template") or {}
        if isinstance(template.get("spec"), dict):
            _default_pod_spec(template["spec"])
        obj["status"] = {}


def validate_schema(
    resource: ResourceType,
    version: str,
    obj: dict[str, Any],
    on_unknown: Callable[[list[str]], None] | None = None,
) -> None:
    """Drop unknown fields (a built-in kind's schema, or the CRD version's structural
    schema, which also fills defaults), tell ``on_unknown`` which, then check the CRD's
    schema (422)."""
    openapi = resource.schemas.get(version)
    unknown = fieldcheck.prune_unknown(resource, version, obj)
    if openapi:
        schema.apply_defaults(openapi, obj, unknown)
    if unknown and on_unknown is not None:
        on_unknown(unknown)
    if not openapi:
        return
    problems = schema.validate(openapi, obj)
    if problems:
        name = obj.get("metadata", {}).get("name", "")
        raise Invalid(
            f'{resource.kind}.{resource.group} "{name}" is invalid: ' + ", ".join(problems),
            details={
                "name": name,
                "group": resource.group,
                "kind": resource.kind,
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "message": message.strip(),
                        "field": field,
                    }
                    for field, _, message in (p.partition(":") for p in problems)
                ],
            },
        )


def accept_crd(obj: dict[str, Any]) -> dict[str, Any]:
    """A CRD as stored: checked (422 if it cannot be served) with its names accepted."""
    try:
        resource_from_crd(obj)
    except CrdError as exc:
        raise Invalid(str(exc)) from exc
    names = obj["spec"]["names"]
    now = utc_now()
    obj["status"] = {
        "acceptedNames": names,
        "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
    }
    return obj
