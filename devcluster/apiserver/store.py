"""The API server's in-memory object store and per-type watch history.

The object store: objects per resource type, uids, the owner index, the global
resourceVersion, and each type's event history and live subscribers (what watches read).

All of it is plain synchronous state, changed only from the event loop's thread, so every
write is atomic with respect to other requests without a lock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devcluster.apiserver.errors import NotFound, details
from devcluster.apiserver.resources import ResourceType, TypeKey

ObjectKey = tuple[str | None, str]  # (namespace, name)
ObjectRef = tuple[TypeKey, ObjectKey]
END_OF_WATCH = None  # put into subscriber queues when a stream must end (shutdown, CRD gone)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


Subscriber = asyncio.Queue[WatchEvent | None]


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and ref.get("uid")}


class Store:
    """Objects and their history; knows nothing of HTTP, schemas or lifecycles."""

    def __init__(self, history: int = 20_000) -> None:
        self.history = history  # watch events kept per resource type
        self.resource_version = 0
        self.stopping = False
        self._objects: dict[TypeKey, dict[ObjectKey, dict[str, Any]]] = {}
        self._uids: dict[str, ObjectRef] = {}
        self._dependents: dict[str, set[ObjectRef]] = {}
        self._events: dict[TypeKey, deque[WatchEvent]] = {}
        self._compacted: dict[TypeKey, int] = {}
        self._subscribers: dict[TypeKey, set[Subscriber]] = {}

    # ----------------------------------------------------------------- types

    def add_type(self, key: TypeKey) -> None:
        self._objects.setdefault(key, {})
        self._events.setdefault(key, deque(maxlen=self.history))
        self._compacted.setdefault(key, 0)
        self._subscribers.setdefault(key, set())

    def drop_type(self, key: TypeKey) -> None:
        """Forget a type's objects and history and end its watches (its CRD was deleted)."""
        for obj in self._objects.pop(key, {}).values():
            self._uids.pop(obj["metadata"]["uid"], None)
        for queue in self._subscribers.pop(key, set()):
            queue.put_nowait(END_OF_WATCH)
        self._events.pop(key, None)

    # ----------------------------------------------------------------- reads

    def get(self, key: TypeKey, obj_key: ObjectKey) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get(obj_key)

    def require(self, resource: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        """The object, or the API's 404."""
        obj = self._objects[resource.key].get((ns, name))
        if obj is None:
            raise NotFound(
                f'{resource.group_resource} "{name}" not found',
                details=details(resource.group, resource.plural, name),
            )
        return obj

    def contains(self, key: TypeKey, obj_key: ObjectKey) -> bool:
        return obj_key in self._objects[key]

    def items(self, key: TypeKey) -> list[dict[str, Any]]:
        return list(self._objects.get(key, {}).values())

    def select(
        self,
        key: TypeKey,
        ns: str | None,
        matches: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects (in ``ns``, or everywhere) that match, sorted by namespace and name."""
        objects = self._objects[key]
        keys = sorted(k for k in objects if ns is None or k[0] == ns)
        if matches is None:
            return [objects[k] for k in keys]
        return [objects[k] for k in keys if matches(objects[k])]

    def in_namespace(self, namespace: str) -> Iterator[ObjectRef]:
        """The objects of every type in ``namespace``, type by type, each type's sorted by
        name when it is reached (so deleting while iterating is safe)."""
        for type_key, objects in list(self._objects.items()):
            for obj_key in sorted(k for k in objects if k[0] == namespace):
                yield type_key, obj_key

    def uid_exists(self, uid: str) -> bool:
        return uid in self._uids

    def ref_of(self, uid: str) -> ObjectRef | None:
        """Where the object with this uid is stored, if it exists."""
        return self._uids.get(uid)

    def dependents(self, owner_uid: str) -> list[ObjectRef]:
        return sorted(self._dependents.get(owner_uid, set()))

    def take_dependents(self, owner_uid: str) -> list[ObjectRef]:
        """The dependents of a removed owner, forgetting the index entry."""
        return sorted(self._dependents.pop(owner_uid, set()))

    # ----------------------------------------------------------------- writes

    def next_resource_version(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def put(
        self,
        key: TypeKey,
        obj_key: ObjectKey,
        obj: dict[str, Any],
        old: dict[str, Any] | None = None,
    ) -> None:
        """Store a new or changed object and index its uid and owners."""
        self._objects[key][obj_key] = obj
        if old is None:
            self._uids[obj["metadata"]["uid"]] = (key, obj_key)
        self._index_owners((key, obj_key), old, obj)

    def pop(self, key: TypeKey, obj_key: ObjectKey) -> dict[str, Any]:
        old = self._objects[key].pop(obj_key)
        self._uids.pop(old["metadata"]["uid"], None)
        self._index_owners((key, obj_key), old, None)
        return old

    def _index_owners(
        self, ref: ObjectRef, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        old_uids = owner_uids(old) if old else set()
        new_uids = owner_uids(new) if new else set()
        for uid in old_uids - new_uids:
            dependents = self._dependents.get(uid)
            if dependents is not None:
                dependents.discard(ref)
                if not dependents:
                    del self._dependents[uid]
        for uid in new_uids - old_uids:
            self._dependents.setdefault(uid, set()).add(ref)

    # ----------------------------------------------------------------- history and watches

    def emit(
        self, key: TypeKey, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Record a write made at the current resourceVersion and tell the live watches."""
        event = WatchEvent(self.resource_version, event_type, obj, old)
        events = self._events[key]
        if len(events) == events.maxlen:
            self._compacted[key] = events[0].resource_version
        events.append(event)
        for queue in self._subscribers[key]:
            queue.put_nowait(event)

    def compacted(self, key: TypeKey) -> int:
        """Watches from a resourceVersion older than this get 410 Gone."""
        return self._compacted[key]

    def compact(self, key: TypeKey) -> None:
        """Forget the type's history up to now (as etcd compaction does)."""
        self._compacted[key] = self.resource_version

    def events_since(self, key: TypeKey, since: int) -> list[WatchEvent]:
        return [event for event in self._events[key] if event.resource_version > since]

    def subscribe(self, key: TypeKey) -> tuple[Subscriber, Callable[[], None]]:
        """A queue of the type's live events, and the function that unsubscribes it."""
        queue: Subscriber = asyncio.Queue()
        subscribers = self._subscribers[key]
        subscribers.add(queue)
        return queue, lambda: subscribers.discard(queue)

    def stop_watches(self) -> None:
        """End every open watch stream (on shutdown), so connections close promptly."""
        self.stopping = True
        for queues in self._subscribers.values():
            for queue in queues:
                queue.put_nowait(END_OF_WATCH)
