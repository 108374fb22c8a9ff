"""The API calls the reconciler makes, as a protocol, and the errors they raise.

`client.HttpKubeApi` implements it over HTTP; tests drive the reconciler with a fake.
Every write is by name and idempotent: a Job that exists already, or an object that
is gone, is an answer (None/False), not an error. Other failures raise `ApiError`
after the implementation's own retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ApiError(Exception):
    """A request the API server refused or never answered; its text is one line."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code  # HTTP status; None when no response came
        self.reason = reason  # the Status' reason (NotFound, AlreadyExists, ...)


class NotFound(ApiError):
    """404: the object (or its namespace) is gone."""


class Conflict(ApiError):
    """409: it exists already, or our resourceVersion is stale."""


@dataclass(frozen=True)
class ObjectRef:
    """An Event's involvedObject."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    def to_dict(self) -> dict[str, str]:
        ref = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "namespace": self.namespace,
        }
        return {key: value for key, value in ref.items() if value}


class KubeApi(Protocol):
    async def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Job; None when one of that name exists already (409)."""
        ...

    async def set_job_suspended(self, namespace: str, name: str, suspended: bool) -> bool:
        """Merge-patch `spec.suspend`; False when the Job is gone."""
        ...

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        ...

    async def patch_prunejob_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the patched object, or None if it is gone."""
        ...

    async def emit_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `ref` (type Normal or Warning)."""
        ...
