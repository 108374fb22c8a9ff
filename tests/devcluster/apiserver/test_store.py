"""The store on its own: the owner index, history and compaction, subscribers."""

from __future__ import annotations

from typing import Any

from devcluster.apiserver.store import END_OF_WATCH, Store

KEY = ("", "configmaps")


def obj(name: str, uid: str, *owners: str) -> dict[str, Any]:
    refs = [{"uid": owner} for owner in owners]
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": refs}}


def test_owner_index_follows_puts_and_pops() -> None:
    store = Store()
    store.add_type(KEY)
    store.put(KEY, ("ns", "a"), obj("a", "uid-a"))
    store.put(KEY, ("ns", "b"), obj("b", "uid-b", "uid-a"))
    assert store.uid_exists("uid-b") and store.dependents("uid-a") == [(KEY, ("ns", "b"))]
    store.put(KEY, ("ns", "b"), obj("b", "uid-b"), old=store.get(KEY, ("ns", "b")))
    assert store.dependents("uid-a") == []
    store.pop(KEY, ("ns", "b"))
    assert not store.uid_exists("uid-b") and store.get(KEY, ("ns", "b")) is None


def test_history_is_bounded_and_compaction_is_recorded() -> None:
    store = Store(history=2)
    store.add_type(KEY)
    queue, unsubscribe = store.subscribe(KEY)
    for name in ("a", "b", "c"):
        store.next_resource_version()
        store.emit(KEY, "ADDED", obj(name, name), None)
    assert [e.obj["metadata"]["name"] for e in store.events_since(KEY, 0)] == ["b", "c"]
    assert store.compacted(KEY) == 1  # a watch from before "b" must relist
    assert [e.obj["metadata"]["name"] for e in store.events_since(KEY, 2)] == ["c"]
    assert queue.qsize() == 3
    unsubscribe()
    store.emit(KEY, "ADDED", obj("d", "d"), None)
    assert queue.qsize() == 3
    store.compact(KEY)
    assert store.compacted(KEY) == store.resource_version


def test_dropping_a_type_ends_its_watches() -> None:
    store = Store()
    store.add_type(KEY)
    store.put(KEY, ("ns", "a"), obj("a", "uid-a"))
    queue, _ = store.subscribe(KEY)
    store.drop_type(KEY)
    assert queue.get_nowait() is END_OF_WATCH and not store.uid_exists("uid-a")
