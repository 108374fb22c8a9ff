"""The operator's Kubernetes API client (`HttpKubeApi`): aiohttp, retries and a leader write fence.

`KubeApi`, `ListWatch` and `LeaseApi` over HTTP: aiohttp with the credentials of
`connection.Connection`.

Requests are JSON; one session (keep-alive connection pool) per operator. The
reconciler's requests retry what a retry can fix — no response, a timeout, 429 and
5xx — after `BACKOFFS` (or the server's Retry-After when it asks for longer); a 401
asks the credentials again once (rotated tokens). What is left raises
`kubeapi.ApiError` with a one-line message: `PATCH /apis/...: HTTP 422 Invalid: <the
Status message>`. Writes go through a fence: while `may_write()` says no (this process
does not lead), every attempt is refused with `NotLeader` before it is sent. Lists,
watches and Lease requests are single attempts (the reflectors and the elector have
their own backoff and deadlines); a watch streams its events line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from prunejob_operator import models
from prunejob_operator.connection import Connection
from prunejob_operator.kubeapi import (
    ApiError,
    Conflict,
    Gone,
    ListPage,
    NotFound,
    NotLeader,
    ObjectRef,
)

LOG = logging.getLogger("prunejob_operator.client")

BACKOFFS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)  # ~54 s in all, as kopf's requests
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
MAX_EVENT_MESSAGE = 1024
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
PODS = "/api/v1/namespaces/{namespace}/pods"
EVENTS = "/api/v1/namespaces/{namespace}/events"
PRUNEJOBS = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{{namespace}}/{models.PLURAL}"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
BACKGROUND_DELETE = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
WATCH_READ_MARGIN = 30.0  # seconds of silence beyond the watch's timeoutSeconds = a dead stream


def path(collection: str, namespace: str, *names: str) -> str:
    """`collection` (a template with {namespace}) / names, each URL-quoted."""
    quoted = [urllib.parse.quote(part, safe="") for part in (namespace, *names)]
    return "/".join([collection.format(namespace=quoted[0]), *quoted[1:]])


def _one_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


def error_of(
    method: str,
    where: str,
    status: int,
    payload: bytes,
    phrase: str = "",
    headers: Mapping[str, str] | None = None,
) -> ApiError:
    """The ApiError for an HTTP error answer (a Kubernetes `Status`, or any text)."""
    reason = message = ""
    try:
        document = json.loads(payload)
    except ValueError:
        document = None
    if isinstance(document, dict):
        reason = str(document.get("reason") or "")
        message = str(document.get("message") or "")
    else:
        message = payload.decode(errors="replace")
    text = f"{method} {where}: HTTP {status} {reason or phrase}".rstrip()
    if _one_line(message):
        text += f": {_one_line(message)}"
    kind = {404: NotFound, 409: Conflict, 410: Gone}.get(status, ApiError)
    return kind(text, code=status, reason=reason, retry_after=retry_after(headers or {}, payload))


def watch_error(where: str, status: Mapping[str, Any]) -> ApiError:
    """The ApiError for an ERROR event inside a watch stream (its object is a `Status`)."""
    code = status.get("code") if isinstance(status.get("code"), int) else None
    reason = str(status.get("reason") or "")
    text = f"WATCH {where}: ERROR event {code or ''} {reason}".rstrip()
    if _one_line(str(status.get("message") or "")):
        text += f": {_one_line(str(status.get('message')))}"
    kind = Gone if code == 410 or reason in ("Expired", "Gone") else ApiError
    return kind(text, code=code, reason=reason)


def retry_after(headers: Mapping[str, str], payload: bytes) -> float | None:
    """Seconds the server asked us to wait: the Retry-After header, else the Status'
    details.retryAfterSeconds; None when it did not say."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass  # an HTTP date: ignore it, use our backoff
    try:
        seconds = json.loads(payload)["details"]["retryAfterSeconds"]
        return max(0.0, float(seconds))
    except (ValueError, KeyError, TypeError):
        return None


def _cut(message: str, limit: int = MAX_EVENT_MESSAGE) -> str:
    if len(message) <= limit:
        return message
    half = (limit - 3) // 2
    return message[:half] + "..." + message[-(limit - 3 - half) :]


