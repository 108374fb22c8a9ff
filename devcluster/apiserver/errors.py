"""API errors that render as Kubernetes ``Status`` objects (code, reason, message, details)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the API server answers with; ``reason`` is the Kubernetes StatusReason."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _error(name: str, code: int, reason: str = "") -> type[ApiError]:
    """The ``ApiError`` of one HTTP status; ``reason`` (the StatusReason) defaults to ``name``."""
    return type(name, (ApiError,), {"code": code, "reason": reason or name, "__module__": __name__})


# The statuses the server answers with, as data: name, HTTP code, StatusReason.
BadRequest = _error("BadRequest", 400)
NotFound = _error("NotFound", 404)
MethodNotAllowed = _error("MethodNotAllowed", 405)
AlreadyExists = _error("AlreadyExists", 409)
Conflict = _error("Conflict", 409)
Gone = _error("Gone", 410, "Expired")
UnsupportedMediaType = _error("UnsupportedMediaType", 415)
Invalid = _error("Invalid", 422)


def details(group: str, plural: str, name: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"group": group, "kind": plural}
    if name:
        out["name"] = name
    return out
