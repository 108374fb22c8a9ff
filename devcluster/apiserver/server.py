"""The API server's HTTP handler: routing, body and query parsing, errors as ``Status``.

The API server's HTTP side: one aiohttp handler that routes each request by a dictionary
lookup, parses bodies and queries, and answers errors as ``Status`` objects.

What the server verifies (metadata stamping, the status subresource, PUT/PATCH, watches,
finalizers, garbage collection, discovery, CRD schemas) lives in the rooms beside this
module: ``lifecycle``, ``store``/``watch``, ``discovery``, ``strategies`` and the pure
helpers ``patching``, ``schema``, ``selectors``, ``tables``. The README's devcluster
section lists what is emulated and what is not.

It is a plain aiohttp handler, not a kmock emulator: kmock matches every request against
its request history and reaction DSL, which is what the stock baseline in
``bench/apiserver_bench.py`` measures.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web

from devcluster.apiserver import discovery, fieldcheck, patching
from devcluster.apiserver.builtins import SYSTEM_PRIORITY_CLASSES
from devcluster.apiserver.discovery import Registry
from devcluster.apiserver.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from devcluster.apiserver.faults import (
    EXEMPT_HEADER,
    FAULTS_PATH,
    FaultConfig,
    FaultConfigError,
    FaultInjector,
    WatchFault,
)
from devcluster.apiserver.lifecycle import Lifecycle
from devcluster.apiserver.openapi import Documents
from devcluster.apiserver.resources import (
    BUILTIN_RESOURCES,
    NAMESPACES,
    PRIORITY_CLASSES,
    ResourceType,
    TypeKey,
    load_crds,
)
from devcluster.apiserver.selectors import parse_field_selector, parse_label_selector
from devcluster.apiserver.store import Store
from devcluster.apiserver.tables import render_table, wants_table
from devcluster.apiserver.urls import ParsedUrl, parse_url
from devcluster.apiserver.watch import serve_watch

log = logging.getLogger("devcluster.apiserver")

# What every cluster starts with: the usual namespaces, the system PriorityClasses, and
# kopf's default peering objects, so that operators run with peering out of the box.
INITIAL_OBJECTS: tuple[tuple[TypeKey, dict[str, Any]], ...] = (
    *((NAMESPACES, {"metadata": {"name": ns}}) for ns in (
        "default", "kube-system", "kube-public", "kube-node-lease")),
    *((PRIORITY_CLASSES, pc) for pc in SYSTEM_PRIORITY_CLASSES),
    (("kopf.dev", "clusterkopfpeerings"), {"metadata": {"name": "default"}}),
    (("kopf.dev", "kopfpeerings"), {"metadata": {"name": "default", "namespace": "default"}}),
)  # fmt: skip


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    return json.loads(json.dumps(obj))


def json_response(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


async def read_body(raw: aiohttp.web.BaseRequest) -> Any:
    data = await raw.read()
    if not data.strip():
        return None
    if "protobuf" in raw.headers.get("Content-Type", ""):
        raise UnsupportedMediaType(
            "devcluster accepts JSON bodies only, not protobuf: use `kubectl apply -f` or "
            "`kubectl create -f` (imperative `kubectl create secret/namespace` send protobuf)"
        )
    try:
        return json.loads(data)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc


@dataclass(slots=True)
class Call:
    """One resource request, parsed: what the route handlers get."""

    raw: aiohttp.web.BaseRequest
    resource: ResourceType
    version: str
    ns: str | None
    name: str | None
    sub: str | None
    query: Mapping[str, str]
    body: Any = None

    @property
    def dry_run(self) -> bool:
        return bool(self.query.get("dryRun"))

    def options(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    def object_body(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise BadRequest("the request body must be a JSON object")
        return self.body


Route = Callable[[Call], Awaitable[aiohttp.web.StreamResponse]]


class ApiServer:
    """The API server as an aiohttp low-level handler; serve it with :func:`start_http`.

    All state changes run synchronously inside the event loop's thread, so every write is
    atomic with respect to other requests without any lock.
    """

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        history: int = 20_000,
        faults: FaultConfig | None = None,
    ) -> None:
        self.log_dir = log_dir  # where the pod runner writes container logs (pods/log)
        self.registry = Registry()
        self.store = Store(history)
        self.lifecycle = Lifecycle(self.registry, self.store)
        self.openapi = Documents(self.registry)
        self.requests_served = 0
        # The fault switch: None (the default) costs one attribute test per request.
        self.faults: FaultInjector | None = None
        self.set_faults(faults)
        # (method, whether the URL names an object) -> handler
        self._routes: dict[tuple[str, bool], Route] = {
            ("GET", False): self._list,
            ("GET", True): self._get,
            ("POST", False): self._create,
            ("PUT", True): self._replace,
            ("PATCH", True): self._patch,
            ("DELETE", True): self._delete,
            ("DELETE", False): self._delete_collection,
        }
        for resource in BUILTIN_RESOURCES:
            self.lifecycle.serve_type(resource)
        for (group, plural), body in INITIAL_OBJECTS:
            self.create_object(group, plural, body)

    # ----------------------------------------------------------------- in-process API

    def register_crd(self, crd: Mapping[str, Any]) -> ResourceType:
        """Serve a CustomResourceDefinition (also stored, so ``kubectl get crd`` lists it)."""
        return self.lifecycle.apply_crd(crd)

    def resource_types(self) -> list[ResourceType]:
        return self.registry.all()

    def create_object(self, group: str, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object from the loop's thread (used at start-up and by tests)."""
        resource = self.registry[(group, plural)]
        namespace = body.get("metadata", {}).get("namespace") if resource.namespaced else None
        body = copy.deepcopy(dict(body))
        return self.lifecycle.create(resource, resource.versions[0], namespace, body)

    def get_object(
        self, group: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return self.store.get((group, plural), (namespace, name))

    def list_objects(self, group: str, plural: str) -> list[dict[str, Any]]:
        return self.store.items((group, plural))

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def compact(self, group: str, plural: str) -> None:
        """Forget a type's watch history up to now: older resourceVersions get 410 Gone."""
        self.store.compact((group, plural))

    def compact_all(self) -> None:
        """Forget every type's watch history up to now (a restarted server's watch cache)."""
        for resource in self.registry.all():
            self.store.compact(resource.key)

    def stop_watches(self) -> None:
        """End every open watch stream (on shutdown), so connections close promptly."""
        self.store.stop_watches()

    def set_faults(self, config: FaultConfig | None) -> None:
        """Switch fault injection on (or to new rates; the counts go on) or off (``None``)."""
        if config is None:
            if self.faults is not None:
                self.faults.reconfigure(FaultConfig(seed=self.faults.config.seed))
            return
        if self.faults is None:
            self.faults = FaultInjector(config, lambda: self.store.resource_version)
        else:
            self.faults.reconfigure(config)

    def fault_stats(self) -> dict[str, Any]:
        """Requests seen, faults injected by kind, restarts (zeros while faults are off)."""
        if self.faults is None:
            return FaultInjector(FaultConfig(), lambda: 0).stats()
        return self.faults.stats()

    # ----------------------------------------------------------------- HTTP entry point

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """The faulty listener: requests may get the configured faults."""
        faults = self.faults
        if faults is not None and not self._never_faulted(raw):
            return await faults.serve(raw, self._respond)
        return await self._respond(raw, None)

    async def serve_exempt(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """The exempt listener: never faulted (bookkeeping, the cluster's own components)."""
        if self.faults is not None:
            self.faults.exempt += 1
        return await self._respond(raw, None)

    def _never_faulted(self, raw: aiohttp.web.BaseRequest) -> bool:
        if EXEMPT_HEADER in raw.headers or raw.path.startswith("/devcluster/"):
            assert self.faults is not None
            self.faults.exempt += 1
            return True
        return raw.path in discovery.HEALTH_PATHS

    async def _respond(
        self, raw: aiohttp.web.BaseRequest, watch_fault: WatchFault | None
    ) -> aiohttp.web.StreamResponse:
        self.requests_served += 1
        try:
            return await self._dispatch(raw, watch_fault)
        except ApiError as exc:
            return json_response(exc.status(), status=exc.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a devcluster bug: answer 500 with the reason, keep serving
            log.exception("devcluster: %s %s failed", raw.method, raw.path_qs)
            error = ApiError(f"devcluster internal error: {exc!r}")
            return json_response(error.status(), status=500)

    async def _dispatch(
        self, raw: aiohttp.web.BaseRequest, watch_fault: WatchFault | None = None
    ) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        path = raw.path
        if path in discovery.HEALTH_PATHS:
            return aiohttp.web.Response(text="ok")
        if path == FAULTS_PATH:
            return await self._faults_endpoint(raw)
        if method == "GET" and path in ("", "/"):
            return json_response({"paths": discovery.root_paths(self.registry)})
        if method == "GET" and path == "/version":
            return json_response(discovery.KUBERNETES_VERSION)
        if method == "GET" and path == "/apis":
            return json_response(discovery.api_group_list(self.registry))
        if method == "GET" and path.startswith("/openapi/v3"):
            return self._openapi(raw)
        parsed = parse_url(path)
        if parsed is None:
            raise NotFound("the server could not find the requested resource")
        if parsed.version is None or parsed.plural is None:
            if method != "GET":
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
            return json_response(self._discovery_document(raw, parsed))
        call = self._resource_call(raw, parsed)
        if method == "GET" and (call.query.get("watch") in ("true", "1") or parsed.legacy_watch):
            return await serve_watch(
                raw, self.store, call.resource, call.version, call.ns, call.name, watch_fault
            )
        if method != "GET":
            call.body = await read_body(raw)
        route = self._routes.get((method, call.name is not None))
        if route is None:
            raise MethodNotAllowed(f"{method} is not supported on {path}")
        return await route(call)

    def _openapi(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        """``/openapi/v3`` and its per-group-version documents (a stale hash redirects to
        the current one, as the real server does, so a client cache never serves old ones)."""
        if raw.path.rstrip("/") == "/openapi/v3":
            response = json_response(self.openapi.root())
            response.headers["Cache-Control"] = "no-cache, private"
            return response
        found = self.openapi.get(raw.path.removeprefix("/openapi/v3/").strip("/"))
        if found is None:
            raise NotFound("the server could not find the requested resource")
        body, digest = found
        asked = raw.query.get("hash")
        if asked and asked != digest:
            return aiohttp.web.Response(
                status=301, headers={"Location": f"{raw.path}?hash={digest}"}
            )
        headers = {"Etag": f'"{digest}"'}
        headers["Cache-Control"] = "public, immutable" if asked else "no-cache, private"
        return aiohttp.web.Response(body=body, content_type="application/json", headers=headers)

    async def _faults_endpoint(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        """``GET``: the counts; ``PUT`` a config (``FaultConfig.to_json`` form) or ``DELETE``
        (faults off): the counts after."""
        method = raw.method.upper()
        if method == "PUT":
            try:
                self.set_faults(FaultConfig.from_json(await read_body(raw) or {}))
            except (FaultConfigError, TypeError, ValueError) as exc:
                raise BadRequest(f"invalid fault config: {exc}") from exc
        elif method == "DELETE":
            self.set_faults(None)
        elif method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed on {FAULTS_PATH}")
        return json_response(self.fault_stats())

    def _discovery_document(self, raw: aiohttp.web.BaseRequest, parsed: ParsedUrl) -> Any:
        if parsed.version is None:
            if parsed.group == "":
                return discovery.api_versions(raw.host)
            return discovery.api_group(self.registry, parsed.group)
        return discovery.api_resource_list(self.registry, parsed.group, parsed.version)

    def _resource_call(self, raw: aiohttp.web.BaseRequest, parsed: ParsedUrl) -> Call:
        assert parsed.version is not None and parsed.plural is not None
        resource = self.registry.at_url(parsed.group, parsed.version, parsed.plural)
        if resource is None:
            raise NotFound("the server could not find the requested resource")
        if not resource.namespaced and parsed.namespace is not None:
            raise NotFound("the server could not find the requested resource")
        if parsed.subresource and parsed.subresource not in resource.subresources:
            raise NotFound("the server could not find the requested resource")
        return Call(
            raw=raw,
            resource=resource,
            version=parsed.version,
            ns=parsed.namespace,
            name=parsed.name,
            sub=parsed.subresource,
            query=raw.query,
        )

    # ----------------------------------------------------------------- routes

    def _select(self, call: Call) -> list[dict[str, Any]]:
        label_selector = call.query.get("labelSelector")
        field_selector = call.query.get("fieldSelector")
        if not label_selector and not field_selector:
            return self.store.select(call.resource.key, call.ns)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        return self.store.select(
            call.resource.key, call.ns, lambda obj: labels(obj) and fields(obj)
        )

    def _list_body(self, call: Call, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{call.resource.kind}List",
            "apiVersion": call.resource.api_version(call.version),
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": [call.resource.versioned(item, call.version) for item in items],
        }

    def _one(
        self,
        call: Call,
        obj: dict[str, Any],
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> aiohttp.web.Response:
        response = json_response(call.resource.versioned(obj, call.version), status=status)
        for warning in warnings or ():
            response.headers.add("Warning", '299 - "' + warning.replace('"', '\\"') + '"')
        return response

    async def _list(self, call: Call) -> aiohttp.web.StreamResponse:
        items = self._select(call)
        if wants_table(call.raw.headers.get("Accept", "")):
            return json_response(
                render_table(call.resource, items, self.store.resource_version, call.query)
            )
        return json_response(self._list_body(call, items))

    async def _get(self, call: Call) -> aiohttp.web.StreamResponse:
        assert call.name is not None
        if call.sub == "log":
            return self._serve_log(call)
        obj = self.store.require(call.resource, call.ns, call.name)
        if wants_table(call.raw.headers.get("Accept", "")):
            return json_response(
                render_table(call.resource, [obj], self.store.resource_version, call.query)
            )
        return self._one(call, obj)

    async def _create(self, call: Call) -> aiohttp.web.StreamResponse:
        body = call.object_body()
        namespace = call.ns
        if call.resource.namespaced and namespace is None:
            namespace = (body.get("metadata") or {}).get("namespace") or "default"
        warnings: list[str] = []
        created = self.lifecycle.create(
            call.resource,
            call.version,
            namespace,
            body,
            dry_run=call.dry_run,
            field_validation=fieldcheck.directive(call.query),
            warnings=warnings,
        )
        return self._one(call, created, status=201, warnings=warnings)

    async def _replace(self, call: Call) -> aiohttp.web.StreamResponse:
        return self._replace_with(call, call.object_body())

    async def _patch(self, call: Call) -> aiohttp.web.StreamResponse:
        assert call.name is not None
        content_type = call.raw.headers.get("Content-Type", patching.MERGE)
        current = self.store.require(call.resource, call.ns, call.name)
        patched = patching.apply_patch(
            clone(current),
            content_type,
            call.body,
            custom=bool(call.resource.schemas),
            schema=fieldcheck.kind_root(call.resource, call.version),
        )
        if patched.get("metadata", {}).get("resourceVersion") is None:
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"][
                "resourceVersion"
            ]
        return self._replace_with(call, patched)

    def _replace_with(self, call: Call, body: dict[str, Any]) -> aiohttp.web.StreamResponse:
        """PUT ``body`` in place of the call's object (a PATCH once it has applied its patch)."""
        assert call.name is not None
        warnings: list[str] = []
        updated = self.lifecycle.replace(
            call.resource,
            call.ns,
            call.name,
            body,
            subresource=call.sub,
            dry_run=call.dry_run,
            field_validation=fieldcheck.directive(call.query),
            warnings=warnings,
        )
        return self._one(call, updated, warnings=warnings)

    async def _delete(self, call: Call) -> aiohttp.web.StreamResponse:
        assert call.name is not None
        deleted = self.lifecycle.delete(
            call.resource, call.ns, call.name, call.options(), call.query, dry_run=call.dry_run
        )
        return self._one(call, deleted)

    async def _delete_collection(self, call: Call) -> aiohttp.web.StreamResponse:
        options = call.options()
        targets = [
            (o["metadata"].get("namespace"), o["metadata"]["name"]) for o in self._select(call)
        ]
        items = [
            self.lifecycle.delete(
                call.resource, ns, name, options, call.query, dry_run=call.dry_run
            )
            for ns, name in targets
        ]
        return json_response(self._list_body(call, items))

    def _serve_log(self, call: Call) -> aiohttp.web.Response:
        assert call.name is not None
        pod = self.store.require(call.resource, call.ns, call.name)
        containers = [c.get("name", "") for c in pod.get("spec", {}).get("containers", [])]
        container = call.query.get("container") or (containers[0] if containers else "")
        log_file = (
            self.log_dir / str(call.ns) / call.name / f"{container}.log" if self.log_dir else None
        )
        if log_file is None or not log_file.exists():
            raise BadRequest(f'container "{container}" in pod "{call.name}" is waiting to start')
        text = log_file.read_text(errors="replace")
        if "tailLines" in call.query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(call.query["tailLines"]) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")


# --------------------------------------------------------------------------- serving


class ServeError(RuntimeError):
    """The API server could not listen (port in use...); the message says what to do."""


def new_api_server(
    crd_paths: Iterable[str | Path] = (),
    *,
    log_dir: Path | None = None,
    faults: FaultConfig | None = None,
) -> ApiServer:
    """A server with the CRDs found in these files/folders (``CrdError`` names a bad one)."""
    server = ApiServer(log_dir=log_dir, faults=faults)
    for crd in load_crds(crd_paths):
        server.register_crd(crd)
    return server


async def listen(
    web_server: aiohttp.web.Server,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    reuse_address: bool | None = None,
) -> aiohttp.web.ServerRunner:
    """A runner serving ``web_server`` on ``host:port``; ServeError (runner cleaned up) if
    it cannot listen there."""
    runner = aiohttp.web.ServerRunner(web_server, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port, reuse_address=reuse_address)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port or 0 for any"
        ) from exc
    return runner


async def start_http(
    server: ApiServer, host: str = "127.0.0.1", port: int = 0
) -> tuple[aiohttp.web.BaseRunner, str]:
    """Serve the API on ``host:port`` (0 = a free port); returns the runner and the URL."""
    web_server = aiohttp.web.Server(server, handler_cancellation=True)
    runner = await listen(web_server, host, port, shutdown_timeout=2.0)
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


async def stop_http(server: ApiServer, runner: aiohttp.web.BaseRunner) -> None:
    server.stop_watches()
    await runner.cleanup()
