"""The API server's tests share one cluster per module: the widgets CRD, no pod runner."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest

from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import DATA


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(crd_paths=[DATA / "widgets.yaml"], run_pods=False) as running:
        yield running


@pytest.fixture
def namespace(core: kubernetes.client.CoreV1Api, request: pytest.FixtureRequest) -> str:
    name = request.node.name.lower().replace("_", "-")[:40].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    return name
