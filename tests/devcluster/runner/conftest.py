"""The pod runner's tests share one cluster per module: pod runner on, 2 GPUs, label pool=gpu-a."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from devcluster.cluster import LocalCluster
from tests.devcluster.runner.jobs import GPUS, JobSpace

_counter = itertools.count()
HERE = Path(__file__).parent
TIMEOUT = 60  # seconds a pod-runner test may take, unless its module marks another timeout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        run_pods=True, gpus=GPUS, node_labels={"pool": "gpu-a"}, pod_retry_interval=0.2
    ) as running:
        yield running


@pytest.fixture
def ns(core: kubernetes.client.CoreV1Api) -> str:
    name = f"pods-{next(_counter)}"
    core.create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def space(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> JobSpace:
    return JobSpace(core, batch, ns)
