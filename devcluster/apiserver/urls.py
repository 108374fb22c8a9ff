"""API paths split into group, version, namespace, plural, name and subresource (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ParsedUrl:
    group: str
    version: str | None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False


def parse_url(path: str) -> ParsedUrl | None:
    """Split an API path; ``None`` for paths outside ``/api`` and ``/apis``."""
    segments = [segment for segment in path.split("/") if segment]
    if not segments:
        return None
    if segments[0] == "api":
        group, rest = "", segments[1:]
    elif segments[0] == "apis" and len(segments) >= 2:
        group, rest = segments[1], segments[2:]
    else:
        return None
    if not rest:
        return ParsedUrl(group=group, version=None)
    parsed = ParsedUrl(group=group, version=rest[0])
    rest = rest[1:]
    if rest[:1] == ["watch"]:
        parsed.legacy_watch = True
        rest = rest[1:]
    # /namespaces/{ns}/{plural}/... unless it is the namespace's own status/finalize subresource.
    if (
        rest[:1] == ["namespaces"]
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        parsed.namespace = rest[1]
        rest = rest[2:]
    if rest:
        parsed.plural = rest[0]
    if len(rest) >= 2:
        parsed.name = rest[1]
    if len(rest) >= 3:
        parsed.subresource = "/".join(rest[2:])
    return parsed
