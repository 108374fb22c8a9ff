"""Validation and admission of built-in kinds: Leases, PriorityClasses, Jobs, Deployments, Pods.

Validation and admission of built-in kinds, as the real API server does them: Leases
(``coordination.k8s.io/v1``), PriorityClasses (``scheduling.k8s.io/v1``), the fields of a
Job that cannot change, a Deployment's selector (required, matching its template's labels,
immutable) and pod restart policy, and the Priority admission plugin's work on Pods
(``spec.priority`` from ``spec.priorityClassName``).

Pure functions over JSON objects; admission gets the stored PriorityClasses passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from devcluster.apiserver.errors import ApiError, BadRequest, FieldError, forbidden, invalid
from devcluster.apiserver.resources import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    LEASES,
    PRIORITY_CLASSES,
    ResourceType,
)
from devcluster.apiserver.selectors import label_selector_matches

# The system classes every cluster has (created by the API server at start-up).
SYSTEM_PRIORITY_CLASSES: tuple[dict[str, Any], ...] = (
    {
        "metadata": {"name": "system-node-critical"},
        "value": 2000001000,
        "description": "Used for system critical pods that must not be moved from their "
        "current node.",
    },
    {
        "metadata": {"name": "system-cluster-critical"},
        "value": 2000000000,
        "description": "Used for system critical pods that must run in the cluster, but can "
        "be moved to another node if necessary.",
    },
)
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
PREEMPTION_POLICIES = ("Never", "PreemptLowerPriority")
DEFAULT_PREEMPTION_POLICY = "PreemptLowerPriority"
# metav1.MicroTime is decoded with exactly this Go layout (six fractional digits): a
# timestamp without them ("...:00Z", what Python's isoformat() writes at .000000) is a 400.
MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_MICRO_TIME = re.compile(_SECONDS.pattern + r"\.\d{6}(Z|[+-]\d{2}:\d{2})$")
MICRO_TIME_FIELDS: Mapping[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    LEASES: (("spec", "acquireTime"), ("spec", "renewTime")),
    EVENTS: (("eventTime",), ("series", "lastObservedTime")),
    ("events.k8s.io", "events"): (("eventTime",), ("series", "lastObservedTime")),
}


def _go_value(value: Any) -> str:
    """A value as Go's field errors print it."""
    return f'"{value}"' if isinstance(value, str) else str(value)


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _micro_time_problem(value: Any) -> str | None:
    """Why Go's ``time.Parse(MICRO_TIME_LAYOUT, value)`` fails, or ``None`` if it parses."""
    if not isinstance(value, str):
        return f"json: cannot unmarshal {type(value).__name__} into a MicroTime"
    if _MICRO_TIME.match(value):
        return None
    if not _SECONDS.match(value):
        return f'parsing time {_go_value(value)} as "{MICRO_TIME_LAYOUT}": cannot parse it'
    rest = value[19:]
    if not re.match(r"^\.\d{6}", rest):
        return (
            f'parsing time {_go_value(value)} as "{MICRO_TIME_LAYOUT}": '
            f'cannot parse "{rest}" as ".000000"'
        )
    return (
        f'parsing time {_go_value(value)} as "{MICRO_TIME_LAYOUT}": '
        f'cannot parse "{rest[7:]}" as "Z07:00"'
    )


def check_decodable(resource: ResourceType, version: str, obj: Mapping[str, Any]) -> None:
    """What decoding the body into the Go type rejects (400) for the fields modelled here."""
    for path in MICRO_TIME_FIELDS.get(resource.key, ()):
        value = _dig(obj, path)
        problem = None if value is None else _micro_time_problem(value)
        if problem is not None:
            raise BadRequest(
                f'{resource.kind} in version "{version}" cannot be handled as a '
                f"{resource.kind}: {problem}"
            )


# --------------------------------------------------------------------------- validation


