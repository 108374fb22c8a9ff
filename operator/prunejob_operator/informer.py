"""An informer: a reflector's objects filed in a `cache.Index`, every change reported.

It is the reflector's `Sink`. A watch event files the object (its `file` function says
under which keys, as `cache.*_entries` do; None: not ours) and reports a `Change`. A
full list files every listed object again (a relist reports each one: level-triggered
consumers reconcile them all) and reports the ones that disappeared meanwhile as
DELETED. Only each object's resourceVersion and owner are kept besides the index, so
thousands of objects cost little memory. No I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from prunejob_operator.cache import Index, ObjectKey

LOG = logging.getLogger("prunejob_operator.informer")

Body = Mapping[str, Any]
Entries = Mapping[Hashable, Any]
SYNC = "SYNC"  # listed again by a relist, unchanged


@dataclass(frozen=True)
class Change:
    """One object's change as the consumer sees it."""

    type: str  # ADDED, MODIFIED, DELETED, or SYNC
    namespace: str
    name: str
    owner: str | None  # what `owner` said of the object (kept for deletions)
    body: Body | None  # None for an object found gone by a relist
    old: Entries | None  # what it was filed under before
    new: Entries | None  # what it is filed under now (None when deleted / not ours)

    def value(self) -> Any:
        """The filed value (a record or summary): the new one, else the old one."""
        for entries in (self.new, self.old):
            if entries:
                return next(iter(entries.values()))
        return None


def _key(body: Body) -> ObjectKey:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


class Informer:
    """Files what a reflector sees into `index` and reports `Change`s to `notify`."""

    def __init__(
        self,
        resource: str,
        index: Index,
        file: Callable[[Body], Entries | None],
        notify: Callable[[Change], None],
        *,
        owner: Callable[[Body], str | None] = lambda body: None,
        wanted: Callable[[str], bool] = lambda namespace: True,
    ) -> None:
        """`wanted(namespace)`: namespaces outside it are ignored (glob patterns)."""
        self.resource = resource
        self.index = index
        self._file = file
        self._notify = notify
        self._owner = owner
        self._wanted = wanted
        self._known: dict[ObjectKey, tuple[str, str | None]] = {}  # -> (resourceVersion, owner)

    def __len__(self) -> int:
        return len(self._known)

    def replace(self, items: list[dict[str, Any]], scope: str | None) -> None:
        seen: set[ObjectKey] = set()
        for body in items:
            key = _key(body)
            if not self._wanted(key[0]):
                continue
            seen.add(key)
            known = self._known.get(key)
            version = _version(body)
            if known is None:
                self._upsert("ADDED", key, body)
            else:
                self._upsert(SYNC if known[0] == version else "MODIFIED", key, body)
        for key in list(self._known):
            if key not in seen and (scope is None or key[0] == scope):
                self._delete(key, None)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        if not self._wanted(key[0]):
            return
        if event_type == "DELETED":
            self._delete(key, obj)
        else:
            self._upsert(event_type, key, obj)

    def _upsert(self, event_type: str, key: ObjectKey, body: Body) -> None:
        try:
            owner, new = self._owner(body), self._file(body)
        except Exception:  # one unreadable object must not stop the watching of all
            LOG.exception("%s %s/%s: cannot read it; ignoring it", self.resource, *key)
            owner, new = None, None
        self._known[key] = (_version(body), owner)
        old = self.index.file(key, new)
        self._notify(Change(event_type, key[0], key[1], owner, body, old, new or None))

    def _delete(self, key: ObjectKey, body: Body | None) -> None:
        known = self._known.pop(key, None)
        owner = known[1] if known else None
        old = self.index.unfile(key)
        self._notify(Change("DELETED", key[0], key[1], owner, body, old, None))


def _version(body: Body) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")
