"""A local Kubernetes API server: kmock's emulator plus the API-server semantics clients rely on.

Stock ``kmock.KubernetesEmulator`` merges JSON blindly and matches each request against its
whole request history. ``DevApiServer`` keeps kmock as the base class but answers every
request through a dictionary dispatch (O(1) in the number of past requests) and adds what
kopf, the ``kubernetes`` client and ``kubectl`` expect from a real API server:

- metadata stamping: ``uid``, a global ``resourceVersion`` counter, ``creationTimestamp``,
  ``generation`` (bumped only when something outside ``metadata``/``status`` changes);
  ``generateName``; name validation (422); namespaces must exist (404);
- the ``status`` subresource (the main URL ignores ``status``, ``/status`` changes only it),
  PUT, PATCH (merge, strategic-as-merge, JSON patch), no-op writes keep the resourceVersion;
- 404/409 AlreadyExists/409 Conflict (stale resourceVersion)/422 as ``Status`` objects; a
  failed JSON-patch ``test`` is 422 like the real API (kopf retries on it);
- label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!`` not-exists) and
  field selectors on any dotted path;
- lists as ``<Kind>List`` with ``apiVersion`` and ``metadata.resourceVersion``; ``Table``
  output for ``kubectl get`` with a CRD's printer columns;
- watches from a ``resourceVersion`` (only newer events; 410 Gone when it is too old),
  honouring ``timeoutSeconds``, label/field selectors and single-object watches;
- ``deletionTimestamp`` + finalizers, ownerReference garbage collection (dependents whose
  owners are all gone are deleted at once; ``propagationPolicy=Orphan`` keeps them),
  namespace deletion removes the namespace's objects;
- discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``, ``/version``)
  with verbs, shortNames, categories, singularName, namespaced and subresources;
- CRDs from YAML files or POSTed to ``customresourcedefinitions``; CR schemas apply their
  ``default``s and reject values that violate ``type``/``enum``/ranges/``required`` (422).

Not emulated: authentication/authorisation (everything is allowed), admission webhooks,
server-side apply, protobuf, version conversion of CRs, ``limit``/``continue`` paging
(lists return everything), field managers, graceful pod termination periods.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import logging
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock

from devcluster.apiserver import patching, schema
from devcluster.apiserver.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
    details,
)
from devcluster.apiserver.resources import (
    BUILTIN_RESOURCES,
    CrdError,
    ResourceType,
    resource_from_crd,
)
from devcluster.apiserver.selectors import parse_field_selector, parse_label_selector
from devcluster.apiserver.tables import render_table, wants_table

log = logging.getLogger("devcluster.apiserver")

ObjectKey = tuple[str | None, str]  # (namespace, name)
TypeKey = tuple[str, str]  # (group, plural)

KUBERNETES_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-devcluster"}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's unambiguous alphabet
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_END_OF_WATCH = None  # sentinel put into watcher queues when the server stops


def utc_now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


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


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    return json.loads(json.dumps(obj))


def _spec_part(obj: Mapping[str, Any], with_status: bool) -> dict[str, Any]:
    """What a generation tracks: everything but metadata (and status if it is a subresource)."""
    skipped = {"metadata", "status"} if with_status else {"metadata"}
    return {key: value for key, value in obj.items() if key not in skipped}


def fold_string_data(secret: dict[str, Any]) -> None:
    """A Secret's ``stringData`` is write-only: the API server merges it into ``data``
    (base64) and never returns it, so it must not be stored as given either."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data


def _owner_uids(obj: Mapping[str, Any]) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and ref.get("uid")}


