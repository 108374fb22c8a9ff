"""HttpKubeApi against a scripted aiohttp server: answers, retries, auth, one-line errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
from aiohttp import web
from async_test import asynchronous

from prunejob_operator import connection
from prunejob_operator.client import HttpKubeApi, error_of, event_body, retry_after
from prunejob_operator.kubeapi import ApiError, Conflict, NotFound, ObjectRef

REF = ObjectRef("prunejob.io/v1alpha1", "PruneJob", "ml", "resnet", "uid-1")
Answer = tuple[int, dict[str, Any] | str, dict[str, str]]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "code": code, "reason": reason, "message": message}


class Server:
    """Answers requests from `answers` in order (then 200 {}); keeps what it was sent."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "content_type": request.headers.get("Content-Type"),
                "authorization": request.headers.get("Authorization"),
                "body": json.loads(body) if body else None,
            }
        )
        code, payload, headers = self.answers.pop(0) if self.answers else (200, {}, {})
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return web.Response(status=code, text=text, headers=headers)


@asynccontextmanager
async def serving(
    answers: list[Answer], token: Callable[[], str | None] = lambda: None
) -> AsyncIterator[tuple[HttpKubeApi, Server, list[float]]]:
    server = Server(answers)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    server_url = f"http://127.0.0.1:{port}"
    api = HttpKubeApi(
        connection.Connection(server_url, authorization=token, rotates=True),
        sleep=sleep,
        instance="test",
    )
    try:
        yield api, server, slept
    finally:
        await api.aclose()
        await runner.cleanup()


JOB = {"metadata": {"name": "resnet-g1", "namespace": "ml"}, "spec": {}}


@asynchronous
async def test_create_job_posts_and_a_409_means_it_exists() -> None:
    answers: list[Answer] = [
        (201, {"metadata": {"name": "resnet-g1", "resourceVersion": "7"}}, {}),
        (409, status(409, "AlreadyExists", 'jobs.batch "resnet-g1" already exists'), {}),
    ]
    async with serving(answers) as (api, server, _):
        created = await api.create_job(JOB)
        assert created is not None and created["metadata"]["resourceVersion"] == "7"
        assert await api.create_job(JOB) is None
    assert [(s["method"], s["path"]) for s in server.seen] == [
        ("POST", "/apis/batch/v1/namespaces/ml/jobs")
    ] * 2
    assert server.seen[0]["body"] == JOB


@asynchronous
async def test_patches_and_delete_and_404_answers() -> None:
    gone = (404, status(404, "NotFound", "not found"), {})
    answers: list[Answer] = [(200, {}, {}), gone, (200, {"metadata": {}}, {}), gone, gone]
    async with serving(answers) as (api, server, _):
        assert await api.set_job_suspended("ml", "resnet-g1", False) is True
        assert await api.set_job_suspended("ml", "resnet-g1", False) is False
        assert await api.patch_prunejob_status("ml", "resnet", {"phase": "Running"}) == {
            "metadata": {}
        }
        assert await api.patch_prunejob_status("ml", "resnet", {"phase": "Running"}) is None
        await api.delete_job("ml", "resnet-g1")  # absent is fine
    first, _, status_patch, _, delete = server.seen
    assert first["content_type"] == "application/merge-patch+json"
    assert first["body"] == {"spec": {"suspend": False}}
    assert (
        status_patch["path"] == "/apis/prunejob.io/v1alpha1/namespaces/ml/prunejobs/resnet/status"
    )
    assert status_patch["body"] == {"status": {"phase": "Running"}}
    assert delete["method"] == "DELETE"
    assert delete["body"]["propagationPolicy"] == "Background"


@asynchronous
async def test_429_and_5xx_are_retried_with_backoff_and_retry_after() -> None:
    answers: list[Answer] = [
        (429, status(429, "TooManyRequests", "slow down"), {"Retry-After": "7"}),
        (503, "unavailable", {}),
        (500, status(500, "InternalError", "etcd"), {}),
        (200, {"ok": True}, {}),
    ]
    async with serving(answers) as (api, server, slept):
        assert await api.request("GET", "/api/v1/namespaces") == {"ok": True}
    assert slept == [7.0, 1.0, 2.0]
    assert len(server.seen) == 4


@asynchronous
async def test_retries_run_out_into_a_one_line_error() -> None:
    answers: list[Answer] = [(503, "down\nfor maintenance", {})] * 3
    async with serving(answers) as (api, _, slept):
        api.backoffs = (1.0, 1.0)
        with pytest.raises(ApiError) as caught:
            await api.request("GET", "/api/v1/pods")
    assert slept == [1.0, 1.0]
    assert str(caught.value) == "GET /api/v1/pods: HTTP 503 Service Unavailable: down"
    assert caught.value.code == 503


@asynchronous
async def test_other_errors_are_not_retried() -> None:
    invalid = status(422, "Invalid", 'Job.batch "x" is invalid: spec.template: Required')
    async with serving([(422, invalid, {})]) as (api, server, slept):
        with pytest.raises(ApiError) as caught:
            await api.create_job(JOB)
    assert slept == [] and len(server.seen) == 1
    assert str(caught.value) == (
        'POST /apis/batch/v1/namespaces/ml/jobs: HTTP 422 Invalid: Job.batch "x" is '
        "invalid: spec.template: Required"
    )
    assert not isinstance(caught.value, NotFound | Conflict)