def _lease_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errors.append(
            (
                "spec.leaseDurationSeconds",
                "FieldValueInvalid",
                f"Invalid value: {_go_value(duration)}: must be greater than 0",
            )
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errors.append(
            (
                "spec.leaseTransitions",
                "FieldValueInvalid",
                f"Invalid value: {_go_value(transitions)}: must be greater than or equal to 0",
            )
        )
    if spec.get("preferredHolder") and not spec.get("strategy"):
        errors.append(
            (
                "spec.preferredHolder",
                "FieldValueForbidden",
                "Forbidden: may only be specified if `strategy` is defined",
            )
        )
    return errors


def _is_system_class(obj: Mapping[str, Any]) -> bool:
    name = obj["metadata"]["name"]
    return any(
        pc["metadata"]["name"] == name
        and pc["value"] == obj.get("value")
        and not obj.get("globalDefault")
        for pc in SYSTEM_PRIORITY_CLASSES
    )


def _priority_class_errors(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None
) -> list[FieldError]:
    errors: list[FieldError] = []
    name = obj["metadata"]["name"]
    value = obj.get("value", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(("value", "FieldValueInvalid", f"Invalid value: {_go_value(value)}"))
    elif name.startswith("system-"):
        if not _is_system_class(obj):
            errors.append(
                (
                    "metadata.name",
                    "FieldValueForbidden",
                    "Forbidden: priority class names with 'system-' prefix are reserved for "
                    f"system use only. error: {name!r} is not a known system priority class",
                )
            )
    elif value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errors.append(
            (
                "value",
                "FieldValueForbidden",
                "Forbidden: maximum allowed value of a user defined priority is "
                f"{HIGHEST_USER_DEFINABLE_PRIORITY}",
            )
        )
    policy = obj.get("preemptionPolicy")
    if policy is not None and policy not in PREEMPTION_POLICIES:
        supported = ", ".join(f'"{p}"' for p in PREEMPTION_POLICIES)
        errors.append(
            (
                "preemptionPolicy",
                "FieldValueNotSupported",
                f"Unsupported value: {_go_value(policy)}: supported values: {supported}",
            )
        )
    if old is not None:
        if obj.get("value", 0) != old.get("value", 0):
            errors.append(
                ("value", "FieldValueForbidden", "Forbidden: may not be changed in an update.")
            )
        if obj.get("preemptionPolicy") != old.get("preemptionPolicy"):
            errors.append(
                (
                    "preemptionPolicy",
                    "FieldValueInvalid",
                    f"Invalid value: {_go_value(obj.get('preemptionPolicy'))}: field is immutable",
                )
            )
    return errors


# A Job's fields that never change after creation (ValidateJobSpecUpdate).
JOB_IMMUTABLE = (
    "selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy",
    "successPolicy", "podReplacementPolicy", "completions",
)  # fmt: skip
# What a suspended Job that never started may change in its template (Kueue does this).
MUTABLE_SCHEDULING = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _immutable(path: str, value: Any) -> FieldError:
    shown = "{...}" if isinstance(value, (dict, list)) else _go_value(value)
    return (path, "FieldValueInvalid", f"Invalid value: {shown}: field is immutable")


def _job_update_errors(obj: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    errors = [
        _immutable(f"spec.{name}", spec.get(name))
        for name in JOB_IMMUTABLE
        if spec.get(name) != old_spec.get(name)
    ]
    template, old_template = spec.get("template") or {}, old_spec.get("template") or {}
    if template != old_template:
        never_started = bool(spec.get("suspend")) and not (old.get("status") or {}).get("startTime")
        if never_started:

            def fixed(t: Mapping[str, Any]) -> Any:
                pod = {
                    k: v for k, v in (t.get("spec") or {}).items() if k not in MUTABLE_SCHEDULING
                }
                meta = {k: v for k, v in (t.get("metadata") or {}).items()
                        if k not in ("labels", "annotations")}  # fmt: skip
                return meta, pod

            changed = fixed(template) != fixed(old_template)
        else:
            changed = True
        if changed:
            errors.append(_immutable("spec.template", template))
    return errors


def _go_map(labels: Mapping[str, Any]) -> str:
    inner = ", ".join(f'"{key}":"{value}"' for key, value in sorted(labels.items()))
    return f"map[string]string{{{inner}}}"


def _deployment_errors(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector")
    errors: list[FieldError] = []
    if not selector:
        errors.append(("spec.selector", "FieldValueRequired", "Required value"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(
            ("spec.selector", "FieldValueInvalid", "Invalid value: {}: empty selector is invalid "
             "for deployment")
        )  # fmt: skip
    elif not label_selector_matches(selector, labels):
        errors.append(
            ("spec.template.metadata.labels", "FieldValueInvalid",
             f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`")
        )  # fmt: skip
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        errors.append(
            ("spec.replicas", "FieldValueInvalid",
             f"Invalid value: {replicas}: must be greater than or equal to 0")
        )  # fmt: skip
    restart = (template.get("spec") or {}).get("restartPolicy", "Always")
    if restart != "Always":
        errors.append(
            ("spec.template.spec.restartPolicy", "FieldValueNotSupported",
             f'Unsupported value: "{restart}": supported values: "Always"')
        )  # fmt: skip
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        errors.append(_immutable("spec.selector", selector))
    return errors


def validate(resource: ResourceType, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> None:
    """The type's validation (422 with per-field causes); ``old`` on updates."""
    if resource.key == LEASES:
        errors = _lease_errors(obj)
    elif resource.key == PRIORITY_CLASSES:
        errors = _priority_class_errors(obj, old)
    elif resource.key == JOBS and old is not None:
        errors = _job_update_errors(obj, old)
    elif resource.key == DEPLOYMENTS:
        errors = _deployment_errors(obj, old)
    else:
        return
    if errors:
        raise invalid(resource.group, resource.kind, obj["metadata"]["name"], errors)


def prepare(resource: ResourceType, obj: dict[str, Any]) -> None:
    """Defaults of the kinds modelled here."""
    if resource.key == PRIORITY_CLASSES:
        obj.setdefault("preemptionPolicy", DEFAULT_PREEMPTION_POLICY)


# --------------------------------------------------------------------------- admission


def default_class(classes: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ``globalDefault`` PriorityClass (the lowest value if several, as the plugin picks)."""
    defaults = [pc for pc in classes if pc.get("globalDefault")]
    return min(defaults, key=lambda pc: pc.get("value", 0)) if defaults else None


def admit_priority_class(
    obj: Mapping[str, Any], classes: Iterable[Mapping[str, Any]], *, creating: bool
) -> None:
    """Only one PriorityClass may be the ``globalDefault`` (403 otherwise)."""
    if not obj.get("globalDefault"):
        return
    current = default_class(classes)
    name = obj["metadata"]["name"]
    if current is not None and (creating or current["metadata"]["name"] != name):
        raise forbidden(
            "scheduling.k8s.io",
            "priorityclasses",
            name,
            f"PriorityClass {current['metadata']['name']} is already marked as default. "
            "Only one default can exist",
        )


def admit_pod(
    pod: dict[str, Any], classes: Mapping[str, Mapping[str, Any]], display_name: str
) -> None:
    """The Priority admission plugin on Pod create: resolve ``priorityClassName`` (or the
    global default) into ``spec.priority`` and ``spec.preemptionPolicy``; 403 for an
    unknown class or a conflicting integer priority."""

    def refused(why: str) -> ApiError:
        return forbidden("", "pods", display_name, why)

    spec = pod.setdefault("spec", {})
    name = spec.get("priorityClassName") or ""
    policy: str | None
    if not name:
        default = default_class(classes.values())
        if default is None:
            priority, policy = 0, None
        else:
            priority, policy = int(default.get("value", 0)), default.get("preemptionPolicy")
            spec["priorityClassName"] = default["metadata"]["name"]
    else:
        pc = classes.get(name)
        if pc is None:
            raise refused(f"no PriorityClass with name {name} was found")
        priority, policy = int(pc.get("value", 0)), pc.get("preemptionPolicy")
    given = spec.get("priority")
    if given is not None and given != priority:
        raise refused(
            f"the integer value of priority ({given}) must not be provided in pod spec; "
            f"priority admission controller computed {priority} from the given PriorityClass name",
        )
    spec["priority"] = priority
    if policy is not None:
        given_policy = spec.get("preemptionPolicy")
        if given_policy is not None and given_policy != policy:
            raise refused(
                f"the string value of PreemptionPolicy ({given_policy}) must not be provided in "
                f"pod spec; priority admission controller computed {policy} from the given "
                "PriorityClass name",
            )
        spec["preemptionPolicy"] = policy
