"""An object's life in the API server: create, replace (PUT and the result of a PATCH),
delete with finalizers and ``deletionTimestamp``, ownerReference garbage collection,
namespace deletion, and CRDs becoming (and ceasing to be) served types.

Every write stamps the global resourceVersion and emits one watch event; a write that
changes nothing keeps the resourceVersion and emits none.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Mapping
from typing import Any

from devcluster.apiserver import strategies
from devcluster.apiserver.discovery import Registry
from devcluster.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    details,
)
from devcluster.apiserver.resources import (
    CRDS,
    NAMESPACES,
    SECRETS,
    ResourceType,
    TypeKey,
    resource_from_crd,
)
from devcluster.apiserver.store import Store, owner_uids
from devcluster.clock import utc_now

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's unambiguous alphabet


class Lifecycle:
    """Writes to the store with the API server's semantics; raises ``ApiError``s."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store

    # ----------------------------------------------------------------- served types

    def serve_type(self, resource: ResourceType) -> None:
        self.registry.register(resource)
        self.store.add_type(resource.key)

    def _stop_serving(self, key: TypeKey) -> None:
        if self.registry.unregister(key) is not None:
            self.store.drop_type(key)

    def apply_crd(self, crd: Mapping[str, Any]) -> ResourceType:
        """Serve a CustomResourceDefinition (also stored, so ``kubectl get crd`` lists it)."""
        resource = resource_from_crd(crd)
        crds = self.registry[CRDS]
        existing = self.store.get(CRDS, (None, crd["metadata"]["name"]))
        if existing is None:
            self.create(crds, crds.versions[0], None, copy.deepcopy(dict(crd)))
        else:
            body = copy.deepcopy(dict(crd))
            body.setdefault("metadata", {})["resourceVersion"] = existing["metadata"][
                "resourceVersion"
            ]
            self.replace(crds, None, crd["metadata"]["name"], body, subresource=None)
        return resource

    # ----------------------------------------------------------------- create

    def create(
        self,
        resource: ResourceType,
        version: str,
        ns: str | None,
        body: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        strategies.check_kind(resource, body)
        metadata = dict(body.get("metadata") or {})
        if resource.namespaced:
            if metadata.get("namespace") not in (None, "", ns):
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            if not self.store.contains(NAMESPACES, (None, ns)):
                raise NotFound(
                    f'namespaces "{ns}" not found', details=details("", "namespaces", ns)
                )
            metadata["namespace"] = ns
        else:
            metadata.pop("namespace", None)
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
                if not self.store.contains(resource.key, (ns, name)):
                    break
        strategies.validate_name(resource, name)
        if self.store.contains(resource.key, (ns, name)):
            raise AlreadyExists(
                f'{resource.group_resource} "{name}" already exists',
                details=details(resource.group, resource.plural, name),
            )
        for transient in strategies.TRANSIENT_ON_CREATE:
            metadata.pop(transient, None)
        metadata["name"] = name
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = utc_now()
        obj = {**body, "apiVersion": resource.api_version(resource.versions[0])}
        obj["kind"] = resource.kind
        obj["metadata"] = metadata
        if resource.has_status or resource.schemas:
            metadata["generation"] = 1
        strategies.prepare_for_create(resource, obj)
        strategies.validate_schema(resource, version, obj)
        if resource.key == CRDS:
            obj = strategies.accept_crd(obj)
        if dry_run:
            return obj
        metadata["resourceVersion"] = str(self.store.next_resource_version())
        self.store.put(resource.key, (ns, name), obj)
        self.store.emit(resource.key, "ADDED", obj, None)
        if resource.key == CRDS:
            self.serve_type(resource_from_crd(obj))
        return obj

    # ----------------------------------------------------------------- replace

    def replace(
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
        old = self.store.require(resource, ns, name)
        strategies.check_kind(resource, body)
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
            new = self._replaced_main(resource, old, body, body_meta)
        new["apiVersion"] = old["apiVersion"]
        new["kind"] = resource.kind
        new["metadata"] = {**new["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]}
        if subresource != "status":
            strategies.validate_schema(resource, resource.versions[0], new)
        if "generation" in old["metadata"] and strategies.spec_part(
            new, resource.has_status
        ) != strategies.spec_part(old, resource.has_status):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if resource.key == CRDS:
            new = strategies.accept_crd(new)
        terminating = bool(new["metadata"].get("deletionTimestamp"))
        finished = terminating and not new["metadata"].get("finalizers")
        if new == old and not finished:
            return old  # a no-op write keeps the resourceVersion and sends no event
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = str(self.store.next_resource_version())
        if finished:
            self._remove(resource, ns, name, new)
            return new
        self.store.put(resource.key, (ns, name), new, old)
        self.store.emit(resource.key, "MODIFIED", new, old)
        if resource.key == CRDS:
            self.serve_type(resource_from_crd(new))
        return new

    @staticmethod
    def _replaced_main(
        resource: ResourceType,
        old: dict[str, Any],
        body: dict[str, Any],
        body_meta: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The new object of a write to the main URL: status and server-owned metadata kept."""
        new = dict(body)
        if resource.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        metadata = dict(body_meta)
        for immutable in strategies.IMMUTABLE_METADATA:
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
        if resource.key == SECRETS:
            strategies.fold_string_data(new)
        return new

    # ----------------------------------------------------------------- delete

    def delete(
        self,
        resource: ResourceType,
        ns: str | None,
        name: str,
        options: Mapping[str, Any],
        query: Mapping[str, str],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        obj = self.store.require(resource, ns, name)
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
                "resourceVersion": str(self.store.next_resource_version()),
            }
            self.store.put(resource.key, (ns, name), new, obj)
            self.store.emit(resource.key, "MODIFIED", new, obj)
            return new
        final = {
            **obj,
            "metadata": {
                **obj["metadata"],
                "resourceVersion": str(self.store.next_resource_version()),
            },
        }
        self._remove(resource, ns, name, final)
        return final

    def _remove(
        self, resource: ResourceType, ns: str | None, name: str, final: dict[str, Any]
    ) -> None:
        """Drop an object for good, then collect what depended on it."""
        old = self.store.pop(resource.key, (ns, name))
        self.store.emit(resource.key, "DELETED", final, old)
        if resource.key == NAMESPACES:
            self._delete_namespace_contents(name)
        elif resource.key == CRDS:
            spec = old.get("spec", {})
            self._stop_serving((spec.get("group", ""), spec.get("names", {}).get("plural", "")))
        self._collect_dependents(old["metadata"]["uid"])

    # ----------------------------------------------------------------- garbage collection

    def _collect_dependents(self, owner_uid: str) -> None:
        """Delete the dependents whose owners are all gone (foreground-free cascading)."""
        for type_key, (ns, name) in self.store.take_dependents(owner_uid):
            resource = self.registry.get(type_key)
            obj = self.store.get(type_key, (ns, name))
            if resource is None or obj is None:
                continue
            if any(self.store.uid_exists(uid) for uid in owner_uids(obj)):
                continue  # another owner still exists
            self.delete(resource, ns, name, {}, {})

    def _orphan_dependents(self, owner_uid: str) -> None:
        for type_key, (ns, name) in self.store.dependents(owner_uid):
            resource = self.registry[type_key]
            new = copy.deepcopy(self.store.require(resource, ns, name))
            refs = [
                ref
                for ref in new["metadata"].get("ownerReferences") or []
                if ref.get("uid") != owner_uid
            ]
            new["metadata"]["ownerReferences"] = refs
            if not refs:
                del new["metadata"]["ownerReferences"]
            self.replace(resource, ns, name, new, subresource=None)

    def _delete_namespace_contents(self, namespace: str) -> None:
        for type_key, (ns, name) in self.store.in_namespace(namespace):
            resource = self.registry.get(type_key)
            if resource is None or not resource.namespaced:
                continue
            if self.store.get(type_key, (ns, name)) is not None:
                self.delete(resource, ns, name, {}, {})