def event_body(
    ref: ObjectRef,
    *,
    type: str,
    reason: str,
    message: str,
    component: str,
    instance: str,
    name_prefix: str,
    now: datetime,
) -> dict[str, Any]:
    """A core/v1 Event about `ref` (what kopf.event posted before this client)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": ref.namespace, "generateName": name_prefix},
        "involvedObject": ref.to_dict(),
        "type": type,
        "reason": reason,
        "message": _cut(message),
        "action": "Reconcile",
        "reportingComponent": component,
        "reportingInstance": instance,
        "source": {"component": component},  # the "From" column of `kubectl describe`
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def _with_query(where: str, query: Mapping[str, str]) -> str:
    """`where` with the non-empty `query` parameters, URL-encoded."""
    present = {key: value for key, value in query.items() if value}
    return f"{where}?{urllib.parse.urlencode(present)}" if present else where


async def _stream_lines(
    content: aiohttp.StreamReader, where: str, on_event: Callable[[dict[str, Any]], None]
) -> None:
    """Decode a watch stream, one JSON event per line, into `on_event` (lines can be far
    longer than aiohttp's readline limit: big objects, so the split is ours)."""
    buffer = bytearray()
    async for chunk in content.iter_any():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            _deliver(bytes(buffer[start:end]), where, on_event)
            start = end + 1
        del buffer[:start]
    _deliver(bytes(buffer), where, on_event)


def _deliver(line: bytes, where: str, on_event: Callable[[dict[str, Any]], None]) -> None:
    if not line.strip():
        return
    try:
        event = json.loads(line)
    except ValueError:
        raise ApiError(f"WATCH {where}: a malformed event ({len(line)} bytes)") from None
    if not isinstance(event, dict):
        raise ApiError(f"WATCH {where}: a malformed event (not an object)")
    if event.get("type") == "ERROR":
        raise watch_error(where, event.get("object") or {})
    on_event(event)


class HttpKubeApi:
    """The operator's API client (see the module docstring); implements `KubeApi`,
    `ListWatch` and `LeaseApi`."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float = 60.0,
        backoffs: tuple[float, ...] = BACKOFFS,
        component: str = "prunejob-operator",
        event_name_prefix: str = "prunejob-",
        instance: str | None = None,
        may_write: Callable[[], bool] = lambda: True,
        watch_read_margin: float = WATCH_READ_MARGIN,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`may_write()`: whether writes may be sent now (the leader fence);
        `watch_read_margin`: seconds of silence beyond a watch's timeoutSeconds that
        mean the stream is dead."""
        self.connection = connection
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.backoffs = backoffs
        self.component = component
        self.event_name_prefix = event_name_prefix
        self.instance = instance or socket.gethostname()
        self.may_write = may_write
        self.watch_read_margin = watch_read_margin
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = self.connection.ssl_context
            connector = aiohttp.TCPConnector(limit=0, ssl=context if context else True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _headers(self, method: str, where: str, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            authorization = await self.connection.authorization()
        except Exception as err:  # an exec plugin or token file failing: one line
            raise ApiError(f"{method} {where}: credentials: {_one_line(str(err))}") from err
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def request(
        self,
        method: str,
        where: str,
        body: Any = None,
        *,
        content_type: str = JSON,
        retries: bool = True,
        timeout: float | None = None,
        fenced: bool | None = None,
    ) -> Any:
        """`method` on `where` (a path on the server); the decoded JSON answer.

        `retries=False`: one attempt (a 401 still re-reads the credentials once);
        `timeout`: seconds for each attempt instead of the session's; `fenced`: refuse
        while `may_write()` says no (default: every method but GET)."""
        session = self._open()
        data = None if body is None else json.dumps(body).encode()
        attempts = iter((*self.backoffs, None) if retries else (None,))
        fence = method != "GET" if fenced is None else fenced
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        reauthenticated = False
        while True:
            if fence and not self.may_write():
                raise NotLeader(f"{method} {where}: not sent: this replica does not lead")
            headers = await self._headers(method, where, None if data is None else content_type)
            try:
                async with session.request(
                    method,
                    self.connection.server + where,
                    data=data,
                    headers=headers,
                    proxy=self.connection.proxy,
                    server_hostname=self.connection.server_hostname,
                    **options,
                ) as response:
                    status, phrase = response.status, response.reason or ""
                    answer_headers, payload = response.headers, await response.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                failure = ApiError(f"{method} {where}: {type(err).__name__}: {_one_line(str(err))}")
                await self._pause(failure, next(attempts), None)
                continue
            if status < 400:
                return json.loads(payload) if payload else None
            if status == 401 and not reauthenticated:
                reauthenticated = True
                with contextlib.suppress(Exception):  # a failed re-read: the next try says
                    await self.connection.authorization(force=True)
                continue
            failure = error_of(method, where, status, payload, phrase, answer_headers)
            if status not in RETRY_STATUSES:
                raise failure
            await self._pause(failure, next(attempts), failure.retry_after)

    async def _pause(self, failure: ApiError, backoff: float | None, asked: float | None) -> None:
        """Wait before the next attempt, or raise `failure` when none is left."""
        if backoff is None:
            raise failure
        delay = max(backoff, min(asked, MAX_RETRY_AFTER)) if asked is not None else backoff
        LOG.warning("%s; retrying in %.0fs", failure, delay)
        await self._sleep(delay)

    # -- ListWatch --------------------------------------------------------------------

    async def list_page(
        self, where: str, *, label_selector: str = "", limit: int = 0, continue_token: str = ""
    ) -> ListPage:
        query = {
            "labelSelector": label_selector,
            "limit": str(limit or ""),
            "continue": continue_token,
        }
        target = _with_query(where, query)
        document = await self.request("GET", target, retries=False)
        metadata = (document or {}).get("metadata") or {}
        return ListPage(
            items=list((document or {}).get("items") or []),
            resource_version=str(metadata.get("resourceVersion") or ""),
            continue_token=str(metadata.get("continue") or ""),
        )

    async def watch(
        self,
        where: str,
        *,
        resource_version: str,
        label_selector: str = "",
        timeout_seconds: int,
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
        }
        # No total: a watch lasts; a stream silent for longer than the server's own
        # timeout (plus a margin) is dead, and so is a connection that cannot be made.
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=WATCH_READ_MARGIN,
            sock_read=timeout_seconds + self.watch_read_margin,
        )
        headers = await self._headers("WATCH", where, None)
        try:
            async with self._open().get(
                self.connection.server + _with_query(where, query),
                headers=headers,
                proxy=self.connection.proxy,
                server_hostname=self.connection.server_hostname,
                timeout=timeout,
            ) as response:
                if response.status != 200:
                    payload = await response.read()
                    if response.status == 401:
                        with contextlib.suppress(Exception):
                            await self.connection.authorization(force=True)
                    raise error_of(
                        "WATCH", where, response.status, payload, response.reason or "",
                        response.headers,
                    )  # fmt: skip
                await _stream_lines(response.content, where, on_event)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ApiError(f"WATCH {where}: {type(err).__name__}: {_one_line(str(err))}") from err

    # -- LeaseApi ---------------------------------------------------------------------

    async def get_lease(
        self, namespace: str, name: str, *, timeout: float
    ) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = await self.request(
                "GET", path(LEASES, namespace, name), retries=False, timeout=timeout
            )
        except NotFound:
            return None
        return lease

    async def create_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        where = path(LEASES, body["metadata"]["namespace"])
        created: dict[str, Any] = await self.request(
            "POST", where, body, retries=False, timeout=timeout, fenced=False
        )
        return created

    async def replace_lease(self, body: Mapping[str, Any], *, timeout: float) -> dict[str, Any]:
        where = path(LEASES, body["metadata"]["namespace"], body["metadata"]["name"])
        replaced: dict[str, Any] = await self.request(
            "PUT", where, body, retries=False, timeout=timeout, fenced=False
        )
        return replaced

    # -- KubeApi ----------------------------------------------------------------------

    async def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            created: dict[str, Any] = await self.request(
                "POST", path(JOBS, manifest["metadata"]["namespace"]), manifest
            )
        except Conflict:
            return None
        return created

    async def set_job_suspended(self, namespace: str, name: str, suspended: bool) -> bool:
        try:
            await self.request(
                "PATCH",
                path(JOBS, namespace, name),
                {"spec": {"suspend": suspended}},
                content_type=MERGE_PATCH,
            )
        except NotFound:
            return False
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.request("DELETE", path(JOBS, namespace, name), BACKGROUND_DELETE)

    async def remove_pod_finalizer(
        self, namespace: str, name: str, finalizer: str, *, finalizers: Sequence[str], version: str
    ) -> bool:
        kept = [item for item in finalizers if item != finalizer]
        body = {"metadata": {"resourceVersion": version, "finalizers": kept or None}}
        try:
            await self.request("PATCH", path(PODS, namespace, name), body, content_type=MERGE_PATCH)
        except (NotFound, Conflict):
            return False
        return True

    async def patch_prunejob_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        try:
            patched: dict[str, Any] = await self.request(
                "PATCH",
                path(PRUNEJOBS, namespace, name, "status"),
                {"status": status},
                content_type=MERGE_PATCH,
            )
        except NotFound:
            return None
        return patched

    async def emit_event(self, ref: ObjectRef, *, type: str, reason: str, message: str) -> None:
        body = event_body(
            ref,
            type=type,
            reason=reason,
            message=message,
            component=self.component,
            instance=self.instance,
            name_prefix=self.event_name_prefix,
            now=datetime.now(UTC),
        )
        await self.request("POST", path(EVENTS, ref.namespace), body)