def _json_response(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


@attrs.define(kw_only=True)
class DevApiServer(kmock.KubernetesEmulator):
    """The emulator with API-server semantics; serve it with :func:`serve` (plain HTTP).

    All state changes run synchronously inside the event loop's thread, so every write is
    atomic with respect to other requests without any lock.
    """

    log_dir: Path | None = None  # where the pod runner writes container logs (pods/log)
    history: int = 20_000  # watch events kept per resource for watches from a resourceVersion

    _types_by_url: dict[tuple[str, str, str], ResourceType] = attrs.field(init=False, factory=dict)
    _types: dict[TypeKey, ResourceType] = attrs.field(init=False, factory=dict)
    _store: dict[TypeKey, dict[ObjectKey, dict[str, Any]]] = attrs.field(init=False, factory=dict)
    _uids: dict[str, tuple[TypeKey, ObjectKey]] = attrs.field(init=False, factory=dict)
    _dependents: dict[str, set[tuple[TypeKey, ObjectKey]]] = attrs.field(init=False, factory=dict)
    _rv: int = attrs.field(init=False, default=0)
    _events: dict[TypeKey, deque[WatchEvent]] = attrs.field(init=False, factory=dict)
    _compacted: dict[TypeKey, int] = attrs.field(init=False, factory=dict)
    _watchers: dict[TypeKey, set[asyncio.Queue[WatchEvent | None]]] = attrs.field(
        init=False, factory=dict
    )
    _stopping: bool = attrs.field(init=False, default=False)
    requests_served: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource in BUILTIN_RESOURCES:
            self._register(resource)
        for namespace in _DEFAULT_NAMESPACES:
            self.create_object("", "namespaces", {"metadata": {"name": namespace}})
        # kopf's default peering objects, so operators run with peering (HA) out of the box.
        self.create_object("kopf.dev", "clusterkopfpeerings", {"metadata": {"name": "default"}})
        self.create_object(
            "kopf.dev", "kopfpeerings", {"metadata": {"name": "default", "namespace": "default"}}
        )

    # ----------------------------------------------------------------- registration

    def _register(self, resource: ResourceType) -> None:
        old = self._types.get(resource.key)
        if old is not None:
            for version in old.versions:
                self._types_by_url.pop((old.group, version, old.plural), None)
        self._types[resource.key] = resource
        for version in resource.versions:
            self._types_by_url[(resource.group, version, resource.plural)] = resource
        self._store.setdefault(resource.key, {})
        self._events.setdefault(resource.key, deque(maxlen=self.history))
        self._compacted.setdefault(resource.key, 0)
        self._watchers.setdefault(resource.key, set())

    def _unregister(self, key: TypeKey) -> None:
        resource = self._types.pop(key, None)
        if resource is None:
            return
        for version in resource.versions:
            self._types_by_url.pop((resource.group, version, resource.plural), None)
        for obj in self._store.pop(key, {}).values():
            self._uids.pop(obj["metadata"]["uid"], None)
        for queue in self._watchers.pop(key, set()):
            queue.put_nowait(_END_OF_WATCH)
        self._events.pop(key, None)

    def register_crd(self, crd: Mapping[str, Any]) -> ResourceType:
        """Serve a CustomResourceDefinition (also stored, so ``kubectl get crd`` lists it)."""
        resource = resource_from_crd(crd)
        name = crd["metadata"]["name"]
        existing = self._store[("apiextensions.k8s.io", "customresourcedefinitions")].get(
            (None, name)
        )
        if existing is None:
            self.create_object("apiextensions.k8s.io", "customresourcedefinitions", dict(crd))
        else:
            body = copy.deepcopy(dict(crd))
            body.setdefault("metadata", {})["resourceVersion"] = existing["metadata"][
                "resourceVersion"
            ]
            self._replace(
                self._types[("apiextensions.k8s.io", "customresourcedefinitions")],
                None,
                name,
                body,
                subresource=None,
            )
        return resource

    def resource_types(self) -> list[ResourceType]:
        return list(self._types.values())

    # ----------------------------------------------------------------- in-process API

    def create_object(self, group: str, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object from the loop's thread (used at start-up and by tests)."""
        resource = self._types[(group, plural)]
        namespace = body.get("metadata", {}).get("namespace") if resource.namespaced else None
        return self._create(resource, resource.versions[0], namespace, copy.deepcopy(dict(body)))

    def get_object(
        self, group: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return self._store.get((group, plural), {}).get((namespace, name))

    def list_objects(self, group: str, plural: str) -> list[dict[str, Any]]:
        return list(self._store.get((group, plural), {}).values())

    @property
    def resource_version(self) -> int:
        return self._rv

    def stop_watches(self) -> None:
        """End every open watch stream (on shutdown), so connections close promptly."""
        self._stopping = True
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(_END_OF_WATCH)

    # ----------------------------------------------------------------- HTTP entry point

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:  # type: ignore[override]
        self.requests_served += 1
        try:
            return await self._dispatch(raw_request)
        except ApiError as exc:
            return _json_response(exc.status(), status=exc.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # an emulator bug: answer 500 with the reason, keep serving
            log.exception("devcluster: %s %s failed", raw_request.method, raw_request.path_qs)
            error = ApiError(f"devcluster internal error: {exc!r}")
            return _json_response(error.status(), status=500)

    async def _dispatch(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        path = raw.path
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if method == "GET" and path in ("", "/"):
            return _json_response({"paths": self._root_paths()})
        if method == "GET" and path == "/version":
            return _json_response(KUBERNETES_VERSION)
        if method == "GET" and path == "/apis":
            return _json_response(self._api_group_list())
        parsed = parse_url(path)
        if parsed is None:
            raise NotFound("the server could not find the requested resource")
        if parsed.version is None:
            if method != "GET":
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
            if parsed.group == "":
                return _json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": raw.host}
                        ],
                    }
                )
            return _json_response(self._api_group(parsed.group))
        if parsed.plural is None:
            if method != "GET":
                raise MethodNotAllowed(f"{method} is not allowed on {path}")
            return _json_response(self._api_resource_list(parsed.group, parsed.version))

        resource = self._types_by_url.get((parsed.group, parsed.version, parsed.plural))
        if resource is None:
            raise NotFound("the server could not find the requested resource")
        if not resource.namespaced and parsed.namespace is not None:
            raise NotFound("the server could not find the requested resource")
        if parsed.subresource and parsed.subresource not in resource.subresources:
            raise NotFound("the server could not find the requested resource")
        query = raw.query
        version = parsed.version
        ns, name, sub = parsed.namespace, parsed.name, parsed.subresource

        if method == "GET":
            if query.get("watch") in ("true", "1") or parsed.legacy_watch:
                return await self._serve_watch_stream(raw, resource, version, ns, name)
            if name is None:
                return self._render_list(raw, resource, version, self._list(resource, ns, query))
            if sub == "log":
                return self._serve_log(resource, ns, name, query)
            obj = self._get(resource, ns, name)
            if wants_table(raw.headers.get("Accept", "")):
                return _json_response(render_table(resource, [obj], self._rv, query))
            return _json_response(self._versioned(obj, resource, version))

        body = await self._read_body(raw)
        dry_run = bool(query.get("dryRun"))
        if method == "POST" and name is None:
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            namespace = ns
            if resource.namespaced and namespace is None:
                namespace = (body.get("metadata") or {}).get("namespace") or "default"
            created = self._create(resource, version, namespace, body, dry_run=dry_run)
            return _json_response(self._versioned(created, resource, version), status=201)
        if method == "PUT" and name is not None:
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            updated = self._replace(resource, ns, name, body, subresource=sub, dry_run=dry_run)
            return _json_response(self._versioned(updated, resource, version))
        if method == "PATCH" and name is not None:
            content_type = raw.headers.get("Content-Type", patching.MERGE)
            current = self._get(resource, ns, name)
            patched = patching.apply_patch(clone(current), content_type, body)
            if patched.get("metadata", {}).get("resourceVersion") is None:
                patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"][
                    "resourceVersion"
                ]
            updated = self._replace(resource, ns, name, patched, subresource=sub, dry_run=dry_run)
            return _json_response(self._versioned(updated, resource, version))
        if method == "DELETE" and name is not None:
            options = body if isinstance(body, dict) else {}
            deleted = self._delete(resource, ns, name, options, query, dry_run=dry_run)
            return _json_response(self._versioned(deleted, resource, version))
        if method == "DELETE" and name is None:
            options = body if isinstance(body, dict) else {}
            items = [
                self._delete(resource, obj_ns, obj_name, options, query, dry_run=dry_run)
                for obj_ns, obj_name in [
                    (o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in self._list(resource, ns, query)
                ]
            ]
            return _json_response(self._list_body(resource, version, items))
        raise MethodNotAllowed(f"{method} is not supported on {path}")

    @staticmethod
    async def _read_body(raw: aiohttp.web.BaseRequest) -> Any:
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

    # ----------------------------------------------------------------- discovery

    def _groups(self) -> dict[str, list[ResourceType]]:
        groups: dict[str, list[ResourceType]] = {}
        for resource in self._types.values():
            groups.setdefault(resource.group, []).append(resource)
        return groups

    def _group_versions(self, group: str) -> list[str]:
        versions: list[str] = []
        for resource in self._groups().get(group, []):
            for version in resource.versions:
                if version not in versions:
                    versions.append(version)
        return versions

    def _api_group(self, group: str) -> dict[str, Any]:
        versions = self._group_versions(group)
        if not versions:
            raise NotFound("the server could not find the requested resource")
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def _api_group_list(self) -> dict[str, Any]:
        groups = [self._api_group(group) for group in sorted(self._groups()) if group]
        for group in groups:
            del group["kind"], group["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _api_resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = [r for r in self._groups().get(group, []) if version in r.versions]
        if not resources:
            raise NotFound("the server could not find the requested resource")
        entries: list[dict[str, Any]] = []
        for resource in sorted(resources, key=lambda r: r.plural):
            entries.append(
                {
                    "name": resource.plural,
                    "singularName": resource.singular_name,
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": list(resource.verbs),
                    "shortNames": list(resource.short_names),
                    "categories": list(resource.categories),
                }
            )
            for sub in resource.subresources:
                entries.append(
                    {
                        "name": f"{resource.plural}/{sub}",
                        "singularName": "",
                        "namespaced": resource.namespaced,
                        "kind": resource.kind,
                        "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"}
        for resource in self._types.values():
            if resource.group:
                paths.add(f"/apis/{resource.group}")
                paths.update(f"/apis/{resource.group}/{v}" for v in resource.versions)
        return sorted(paths)

    # ----------------------------------------------------------------- reads

    def _get(self, resource: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        obj = self._store[resource.key].get((ns, name))
        if obj is None:
            raise NotFound(
                f'{resource.group_resource} "{name}" not found',
                details=details(resource.group, resource.plural, name),
            )
        return obj

    def _list(
        self, resource: ResourceType, ns: str | None, query: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        store = self._store[resource.key]
        keys = sorted(k for k in store if ns is None or k[0] == ns)
        return [store[k] for k in keys if labels(store[k]) and fields(store[k])]

    def _versioned(
        self, obj: dict[str, Any], resource: ResourceType, version: str
    ) -> dict[str, Any]:
        api_version = resource.api_version(version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _list_body(
        self, resource: ResourceType, version: str, items: Iterable[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version(version),
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [self._versioned(item, resource, version) for item in items],
        }

    def _render_list(
        self,
        raw: aiohttp.web.BaseRequest,
        resource: ResourceType,
        version: str,
        items: list[dict[str, Any]],
    ) -> aiohttp.web.Response:
        if wants_table(raw.headers.get("Accept", "")):
            return _json_response(render_table(resource, items, self._rv, raw.query))
        return _json_response(self._list_body(resource, version, items))

    def _serve_log(
        self, resource: ResourceType, ns: str | None, name: str, query: Mapping[str, str]
    ) -> aiohttp.web.Response:
        pod = self._get(resource, ns, name)
        containers = [c.get("name", "") for c in pod.get("spec", {}).get("containers", [])]
        container = query.get("container") or (containers[0] if containers else "")
        log_file = self.log_dir / str(ns) / name / f"{container}.log" if self.log_dir else None
        if log_file is None or not log_file.exists():
            raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start')
        text = log_file.read_text(errors="replace")
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    # ----------------------------------------------------------------- writes

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, resource: ResourceType, event: WatchEvent) -> None:
        events = self._events[resource.key]
        if len(events) == events.maxlen:
            self._compacted[resource.key] = events[0].resource_version
        events.append(event)
        for queue in self._watchers[resource.key]:
            queue.put_nowait(event)

    def _index_owners(
        self,
        key: tuple[TypeKey, ObjectKey],
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any] | None,
    ) -> None:
        old_uids = _owner_uids(old) if old else set()
        new_uids = _owner_uids(new) if new else set()
        for uid in old_uids - new_uids:
            dependents = self._dependents.get(uid)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[uid]
        for uid in new_uids - old_uids:
            self._dependents.setdefault(uid, set()).add(key)

    def _validate_name(self, resource: ResourceType, name: str) -> None:
        pattern, limit = (
            (_DNS_LABEL, 63) if resource.plural == "namespaces" else (_DNS_SUBDOMAIN, 253)
        )
        if len(name) > limit or not pattern.match(name):
            raise Invalid(
                f'{resource.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                f"a lowercase RFC 1123 name must consist of lower case alphanumeric characters, "
                f"'-' or '.', start and end with an alphanumeric character, at most {limit} long",
                details=details(resource.group, resource.plural, name),
            )

    def _check_kind(self, resource: ResourceType, body: Mapping[str, Any]) -> None:
        kind = body.get("kind")
        if kind not in (None, "", resource.kind):
            raise BadRequest(
                f"the body is a {kind!r} but the URL is for {resource.kind!r} ({resource.plural})"
            )
        api_version = body.get("apiVersion")
        if api_version and api_version.rpartition("/")[0] != resource.group:
            raise BadRequest(
                f"the body's apiVersion {api_version!r} does not match the URL's group "
                f"{resource.group or 'core'!r}"
            )

    def _create(
        self,
        resource: ResourceType,
        version: str,
        ns: str | None,
        body: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        self._check_kind(resource, body)
        metadata = dict(body.get("metadata") or {})
        if resource.namespaced:
            if metadata.get("namespace") not in (None, "", ns):
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            if (None, ns) not in self._store[("", "namespaces")]:
                raise NotFound(
                    f'namespaces "{ns}" not found', details=details("", "namespaces", ns)
                )
            metadata["namespace"] = ns
        else:
            metadata.pop("namespace", None)
        store = self._store[resource.key]
        name = metadata.get("name")
        if not name:
            prefix = metadata.get("generateName")
            if not prefix:
                raise Invalid(
                    f"{resource.kind}: metadata.name or metadata.generateName is required",
                    details=details(resource.group, resource.plural, None),
                )
            for _ in range(100):
                name = prefix + "".join(random.choices(_GENERATE_ALPHABET, k=5))
                if (ns, name) not in store:
                    break
        self._validate_name(resource, name)
        if (ns, name) in store:
            raise AlreadyExists(
                f'{resource.group_resource} "{name}" already exists',
                details=details(resource.group, resource.plural, name),
            )
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            metadata.pop(transient, None)
        metadata["name"] = name
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = utc_now()
        obj = {**body, "apiVersion": resource.api_version(resource.versions[0])}
        obj["kind"] = resource.kind
        obj["metadata"] = metadata
        if resource.has_status or resource.schemas:
            metadata["generation"] = 1
        self._default_on_create(resource, obj)
        self._validate_schema(resource, version, obj)
        if resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj = self._accept_crd(obj)
        if dry_run:
            return obj
        metadata["resourceVersion"] = str(self._next_rv())
        store[(ns, name)] = obj
        self._uids[metadata["uid"]] = (resource.key, (ns, name))
        self._index_owners((resource.key, (ns, name)), None, obj)
        self._emit(resource, WatchEvent(self._rv, "ADDED", obj, None))
        if resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register(resource_from_crd(obj))
        return obj

    def _default_on_create(self, resource: ResourceType, obj: dict[str, Any]) -> None:
        """The defaults the real API server's strategies apply that clients look at."""
        if resource.has_status and resource.key not in (("", "nodes"),):
            obj.pop("status", None)
        if resource.key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
        elif resource.key == ("", "secrets"):
            fold_string_data(obj)
        elif resource.key == ("", "pods"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            for container in spec.get("containers") or []:
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
            obj["status"] = {"phase": "Pending"}
        elif resource.key == ("batch", "jobs"):
            spec = obj.setdefault("spec", {})
            uid = obj["metadata"]["uid"]
            name = obj["metadata"]["name"]
            for field, value in (
                ("backoffLimit", 6),
                ("completions", 1),
                ("parallelism", 1),
                ("suspend", False),
                ("completionMode", "NonIndexed"),
            ):
                spec.setdefault(field, value)
            template = spec.setdefault("template", {})
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(
                {
                    "controller-uid": uid,
                    "batch.kubernetes.io/controller-uid": uid,
                    "job-name": name,
                    "batch.kubernetes.io/job-name": name,
                }
            )
            spec.setdefault(
                "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            )
            obj["status"] = {}

    def _validate_schema(self, resource: ResourceType, version: str, obj: dict[str, Any]) -> None:
        openapi = resource.schemas.get(version)
        if not openapi:
            return
        schema.apply_defaults(openapi, obj)
        problems = schema.validate(openapi, obj)
        if problems:
            name = obj.get("metadata", {}).get("name", "")
            raise Invalid(
                f'{resource.kind}.{resource.group} "{name}" is invalid: ' + ", ".join(problems),
                details={
                    "name": name,
                    "group": resource.group,
                    "kind": resource.kind,
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": message.strip(),
                            "field": field,
                        }
                        for field, _, message in (p.partition(":") for p in problems)
                    ],
                },
            )

    def _accept_crd(self, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            resource_from_crd(obj)
        except CrdError as exc:
            raise Invalid(str(exc)) from exc
        names = obj["spec"]["names"]
        now = utc_now()
        obj["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
        }
        return obj

    def _replace(
        self,
        resource: ResourceType,
        ns: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT semantics (PATCH arrives here after applying the patch to the current object)."""
        old = self._get(resource, ns, name)
        self._check_kind(resource, body)
        body_meta = body.get("metadata") or {}
        if body_meta.get("name") not in (None, name):
            raise BadRequest(
                f"the name of the object ({body_meta.get('name')}) does not match the name "
                f"on the URL ({name})"
            )
        rv = body_meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise Conflict(
                f'Operation cannot be fulfilled on {resource.group_resource} "{name}": the object '
                f"has been modified; please apply your changes to the latest version and try again",
                details=details(resource.group, resource.plural, name),
            )
        if subresource == "status":
            new = {**old, "status": body.get("status")}
            if new["status"] is None:
                del new["status"]
        else:
            new = dict(body)
            if resource.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            metadata = dict(body_meta)
            for immutable in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if immutable in old["metadata"]:
                    metadata[immutable] = old["metadata"][immutable]
                else:
                    metadata.pop(immutable, None)
            metadata.pop("managedFields", None)
            if old["metadata"].get("deletionTimestamp"):
                # A terminating object may only lose finalizers, not gain new ones.
                kept = set(old["metadata"].get("finalizers") or [])
                metadata["finalizers"] = [f for f in metadata.get("finalizers") or [] if f in kept]
                if not metadata["finalizers"]:
                    del metadata["finalizers"]
            new["metadata"] = metadata
            if resource.key == ("", "secrets"):
                fold_string_data(new)
        new["apiVersion"] = old["apiVersion"]
        new["kind"] = resource.kind
        new["metadata"] = {**new["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]}
        if subresource != "status":
            self._validate_schema(resource, resource.versions[0], new)
        if "generation" in old["metadata"] and _spec_part(new, resource.has_status) != _spec_part(
            old, resource.has_status
        ):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            new = self._accept_crd(new)
        terminating = bool(new["metadata"].get("deletionTimestamp"))
        finished = terminating and not new["metadata"].get("finalizers")
        if new == old and not finished:
            return old  # a no-op write keeps the resourceVersion and sends no event
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        if finished:
            self._remove(resource, ns, name, new)
            return new
        self._store[resource.key][(ns, name)] = new
        self._index_owners((resource.key, (ns, name)), old, new)
        self._emit(resource, WatchEvent(self._rv, "MODIFIED", new, old))
        if resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register(resource_from_crd(new))
        return new

    def _delete(
        self,
        resource: ResourceType,
        ns: str | None,
        name: str,
        options: Mapping[str, Any],
        query: Mapping[str, str],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        obj = self._get(resource, ns, name)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            current = obj["metadata"].get(field)
            if wanted and wanted != current:
                raise Conflict(
                    f'Operation cannot be fulfilled on {resource.group_resource} "{name}": '
                    f"Precondition failed: {field}: {wanted}, current: {current}",
                    details=details(resource.group, resource.plural, name),
                )
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        if dry_run:
            return obj
        if policy == "Orphan":
            self._orphan_dependents(obj["metadata"]["uid"])
        if obj["metadata"].get("deletionTimestamp"):
            return obj  # already terminating: waits for its finalizers
        if obj["metadata"].get("finalizers"):
            new = copy.copy(obj)
            new["metadata"] = {
                **obj["metadata"],
                "deletionTimestamp": utc_now(),
                "deletionGracePeriodSeconds": 0,
                "resourceVersion": str(self._next_rv()),
            }
            self._store[resource.key][(ns, name)] = new
            self._emit(resource, WatchEvent(self._rv, "MODIFIED", new, obj))
            return new
        final = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._next_rv())}}
        self._remove(resource, ns, name, final)
        return final

    def _remove(
        self, resource: ResourceType, ns: str | None, name: str, final: dict[str, Any]
    ) -> None:
        """Drop an object for good, then collect what depended on it."""
        key = (resource.key, (ns, name))
        old = self._store[resource.key].pop((ns, name))
        uid = old["metadata"]["uid"]
        self._uids.pop(uid, None)
        self._index_owners(key, old, None)
        self._emit(resource, WatchEvent(self._rv, "DELETED", final, old))
        if resource.key == ("", "namespaces"):
            self._delete_namespace_contents(name)
        elif resource.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = old.get("spec", {})
            self._unregister((spec.get("group", ""), spec.get("names", {}).get("plural", "")))
        self._collect_dependents(uid)

    def _collect_dependents(self, owner_uid: str) -> None:
        for type_key, (ns, name) in sorted(self._dependents.pop(owner_uid, set())):
            resource = self._types.get(type_key)
            obj = self._store.get(type_key, {}).get((ns, name))
            if resource is None or obj is None:
                continue
            if any(uid in self._uids for uid in _owner_uids(obj)):
                continue  # another owner still exists
            self._delete(resource, ns, name, {}, {})

    def _orphan_dependents(self, owner_uid: str) -> None:
        for type_key, (ns, name) in sorted(self._dependents.get(owner_uid, set())):
            resource = self._types[type_key]
            obj = self._store[type_key][(ns, name)]
            new = copy.deepcopy(obj)
            refs = [
                ref
                for ref in new["metadata"].get("ownerReferences") or []
                if ref.get("uid") != owner_uid
            ]
            new["metadata"]["ownerReferences"] = refs
            if not refs:
                del new["metadata"]["ownerReferences"]
            self._replace(resource, ns, name, new, subresource=None)

    def _delete_namespace_contents(self, namespace: str) -> None:
        for type_key, store in list(self._store.items()):
            resource = self._types.get(type_key)
            if resource is None or not resource.namespaced:
                continue
            for ns, name in sorted(k for k in store if k[0] == namespace):
                if (ns, name) in store:
                    self._delete(resource, ns, name, {}, {})

    # ----------------------------------------------------------------- watches

    async def _serve_watch_stream(
        self,
        raw: aiohttp.web.BaseRequest,
        resource: ResourceType,
        version: str,
        ns: str | None,
        name: str | None,
    ) -> aiohttp.web.StreamResponse:
        query = raw.query
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))

        def matches(obj: Mapping[str, Any] | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata", {})
            return (
                (ns is None or meta.get("namespace") == ns)
                and (name is None or meta.get("name") == name)
                and labels(obj)
                and fields(obj)
            )

        timeout: float | None = None
        if query.get("timeoutSeconds"):
            try:
                timeout = float(query["timeoutSeconds"])
            except ValueError as exc:
                raise BadRequest(f"invalid timeoutSeconds {query['timeoutSeconds']!r}") from exc
        since = query.get("resourceVersion") or ""
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        backlog: list[tuple[str, dict[str, Any]]] = []
        expired: int | None = None
        # Synchronous from here to registration: no write can slip between backlog and live.
        if since in ("", "0"):
            store = self._store[resource.key]
            current = sorted(store.values(), key=lambda o: int(o["metadata"]["resourceVersion"]))
            backlog = [("ADDED", obj) for obj in current if matches(obj)]
        else:
            try:
                since_rv = int(since)
            except ValueError as exc:
                raise BadRequest(f"invalid resourceVersion {since!r}: must be a number") from exc
            if since_rv < self._compacted[resource.key]:
                expired = since_rv
            else:
                for event in self._events[resource.key]:
                    if event.resource_version > since_rv:
                        translated = self._translate(event, matches)
                        if translated:
                            backlog.append(translated)
        watchers = self._watchers[resource.key]
        watchers.add(queue)

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if expired is not None:
                gone = Gone(
                    f"too old resource version: {expired} ({self._compacted[resource.key]})"
                )
                await self._write_event(response, "ERROR", gone.status())
                return response
            for event_type, obj in backlog:
                await self._write_event(
                    response, event_type, self._versioned(obj, resource, version)
                )
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while not self._stopping:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                if item is _END_OF_WATCH:
                    break
                translated = self._translate(item, matches)
                if translated:
                    event_type, obj = translated
                    await self._write_event(
                        response, event_type, self._versioned(obj, resource, version)
                    )
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        finally:
            watchers.discard(queue)
        return response

    @staticmethod
    def _translate(
        event: WatchEvent, matches: Callable[[Mapping[str, Any] | None], bool]
    ) -> tuple[str, dict[str, Any]] | None:
        """What a filtered watcher sees: objects entering/leaving the filter are ADDED/DELETED."""
        now, before = matches(event.obj), matches(event.old)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if now or before else None
        if now and before:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None

    @staticmethod
    async def _write_event(
        response: aiohttp.web.StreamResponse, event_type: str, obj: Mapping[str, Any]
    ) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
        await response.write(line.encode() + b"\n")
