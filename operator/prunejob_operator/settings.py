"""Every operator setting in one place: defaults, then PRUNEJOB_OPERATOR_* env vars,
then command-line flags (cli.py) — the later one wins."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from prunejob_contract.errors import InvalidArgument

DEFAULT_WORKER_IMAGE = "ghcr.io/prunejob/prunejob-worker:0.1.0"
DEFAULT_PEERING = "prunejob"
ENV_PREFIX = "PRUNEJOB_OPERATOR_"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    standalone: bool = False  # no kopf peering (a single replica, or tests)
    peering: str = DEFAULT_PEERING
    liveness: str | None = None  # kopf's liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz
    metrics_port: int = 0  # 0: no Prometheus endpoint
    max_running_jobs: int = 0  # 0: no cap
    worker_image: str = DEFAULT_WORKER_IMAGE
    verbose: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


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
    if (value := get("STANDALONE")) is not None:
        changes["standalone"] = _parse_bool(ENV_PREFIX + "STANDALONE", value)
    if value := get("PEERING"):
        changes["peering"] = value
    if value := get("LIVENESS"):
        changes["liveness"] = liveness_url(value)
    if (value := get("METRICS_PORT")) is not None:
        changes["metrics_port"] = _parse_int(ENV_PREFIX + "METRICS_PORT", value)
    if (value := get("MAX_RUNNING_JOBS")) is not None:
        changes["max_running_jobs"] = _parse_int(ENV_PREFIX + "MAX_RUNNING_JOBS", value)
    if value := get("WORKER_IMAGE"):
        changes["worker_image"] = value
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
