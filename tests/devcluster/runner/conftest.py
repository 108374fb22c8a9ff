"""The pod runner's tests share one cluster per module: pod runner on, 2 GPUs, label pool=gpu-a."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import kubernetes.client
import pytest

from devcluster.cluster import LocalCluster
from tests.devcluster.runner.jobs import GPUS

_counter = itertools.count()


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
