"""The API calls the operator makes, as protocols, and the errors they raise.

`client.HttpKubeApi` implements them over HTTP; tests drive the reconciler, the
reflectors and the elector with fakes. `KubeApi` is what the reconciler writes with:
every write is by name and idempotent (a Job that exists already, or an object that
is gone, is an answer, None/False, not an error); other failures raise `ApiError`
after the implementation's own retries. `ListWatch` feeds the reflectors and
`LeaseApi` the leader elector: one attempt each, their callers retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class ApiError(Exception):
    """A request the API server refused or never answered; its text is one line."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code  # HTTP status; None when no response came
        self.reason = reason  # the Status' reason (NotFound, AlreadyExists, ...)
        self.retry_after = retry_after  # seconds the server asked us to wait (429, 503)


class NotFound(ApiError):
    """404: the object (or its namespace) is gone."""


class Conflict(ApiError):
    """409: it exists already, or our resourceVersion is stale."""


class Gone(ApiError):
    """410: the resourceVersion (or continue token) is too old: list again."""


class NotLeader(ApiError):
    """A write refused by this process itself: it does not hold the leader Lease."""


@dataclass(frozen=True)
class ListPage:
    """One page of a list: the items, the list's resourceVersion, the continue token."""

    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str = ""


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

    async def remove_pod_finalizer(
        self, namespace: str, name: str, finalizer: str, *, finalizers: Sequence[str], version: str
    ) -> bool:
        """Drop `finalizer` from a pod whose finalizers were `finalizers` at
        resourceVersion `version` (optimistic concurrency); False when the pod is gone or
        changed meanwhile (its next watch event asks again)."""
        ...

    async def patch_prunejob_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the patched object, or None if it is gone."""
        ...

    async def emit_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `ref` (type Normal or Warning)."""
        ...


class ListWatch(Protocol):
    """List and watch one collection (a path such as /api/v1/pods), one attempt each."""

    async def list_page(
        self, where: str, *, label_selector: str = "", limit: int = 0, continue_token: str = ""
    ) -> ListPage:
        """One page of the collection, read from etcd (no resourceVersion: consistent)."""
        ...

    async def watch(
        self,
        where: str,
        *,
        resource_version: str,
        label_selector: str = "",
        timeout_seconds: int,
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        """Stream the changes after `resource_version` to `on_event` (each decoded
        event: ADDED, MODIFIED, DELETED, BOOKMARK) until the server ends the stream
        (returns), or it fails: `ApiError`, `Gone` for a 410 in either form (an HTTP 410
        answer, or an ERROR event with code 410 in the stream), `code` None for a stream
        that dropped or fell silent. What `on_event` raises ends the watch, propagated."""
        ...


class LeaseApi(Protocol):
    """coordination.k8s.io/v1 Leases, one attempt each within `timeout` seconds."""

    async def get_lease(
        self, namespace: str, name: str, *, timeout: float
    ) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        ...

    async def create_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        """Create it; `Conflict` when one exists already (someone else was faster)."""
        ...

    async def replace_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        """Update it (PUT) at body's resourceVersion; `Conflict` when that is stale."""
        ...
