"""`Lifecycle`: how the API server creates, replaces and deletes objects, and serves CRDs.

An object's life in the API server: create, replace (PUT and the result of a PATCH),
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

from devcluster.apiserver import builtins, fieldcheck, strategies
from devcluster.apiserver.discovery import Registry
from devcluster.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    details,
    invalid,
)
from devcluster.apiserver.resources import (
    CRDS,
    NAMESPACES,
    PODS,
    PRIORITY_CLASSES,
    SECRETS,
    ResourceType,
    TypeKey,
    resource_from_crd,
)
from devcluster.apiserver.store import Store, owner_uids
from devcluster.clock import utc_now

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's unambiguous alphabet
FOREGROUND = "foregroundDeletion"  # the garbage collector's finalizer on a foreground delete


def _dependent_policy(obj: Mapping[str, Any]) -> str:
    """How the garbage collector deletes a dependent: as its own finalizers ask, else
    in the background."""
    finalizers = obj.get("metadata", {}).get("finalizers") or []
    if "orphan" in finalizers:
        return "Orphan"
    return "Foreground" if FOREGROUND in finalizers else "Background"


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
        field_validation: str = "Warn",
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        strategies.check_kind(resource, body)
        builtins.check_decodable(resource, version, body)
        metadata = dict(body.get("metadata") or {})
        requested_name = metadata.get("name") or metadata.get("generateName") or ""
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
        builtins.prepare(resource, obj)
        if resource.key == PODS:
            builtins.admit_pod(obj, self._priority_classes(), requested_name)
        self._validate(resource, version, obj, None, field_validation, warnings)
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

    def _validate(
        self,
        resource: ResourceType,
        version: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        field_validation: str,
        warnings: list[str] | None,
    ) -> None:
        """Check a created (``old`` None) or replaced object: schema, built-in rules, admission.

        Unknown fields are reported as ``field_validation`` says (into ``warnings`` for Warn).
        """
        strategies.validate_schema(
            resource,
            version,
            obj,
            lambda unknown: fieldcheck.report(
                resource, version, unknown, field_validation, warnings
            ),
        )
        builtins.validate(resource, obj, old)
        if resource.key == PRIORITY_CLASSES:
            builtins.admit_priority_class(
                obj, self.store.items(PRIORITY_CLASSES), creating=old is None
            )

    def _priority_classes(self) -> dict[str, dict[str, Any]]:
        return {pc["metadata"]["name"]: pc for pc in self.store.items(PRIORITY_CLASSES)}

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
        field_validation: str = "Warn",
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        """PUT semantics (PATCH arrives here after applying the patch to the current object)."""
        old = self.store.require(resource, ns, name)
        strategies.check_kind(resource, body)
        builtins.check_decodable(resource, resource.versions[0], body)
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
            self._validate(resource, resource.versions[0], new, old, field_validation, warnings)
        if "generation" in old["metadata"] and strategies.spec_part(
            new, resource.has_status
        ) != strategies.spec_part(old, resource.has_status):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if resource.key == CRDS:
            new = strategies.accept_crd(new)
        finished = strategies.deletion_finished(new)
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
            kept = old["metadata"].get("finalizers") or []
            added = [f for f in metadata.get("finalizers") or [] if f not in kept]
            if added:
                raise invalid(
                    resource.group,
                    resource.kind,
                    old["metadata"]["name"],
                    [
                        (
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            f"deleted, found new finalizers {strategies.go_strings(added)}",
                        )
                    ],
                )
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
        """DELETE: at once, or ``deletionTimestamp`` while finalizers remain or a bound Pod's
        grace period runs (its kubelet confirms with a grace-0 DELETE). ``propagationPolicy``
        Background (collect dependents once the object is gone), Foreground (dependents
        first: ``foregroundDeletion`` holds the object while dependents with
        ``blockOwnerDeletion`` exist) or Orphan; batch/v1 Jobs default to Orphan, as the real
        API does for that group version."""
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
        policy = strategies.propagation_policy(resource, options, query)
        grace = strategies.grace_period(resource, obj, options, query)
        if dry_run:
            return obj
        uid = obj["metadata"]["uid"]
        if policy == "Orphan":
            self._orphan_dependents(uid)
            obj = self.store.require(resource, ns, name)
        foreground = policy == "Foreground" and bool(self.store.dependents(uid))
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if foreground and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if meta.get("deletionTimestamp"):
            # Already terminating: only a shorter grace period or a foreground policy apply.
            current = meta.get("deletionGracePeriodSeconds") or 0
            shorter = grace is not None and grace < current
            if not shorter and finalizers == (meta.get("finalizers") or []):
                if foreground:
                    self._delete_dependents_first(uid)
                return obj
            new_meta = {**meta, "finalizers": finalizers} if finalizers else dict(meta)
            if shorter:
                new_meta.update(deletionGracePeriodSeconds=grace, deletionTimestamp=utc_now())
            return self._mark_deleting(resource, ns, name, obj, new_meta, foreground)
        if finalizers or grace:
            new_meta = {
                **meta,
                "deletionTimestamp": utc_now(grace or 0),
                "deletionGracePeriodSeconds": grace or 0,
            }
            if finalizers:
                new_meta["finalizers"] = finalizers
            return self._mark_deleting(resource, ns, name, obj, new_meta, foreground)
        final = {
            **obj,
            "metadata": {**meta, "resourceVersion": str(self.store.next_resource_version())},
        }
        self._remove(resource, ns, name, final)
        return final

    def _mark_deleting(
        self,
        resource: ResourceType,
        ns: str | None,
        name: str,
        obj: dict[str, Any],
        meta: dict[str, Any],
        foreground: bool,
    ) -> dict[str, Any]:
        new = {
            **obj,
            "metadata": {**meta, "resourceVersion": str(self.store.next_resource_version())},
        }
        if strategies.deletion_finished(new):
            self._remove(resource, ns, name, new)
            return new
        self.store.put(resource.key, (ns, name), new, obj)
        self.store.emit(resource.key, "MODIFIED", new, obj)
        if foreground:
            self._delete_dependents_first(new["metadata"]["uid"])
        return self.store.get(resource.key, (ns, name)) or new

    def _remove(
        self, resource: ResourceType, ns: str | None, name: str, final: dict[str, Any]
    ) -> None:
        """Drop an object for good, then collect what depended on it and let owners
        waiting in foreground deletion go once their blocking dependents are gone."""
        old = self.store.pop(resource.key, (ns, name))
        self.store.emit(resource.key, "DELETED", final, old)
        if resource.key == NAMESPACES:
            self._delete_namespace_contents(name)
        elif resource.key == CRDS:
            spec = old.get("spec", {})
            self._stop_serving((spec.get("group", ""), spec.get("names", {}).get("plural", "")))
        self._collect_dependents(old["metadata"]["uid"])
        for owner_uid in owner_uids(old):
            self._release_if_unblocked(owner_uid)

    # ----------------------------------------------------------------- garbage collection

    def _collect_dependents(self, owner_uid: str) -> None:
        """Delete (in the background) the dependents whose owners are all gone."""
        for type_key, (ns, name) in self.store.take_dependents(owner_uid):
            resource = self.registry.get(type_key)
            obj = self.store.get(type_key, (ns, name))
            if resource is None or obj is None:
                continue
            if any(self.store.uid_exists(uid) for uid in owner_uids(obj)):
                continue  # another owner still exists
            self.delete(resource, ns, name, {"propagationPolicy": _dependent_policy(obj)}, {})

    def _delete_dependents_first(self, owner_uid: str) -> None:
        """Foreground deletion of an owner: delete its dependents (those with another owner
        that stays just lose this owner reference), then release it if none blocks."""
        for type_key, (ns, name) in self.store.dependents(owner_uid):
            resource = self.registry.get(type_key)
            obj = self.store.get(type_key, (ns, name))
            if resource is None or obj is None:
                continue
            others = owner_uids(obj) - {owner_uid}
            if any(self._is_solid_owner(uid) for uid in others):
                self._drop_owner_reference(resource, obj, owner_uid)
            elif not obj["metadata"].get("deletionTimestamp"):
                policy = "Foreground" if self.store.dependents(obj["metadata"]["uid"]) else None
                self.delete(resource, ns, name, {"propagationPolicy": policy or "Background"}, {})
        self._release_if_unblocked(owner_uid)

    def _is_solid_owner(self, uid: str) -> bool:
        ref = self.store.ref_of(uid)
        if ref is None:
            return False
        owner = self.store.get(*ref)
        return owner is not None and FOREGROUND not in (owner["metadata"].get("finalizers") or [])

    def _release_if_unblocked(self, owner_uid: str) -> None:
        """Remove ``foregroundDeletion`` from an owner once no dependent with
        ``blockOwnerDeletion`` is left (the object then goes if nothing else holds it)."""
        ref = self.store.ref_of(owner_uid)
        if ref is None:
            return
        owner = self.store.get(*ref)
        if owner is None or FOREGROUND not in (owner["metadata"].get("finalizers") or []):
            return
        for type_key, key in self.store.dependents(owner_uid):
            dependent = self.store.get(type_key, key)
            for owner_ref in (dependent or {}).get("metadata", {}).get("ownerReferences") or []:
                if owner_ref.get("uid") == owner_uid and owner_ref.get("blockOwnerDeletion"):
                    return  # still blocked
        resource = self.registry.get(ref[0])
        if resource is None:
            return
        body = copy.deepcopy(owner)
        body["metadata"]["finalizers"] = [
            f for f in owner["metadata"]["finalizers"] if f != FOREGROUND
        ]
        if not body["metadata"]["finalizers"]:
            del body["metadata"]["finalizers"]
        self.replace(resource, ref[1][0], ref[1][1], body, subresource=None)

    def _drop_owner_reference(
        self, resource: ResourceType, obj: dict[str, Any], owner_uid: str
    ) -> None:
        new = copy.deepcopy(obj)
        refs = [
            r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid
        ]
        new["metadata"]["ownerReferences"] = refs
        if not refs:
            del new["metadata"]["ownerReferences"]
        meta = obj["metadata"]
        self.replace(resource, meta.get("namespace"), meta["name"], new, subresource=None)

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
                self.delete(resource, ns, name, {"propagationPolicy": "Background"}, {})
