"""Clients of the cluster each test directory starts: its conftest defines ``cluster``."""

from __future__ import annotations

import kubernetes.client
import pytest

from devcluster.cluster import LocalCluster


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def batch(api: kubernetes.client.ApiClient) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)
