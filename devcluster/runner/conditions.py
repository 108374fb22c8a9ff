"""Status conditions as controllers write them (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devcluster.clock import utc_now


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
) -> list[dict[str, Any]]:
    """Set one condition, keeping lastTransitionTime when the status does not change."""
    now = utc_now()
    result = [dict(c) for c in conditions]
    for condition in result:
        if condition.get("type") == kind:
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now
            condition.update(status=status, lastProbeTime=now)
            for key, value in {"reason": reason, "message": message}.items():
                if value is None:
                    condition.pop(key, None)
                else:
                    condition[key] = value
            return result
    new = {"type": kind, "status": status, "lastProbeTime": now, "lastTransitionTime": now}
    optional = {"reason": reason, "message": message}
    result.append({**new, **{key: value for key, value in optional.items() if value is not None}})
    return result


def is_true(conditions: list[Mapping[str, Any]] | None, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions or [])