@asynchronous
async def test_a_401_asks_the_credentials_again_once() -> None:
    tokens = iter(["Bearer old", "Bearer new", "Bearer newer"])
    unauthorized = (401, status(401, "Unauthorized", "Unauthorized"), {})
    answers: list[Answer] = [unauthorized, (200, {}, {}), unauthorized, unauthorized]
    async with serving(answers, token=lambda: next(tokens)) as (api, server, _):
        await api.request("GET", "/api")
        with pytest.raises(ApiError) as caught:
            await api.request("GET", "/api")
    assert [s["authorization"] for s in server.seen] == [
        "Bearer old",
        "Bearer new",
        "Bearer new",
        "Bearer newer",
    ]
    assert caught.value.code == 401


@asynchronous
async def test_no_answer_is_retried_then_a_one_line_error() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    api = HttpKubeApi(connection.Connection("http://127.0.0.1:9"), backoffs=(1.0,), sleep=sleep)
    try:
        with pytest.raises(ApiError) as caught:
            await api.request("GET", "/api")
    finally:
        await api.aclose()
    assert slept == [1.0]
    assert caught.value.code is None
    assert str(caught.value).startswith("GET /api: ClientConnectorError")
    assert "\n" not in str(caught.value)


@asynchronous
async def test_events_are_core_v1_events_about_the_prunejob() -> None:
    async with serving([(201, {}, {})]) as (api, server, _):
        await api.emit_event(REF, type="Warning", reason="ModelNotFound", message="x" * 2000)
    (seen,) = server.seen
    assert seen["path"] == "/api/v1/namespaces/ml/events"
    body = seen["body"]
    assert body["metadata"] == {"namespace": "ml", "generateName": "prunejob-"}
    assert body["involvedObject"] == {
        "apiVersion": "prunejob.io/v1alpha1",
        "kind": "PruneJob",
        "name": "resnet",
        "uid": "uid-1",
        "namespace": "ml",
    }
    assert (body["type"], body["reason"]) == ("Warning", "ModelNotFound")
    assert body["reportingComponent"] == "prunejob-operator"
    assert body["source"] == {"component": "prunejob-operator"}
    assert len(body["message"]) == 1024 and "..." in body["message"]


def test_event_body_timestamps() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    body = event_body(
        REF,
        type="Normal",
        reason="JobCreated",
        message="m",
        component="c",
        instance="i",
        name_prefix="p-",
        now=now,
    )
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2025-01-02T03:04:05Z"
    assert body["eventTime"] == "2025-01-02T03:04:05.678000Z"
    assert body["message"] == "m"


def test_error_and_retry_after_parsing() -> None:
    gone = error_of("GET", "/x", 404, json.dumps(status(404, "NotFound", "a\nb")).encode())
    assert isinstance(gone, NotFound) and str(gone) == "GET /x: HTTP 404 NotFound: a"
    assert isinstance(error_of("POST", "/x", 409, b"{}", "Conflict"), Conflict)
    assert retry_after({"Retry-After": "3"}, b"") == 3.0
    assert retry_after({}, json.dumps({"details": {"retryAfterSeconds": 2}}).encode()) == 2.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"") is None


def test_connection_from_a_kubernetes_configuration(tmp_path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://example.invalid:6443",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "s3cr3t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    loaded = connection.from_configuration(configuration)
    assert loaded.server == "https://example.invalid:6443"
    assert loaded.ssl_context is not None and loaded.ssl_context.check_hostname is False
    assert asyncio.run(loaded.authorization()) == "Bearer s3cr3t"


@asynchronous
async def test_a_rotating_token_is_read_again_in_the_background() -> None:
    now = [0.0]
    reads: list[str] = []

    def read() -> str:
        reads.append(f"Bearer {len(reads)}")
        return reads[-1]

    rotating = connection.Connection(
        "http://x", authorization=read, rotates=True, clock=lambda: now[0]
    )

    first = await asyncio.gather(*(rotating.authorization() for _ in range(50)))
    assert set(first) == {"Bearer 0"} and len(reads) == 1  # one read for all of them
    now[0] = connection.REFRESH_SECONDS / 2
    assert await rotating.authorization() == "Bearer 0"
    now[0] = connection.REFRESH_SECONDS * 2
    assert await rotating.authorization() == "Bearer 0"  # still valid meanwhile
    for _ in range(100):
        if len(reads) == 2:
            break
        await asyncio.sleep(0.01)
    assert await rotating.authorization() == "Bearer 1"
    assert await rotating.authorization(force=True) == "Bearer 2"


@asynchronous
async def test_a_failing_refresh_keeps_the_current_token_and_waits_to_try_again(caplog) -> None:
    now = [0.0]
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        if len(reads) > 1:
            raise RuntimeError("exec plugin failed")
        return "Bearer a"

    rotating = connection.Connection(
        "http://x", authorization=read, rotates=True, clock=lambda: now[0]
    )
    assert await rotating.authorization() == "Bearer a"
    now[0] = connection.REFRESH_SECONDS * 2
    for _ in range(20):
        assert await rotating.authorization() == "Bearer a"
        await asyncio.sleep(0.005)
    assert len(reads) == 2  # one failed re-read, not one per call
    assert "exec plugin failed" in caplog.text
    with pytest.raises(RuntimeError):
        await rotating.authorization(force=True)
