"""Watches: from a resourceVersion, live with selectors, 410 Gone once compacted, as Tables."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import (
    GROUP,
    PLURAL,
    VERSION,
    create_widget,
    http,
    watch_lines,
    widget,
)

pytestmark = pytest.mark.timeout(60)


def test_watch_from_resource_version_sends_only_newer_events(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    create_widget(custom, namespace, widget("old"))
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    _, listing = http(cluster, "GET", base)
    since = listing["metadata"]["resourceVersion"]
    create_widget(custom, namespace, widget("new"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "old", {"spec": {"size": 4}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "new")
    started = time.monotonic()
    events = watch_lines(cluster, f"{base}?watch=true&resourceVersion={since}&timeoutSeconds=1")
    assert time.monotonic() - started >= 0.9  # the server held the stream until the timeout
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "new"), ("MODIFIED", "old"), ("DELETED", "new")]
    everything = watch_lines(cluster, f"{base}?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in everything] == [("ADDED", "old")]


def test_watch_delivers_live_events_with_field_selector(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    path = f"{base}?watch=true&timeoutSeconds=2&fieldSelector=metadata.name%3Dlive"
    result: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: result.append(watch_lines(cluster, path)))
    reader.start()
    time.sleep(0.3)
    create_widget(custom, namespace, widget("other"))
    create_widget(custom, namespace, widget("live"))
    reader.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in result[0]] == [("ADDED", "live")]


def test_watch_from_a_compacted_resource_version_is_gone(cluster: LocalCluster) -> None:
    def compact(server: Any) -> None:
        server.compact("", "configmaps")

    cluster.call_in_server(compact)
    events = watch_lines(cluster, "/api/v1/configmaps?watch=true&resourceVersion=1")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_a_watch_that_asks_for_tables_gets_one_row_tables(
    cluster: LocalCluster, custom: Any, namespace: str
) -> None:
    # `kubectl get -w` asks for Tables; its header and rows come from the CRD's columns.
    create_widget(custom, namespace, widget("tabled", size=3))
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    (event,) = watch_lines(
        cluster,
        f"{base}?watch=true&timeoutSeconds=1&includeObject=Object",
        {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
    )
    table = event["object"]
    assert (event["type"], table["kind"]) == ("ADDED", "Table")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Phase", "Size", "Age"]
    (row,) = table["rows"]
    assert row["cells"][0] == "tabled" and row["cells"][2] == 3
    assert row["object"]["metadata"]["name"] == "tabled"
    plain = watch_lines(cluster, f"{base}?watch=true&timeoutSeconds=1")
    assert [e["object"]["kind"] for e in plain] == ["Widget"]  # no Table unless asked
