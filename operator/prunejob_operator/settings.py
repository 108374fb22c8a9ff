"""The operator's configuration, `OperatorConfig`, read from defaults, env vars and flags.

Every operator setting in one place: defaults, then PRUNEJOB_OPERATOR_* env vars,
then command-line flags (cli.py) — the later one wins."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from prunejob_contract.errors import InvalidArgument

DEFAULT_WORKER_IMAGE = "ghcr.io/prunejob/prunejob-worker:0.1.0"
DEFAULT_LEASE_NAME = "prunejob-operator"
FALLBACK_LEASE_NAMESPACE = "default"  # outside a pod, with no --lease-namespace
ENV_PREFIX = "PRUNEJOB_OPERATOR_"
# What the Deployment's downward API sets (metadata.name, metadata.namespace).
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
OBSOLETE_PEERING = (
    "kopf peering is gone: replicas elect a leader with a Lease "
    "(--lease-name, --no-leader-election for a single process)"
)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    leader_election: bool = True  # False: this process reconciles alone (one local process)
    lease_name: str = DEFAULT_LEASE_NAME
    lease_namespace: str | None = None  # None: the pod's namespace, else "default"
    pod_name: str | None = None  # POD_NAME (downward API): the Lease identity's prefix
    pod_namespace: str | None = None  # POD_NAMESPACE (downward API)
    liveness: str | None = None  # kopf's liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz
    metrics_port: int = 0  # 0: no Prometheus endpoint
    max_running_jobs: int = 0  # 0: no cap
    worker_image: str = DEFAULT_WORKER_IMAGE
    verbose: bool = False
    # A reflector that has not heard from the API server for this long: exit 1.
    watch_stale_seconds: int = 300
    notices: tuple[str, ...] = ()  # one-line warnings about obsolete settings, logged at start

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def lease_namespace_or_default(self) -> str:
        return self.lease_namespace or self.pod_namespace or FALLBACK_LEASE_NAMESPACE


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise InvalidArgument(f"{name}={text!r} is not a boolean; use true or false")


def _parse_int(name: str, text: str, *, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}, got {value}")
    return value


def liveness_url(value: str) -> str:
    """Accepts a port (`8080`), `host:port`, or a full URL; returns kopf's URL form."""
    value = value.strip()
    if "://" in value:
        return value
    if value.isdigit():
        return f"http://0.0.0.0:{value}/healthz"
    if ":" in value:
        return f"http://{value}/healthz"
    raise InvalidArgument(f"liveness endpoint {value!r}: give a port, host:port or a URL")


def from_env(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if environ is None else environ
    config = OperatorConfig()
    changes: dict[str, object] = {}

    def get(field: str) -> str | None:
        return env.get(ENV_PREFIX + field)

    if (value := get("NAMESPACES")) is not None:
        changes["namespaces"] = tuple(ns.strip() for ns in value.split(",") if ns.strip())
    notices: list[str] = []
    if (value := get("LEADER_ELECTION")) is not None:
        changes["leader_election"] = _parse_bool(ENV_PREFIX + "LEADER_ELECTION", value)
    if (value := get("STANDALONE")) is not None:
        standalone = _parse_bool(ENV_PREFIX + "STANDALONE", value)
        if standalone:
            changes["leader_election"] = False
        notices.append(f"{ENV_PREFIX}STANDALONE is obsolete: {OBSOLETE_PEERING}")
    if get("PEERING"):
        notices.append(f"{ENV_PREFIX}PEERING is ignored: {OBSOLETE_PEERING}")
    if value := get("LEASE_NAME"):
        changes["lease_name"] = value
    if value := get("LEASE_NAMESPACE"):
        changes["lease_namespace"] = value
    if value := env.get(POD_NAME_ENV):
        changes["pod_name"] = value
    if value := env.get(POD_NAMESPACE_ENV):
        changes["pod_namespace"] = value
    if value := get("LIVENESS"):
        changes["liveness"] = liveness_url(value)
    if (value := get("METRICS_PORT")) is not None:
        changes["metrics_port"] = _parse_int(ENV_PREFIX + "METRICS_PORT", value)
    if (value := get("MAX_RUNNING_JOBS")) is not None:
        changes["max_running_jobs"] = _parse_int(ENV_PREFIX + "MAX_RUNNING_JOBS", value)
    if value := get("WORKER_IMAGE"):
        changes["worker_image"] = value
    if (value := get("WATCH_STALE_SECONDS")) is not None:
        name = ENV_PREFIX + "WATCH_STALE_SECONDS"
        changes["watch_stale_seconds"] = _parse_int(name, value, minimum=1)
    changes["notices"] = tuple(notices)
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
