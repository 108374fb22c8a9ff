"""A tiny kopf operator (with peering, not --standalone) runs against the local API server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from devcluster.cluster import LocalCluster
from tests import polling

T = TypeVar("T")

DATA = Path(__file__).parent / "data"

OPERATOR = textwrap.dedent(
    """
    import kopf

    @kopf.on.create("example.com", "v1", "widgets")
    def created(body, patch, **_):
        patch.status["phase"] = "Created"
        child = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": body["metadata"]["name"] + "-cm"}, "data": {}}
        kopf.adopt(child)
        import kubernetes
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config())
        api.create_namespaced_config_map(body["metadata"]["namespace"], child)

    @kopf.on.delete("example.com", "v1", "widgets")
    def deleted(body, **_):
        import kubernetes
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config())
        api.create_namespaced_config_map(
            body["metadata"]["namespace"],
            {"metadata": {"name": body["metadata"]["name"] + "-deleted"}, "data": {}},
        )
    """
)


def wait_for(predicate: Callable[[], T | None], timeout: float = 30.0) -> T:
    return polling.wait_for(predicate, timeout, interval=0.2)  # this file's interval, as before


@pytest.mark.timeout(90)
def test_kopf_operator_with_peering_gets_create_and_delete(tmp_path: Path) -> None:
    script = tmp_path / "operator.py"
    script.write_text(OPERATOR)
    with LocalCluster(crd_paths=[DATA / "widgets.yaml"], run_pods=False) as cluster:
        api = cluster.api_client()
        custom = kubernetes.client.CustomObjectsApi(api)
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespaced_config_map  # noqa: B018 - the API is usable before kopf starts
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--all-namespaces", "--verbose", str(script)],
            env=cluster.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            body = {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w"},
                "spec": {"size": 1},
            }
            custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", body)

            def finalized_and_created() -> bool:
                w = custom.get_namespaced_custom_object(
                    "example.com", "v1", "default", "widgets", "w"
                )
                return bool(w["metadata"].get("finalizers")) and (
                    w.get("status", {}).get("phase") == "Created"
                )

            try:
                wait_for(finalized_and_created)
            except AssertionError:
                operator.terminate()
                raise AssertionError(operator.communicate(timeout=30)[0]) from None
            child = core.read_namespaced_config_map("w-cm", "default")
            assert child.metadata.owner_references[0].uid  # kopf.adopt got a real uid
            custom.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
            wait_for(
                lambda: (
                    core.list_namespaced_config_map(
                        "default", field_selector="metadata.name=w-deleted"
                    ).items
                )
            )

            def gone() -> bool:
                try:
                    custom.get_namespaced_custom_object(
                        "example.com", "v1", "default", "widgets", "w"
                    )
                except ApiException as error:
                    return error.status == 404
                return False

            wait_for(gone)
            wait_for(
                lambda: (
                    not core.list_namespaced_config_map(
                        "default", field_selector="metadata.name=w-cm"
                    ).items
                )
            )  # owner GC
            peering = custom.get_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", "default"
            )
            assert peering.get("status"), "kopf did not announce itself in the default peering"
        finally:
            operator.terminate()
            output, _ = operator.communicate(timeout=30)
        assert "Traceback" not in output, output
