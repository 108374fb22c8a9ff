"""Pytest fixtures for tests that need a running local cluster.

Use from a conftest: ``from devcluster.testing import devcluster_factory  # noqa: F401``
(or ``pytest_plugins = ["devcluster.testing"]`` in the root conftest). Each cluster is torn
down at the end of the test (or module) that started it: no processes or files are left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_CRDS = REPO_ROOT / "crds"


@pytest.fixture
def devcluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """``devcluster_factory(crd_paths=[...], run_pods=False, gpus=8)`` -> a started cluster."""
    clusters: list[LocalCluster] = []

    def start(**kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(**kwargs)
        cluster.start()
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in reversed(clusters):
        cluster.stop()


@pytest.fixture
def devcluster(devcluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    """A cluster with the project's CRDs and no pod runner."""
    crds = [PROJECT_CRDS] if PROJECT_CRDS.is_dir() else []
    return devcluster_factory(crd_paths=crds, run_pods=False)
