"""Tests of the API server's fault mode, as a client sees it over HTTP.

Fault mode: each injected fault as a client sees it over HTTP, the exempt paths, the
counts, seeded determinism, API-server restarts with state kept, and the CLI flags."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.apiserver.faults import EXEMPT_HEADER, FaultConfig, FaultConfigError, FaultInjector
from devcluster.cluster import LocalCluster
from tests.devcluster.apiserver.widgets import DATA
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(90)
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(crd_paths=[DATA / "widgets.yaml"], run_pods=False) as running:
        yield running


@pytest.fixture(autouse=True)
def faults_off(cluster: LocalCluster) -> Iterator[None]:
    yield
    cluster.set_faults(None)


def request(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body); status 0 when the connection was cut."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError):
        return 0, {}, None


def watch(base: str, path: str) -> tuple[int, list[dict[str, Any]], bool]:
    """(status, events, whether the stream ended cleanly) of a watch request; a cut stream
    is an ``IncompleteRead`` (line iteration would hide it: it treats a cut as the end)."""

    def parse(data: bytes) -> list[dict[str, Any]]:
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    try:
        with urllib.request.urlopen(base + path, timeout=15) as response:
            try:
                return response.status, parse(response.read()), True
            except http.client.IncompleteRead as cut:
                return response.status, parse(cut.partial), False
            except ConnectionError:
                return response.status, [], False
    except urllib.error.HTTPError as error:
        return error.code, [json.loads(error.read())], True


def only(kind: str, **options: Any) -> FaultConfig:
    return FaultConfig(seed=1, rates={kind: 1.0}, **options)


def configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def test_config_parsing_and_validation() -> None:
    config = FaultConfig.parse("all=0.01,slow=0.2,seed=7,restart-every=20,retry_after=3")
    assert config.seed == 7 and config.restart_every == 20 and config.retry_after == 3
    assert config.rates["gone"] == 0.01 and config.rates["slow"] == 0.2
    assert FaultConfig.from_json(config.to_json()) == config
    for bad, needle in [
        ("gone=2", "between 0 and 1"),
        ("nonsense=0.1", "unknown fault setting 'nonsense'"),
        ("all=0.2", "sum to at most 1"),
        ("gone", "NAME=VALUE"),
        ("gone=lots", "is not a number"),
    ]:
        with pytest.raises(FaultConfigError, match=needle):
            FaultConfig.parse(bad)


def test_decisions_are_seeded() -> None:
    def run(seed: int) -> list[Any]:
        injector = FaultInjector(FaultConfig.uniform(0.1, seed=seed), lambda: 0)
        return [injector.decide(watch=i % 3 == 0) for i in range(300)]

    first, again, other = run(5), run(5), run(6)
    assert first == again and first != other
    kinds = {d.kind for d in first}
    assert {"gone", "expire", "drop", "throttle", "error500", "error503", "timeout"} <= kinds
    assert all(d.kind not in ("gone", "expire") for i, d in enumerate(first) if i % 3)


def test_errors_that_process_nothing(cluster: LocalCluster) -> None:
    for kind, code, reason in [
        ("throttle", 429, "TooManyRequests"),
        ("error500", 500, "InternalError"),
        ("error503", 503, "ServiceUnavailable"),
    ]:
        cluster.set_faults(only(kind, retry_after=2))
        status, headers, body = request(cluster.url, "POST", CONFIGMAPS, configmap(kind))
        assert (status, body["reason"], body["code"]) == (code, reason, code)
        if kind == "throttle":
            assert headers["Retry-After"] == "2" and body["details"]["retryAfterSeconds"] == 2
        assert request(cluster.exempt_url, "GET", f"{CONFIGMAPS}/{kind}")[0] == 404


def test_drop_and_timeout_happen_after_the_write(cluster: LocalCluster) -> None:
    cluster.set_faults(only("drop"))
    status, _, _ = request(cluster.url, "POST", CONFIGMAPS, configmap("dropped"))
    assert status == 0  # the client saw the connection cut...
    assert request(cluster.exempt_url, "GET", f"{CONFIGMAPS}/dropped")[0] == 200  # ...it was made
    cluster.set_faults(only("timeout"))
    status, _, body = request(cluster.url, "POST", CONFIGMAPS, configmap("timed-out"))
    assert status == 504 and body["reason"] == "Timeout"
    assert request(cluster.exempt_url, "GET", f"{CONFIGMAPS}/timed-out")[0] == 200


def test_watch_faults(cluster: LocalCluster) -> None:
    path = f"{CONFIGMAPS}?watch=true&timeoutSeconds=10"
    cluster.set_faults(only("gone"))
    status, (body,), _ = watch(cluster.url, path)
    assert status == 410 and body["reason"] == "Expired" and body["kind"] == "Status"
    assert request(cluster.url, "GET", CONFIGMAPS)[0] == 200  # gone hits watches only

    cluster.set_faults(only("expire", stream_seconds=0.3))
    status, events, clean = watch(cluster.url, path)
    assert status == 200 and clean
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410
    assert events[-1]["object"]["reason"] == "Expired"

    cluster.set_faults(only("drop", stream_seconds=0.3))
    status, events, clean = watch(cluster.url, path)
    assert status == 200 and not clean  # the stream was cut, not ended
    assert all(e["type"] != "ERROR" for e in events)


def test_exempt_requests_and_counts(cluster: LocalCluster) -> None:
    cluster.set_faults(FaultConfig(seed=3, rates={"error503": 1.0, "slow": 1.0}, slow_seconds=0.05))
    before = cluster.fault_stats()
    assert request(cluster.url, "GET", CONFIGMAPS, headers={EXEMPT_HEADER: "1"})[0] == 200
    assert request(cluster.exempt_url, "GET", CONFIGMAPS)[0] == 200
    with urllib.request.urlopen(cluster.url + "/healthz", timeout=10) as health:
        assert health.read() == b"ok"  # never faulted (nor counted)
    status, _, stats = request(cluster.url, "GET", "/devcluster/faults")
    assert status == 200 and stats["config"]["rates"]["error503"] == 1.0
    assert request(cluster.url, "GET", CONFIGMAPS)[0] == 503
    after = cluster.fault_stats()
    assert after["requests"] == before["requests"] + 1
    assert after["faults"]["error503"] == before["faults"]["error503"] + 1
    assert after["faults"]["slow"] == before["faults"]["slow"] + 1
    assert after["exemptRequests"] >= before["exemptRequests"] + 3
    # The kubernetes client sees the same faults on the faulty kubeconfig only.
    import kubernetes.client

    faulty = kubernetes.client.CoreV1Api(cluster.api_client(faults=True))
    with pytest.raises(kubernetes.client.ApiException) as caught:
        faulty.list_namespaced_config_map("default")
    assert caught.value.status == 503
    truth = kubernetes.client.CoreV1Api(cluster.api_client())
    assert truth.list_namespaced_config_map("default").items is not None
    # Switched over HTTP: PUT a config, DELETE switches faults off.
    status, _, stats = request(cluster.url, "PUT", "/devcluster/faults", {"rates": {"gone": 0.5}})
    assert status == 200 and stats["config"]["rates"] == {"gone": 0.5}
    status, _, body = request(cluster.url, "PUT", "/devcluster/faults", {"rates": {"x": 1}})
    assert status == 400 and "unknown fault" in body["message"]
    request(cluster.url, "DELETE", "/devcluster/faults")
    assert request(cluster.url, "GET", CONFIGMAPS)[0] == 200


def test_restart_keeps_state_cuts_connections_and_compacts(cluster: LocalCluster) -> None:
    status, _, created = request(cluster.url, "POST", CONFIGMAPS, configmap("survivor"))
    assert status == 201
    rv = created["metadata"]["resourceVersion"]
    cut: dict[str, Any] = {}

    def watch_main() -> None:
        cut["main"] = watch(cluster.url, f"{CONFIGMAPS}?watch=1&resourceVersion={rv}")

    def watch_exempt() -> None:
        cut["exempt"] = watch(
            cluster.exempt_url, f"{CONFIGMAPS}?watch=1&resourceVersion={rv}&timeoutSeconds=6"
        )

    threads = [threading.Thread(target=watch_main), threading.Thread(target=watch_exempt)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    stopper = threading.Thread(target=lambda: cluster.restart_apiserver(downtime=1.5))
    stopper.start()
    wait_for(lambda: request(cluster.url, "GET", CONFIGMAPS)[0] == 0, timeout=10, interval=0.02)
    assert request(cluster.exempt_url, "GET", f"{CONFIGMAPS}/survivor")[0] == 200  # up all along
    assert request(cluster.exempt_url, "POST", CONFIGMAPS, configmap("during"))[0] == 201
    stopper.join()
    for thread in threads:
        thread.join()
    assert cut["main"][2] is False  # the main listener's stream was cut by the crash
    assert cut["exempt"][2] is True
    assert [e["object"]["metadata"]["name"] for e in cut["exempt"][1]] == ["during"]
    # Same port, same state; the watch history starts again at the restart.
    assert request(cluster.url, "GET", f"{CONFIGMAPS}/during")[0] == 200
    status, events, _ = watch(cluster.url, f"{CONFIGMAPS}?watch=1&resourceVersion={rv}")
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410
    assert cluster.fault_stats()["restarts"] >= 1


def test_scheduled_restarts(cluster: LocalCluster) -> None:
    before = cluster.fault_stats()["restarts"]
    cluster.set_faults(FaultConfig(seed=2, restart_every=0.5, restart_downtime=0.2))
    wait_for(lambda: cluster.fault_stats()["restarts"] >= before + 2, timeout=30)
    cluster.set_faults(None)
    wait_for(lambda: request(cluster.url, "GET", CONFIGMAPS)[0] == 200, timeout=10)


def test_cli_flags(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kc"
    process = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "serve", "--no-pods", "--kubeconfig",
         str(kubeconfig), "--faults", "all=0.01,stream-seconds=3", "--fault-seed", "9",
         "--restart-every", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        status, _, stats = request(url, "GET", "/devcluster/faults")
        assert status == 200
        assert stats["config"]["seed"] == 9 and stats["config"]["restartEvery"] == 600
        assert stats["config"]["rates"]["timeout"] == 0.01
        assert stats["config"]["streamSeconds"] == 3
    finally:
        process.terminate()
        process.wait(timeout=20)
    bad = subprocess.run(
        [sys.executable, "-m", "devcluster", "serve", "--no-pods", "--faults", "gone=7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
