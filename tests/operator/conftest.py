"""Operator test configuration: the `operator_harness` import path and the cluster fixtures.

Lets the operator tests import their helper modules (`operator_harness`,
`operator_samples`, ...; the suite runs with --import-mode=importlib, which adds no
test dirs to sys.path), and gives the tests that run the real operator against the
dev cluster without workers their shared fixtures: `cluster` (the CRDs installed,
namespace "ml", no pod runner), `kube`, `operator_factory` and `operator`. A module
that needs another cluster defines its own fixture of the same name."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from operator_harness import REPO, Kube, OperatorProcess

from devcluster.cluster import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(crd_paths=[REPO / "crds"], run_pods=False) as started:
        Kube(started.url).namespace("ml")
        yield started


@pytest.fixture
def kube(cluster: LocalCluster) -> Kube:
    return Kube(cluster.url)


@pytest.fixture
def operator_factory(
    cluster: LocalCluster, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Makes operator processes (args added to the Deployment's) and stops them all after."""
    started: list[OperatorProcess] = []

    def make(*args: str) -> OperatorProcess:
        process = OperatorProcess(cluster.kubeconfig_path, tmp_path / "operator.log", *args)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    return operator_factory().start()
