"""`KubeApi` over HTTP: aiohttp with the credentials of `connection.Connection`.

Requests are JSON; one session (keep-alive connection pool) per operator. Failures a
retry can fix — no response, a timeout, 429 and 5xx — are retried after `BACKOFFS`
(or the server's Retry-After when it asks for longer); a 401 asks the credentials
again once (rotated tokens). What is left raises `kubeapi.ApiError` with a one-line
message: `PATCH /apis/...: HTTP 422 Invalid: <the Status message>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from prunejob_operator import models
from prunejob_operator.connection import Connection
from prunejob_operator.kubeapi import ApiError, Conflict, NotFound, ObjectRef

LOG = logging.getLogger("prunejob_operator.client")

BACKOFFS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)  # ~54 s in all, as kopf's requests
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
MAX_EVENT_MESSAGE = 1024
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
EVENTS = "/api/v1/namespaces/{namespace}/events"
PRUNEJOBS = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{{namespace}}/{models.PLURAL}"
BACKGROUND_DELETE = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}


def path(collection: str, namespace: str, *names: str) -> str:
    """`collection` (a template with {namespace}) / names, each URL-quoted."""
    quoted = [urllib.parse.quote(part, safe="") for part in (namespace, *names)]
    return "/".join([collection.format(namespace=quoted[0]), *quoted[1:]])


def _one_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


def error_of(method: str, where: str, status: int, payload: bytes, phrase: str = "") -> ApiError:
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
    kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return kind(text, code=status, reason=reason)


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


class HttpKubeApi:
    """The operator's API client (see the module docstring); implements `KubeApi`."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float = 60.0,
        backoffs: tuple[float, ...] = BACKOFFS,
        component: str = "prunejob-operator",
        event_name_prefix: str = "prunejob-",
        instance: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.connection = connection
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.backoffs = backoffs
        self.component = component
        self.event_name_prefix = event_name_prefix
        self.instance = instance or socket.gethostname()
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

    async def request(
        self,
        method: str,
        where: str,
        body: Any = None,
        *,
        content_type: str = JSON,
    ) -> Any:
        """`method` on `where` (a path on the server); the decoded JSON answer."""
        session = self._open()
        data = None if body is None else json.dumps(body).encode()
        attempts = iter((*self.backoffs, None))
        reauthenticated = False
        while True:
            headers = {"Accept": JSON}
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                authorization = await self.connection.authorization()
            except Exception as err:  # an exec plugin or token file failing: one line
                raise ApiError(f"{method} {where}: credentials: {_one_line(str(err))}") from err
            if authorization:
                headers["Authorization"] = authorization
            try:
                async with session.request(
                    method,
                    self.connection.server + where,
                    data=data,
                    headers=headers,
                    proxy=self.connection.proxy,
                    server_hostname=self.connection.server_hostname,
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
            failure = error_of(method, where, status, payload, phrase)
            if status not in RETRY_STATUSES:
                raise failure
            await self._pause(failure, next(attempts), retry_after(answer_headers, payload))

    async def _pause(self, failure: ApiError, backoff: float | None, asked: float | None) -> None:
        """Wait before the next attempt, or raise `failure` when none is left."""
        if backoff is None:
            raise failure
        delay = max(backoff, min(asked, MAX_RETRY_AFTER)) if asked is not None else backoff
        LOG.warning("%s; retrying in %.0fs", failure, delay)
        await self._sleep(delay)

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
