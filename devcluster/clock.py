"""Timestamps as the Kubernetes API writes them (RFC 3339, UTC, whole seconds)."""

from __future__ import annotations

import datetime


def utc_now() -> str:
    """Now, as ``2024-01-31T12:00:00Z``."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime.datetime:
    """An API timestamp (``...Z``) as an aware datetime."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
