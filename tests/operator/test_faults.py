"""API faults: a process whose watching has died never stays alive looking healthy (the
probe fails, the process exits 1), and the operator converges through the dev
cluster's fault mode with random SIGKILLs."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from operator_harness import PJ, Kube, OperatorProcess, prunejob, wait_for

from devcluster.cluster import LocalCluster
from prunejob_operator import connection, handlers
from prunejob_operator.runtime import Operator, Outcome, Unhealthy
from prunejob_operator.settings import OperatorConfig

REPO = Path(__file__).resolve().parents[2]


def asynchronous(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function on a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@asynchronous
async def test_watching_that_hears_nothing_is_unhealthy_and_stops_the_process() -> None:
    config = dataclasses.replace(OperatorConfig(), leader_election=False, watch_stale_seconds=1)
    outcome = Outcome(hard_exit_after=600)
    operator = Operator(config, connection.Connection("http://127.0.0.1:9"), outcome)
    await operator.start()
    try:
        assert operator.health()["role"] == "leader"  # nothing heard yet, but not for long
        await asyncio.wait_for(outcome.stop.wait(), timeout=30)
        assert outcome.exit_code == 1 and "has not heard from the API server" in outcome.reason
        with pytest.raises(Unhealthy):
            operator.health()
        memo = kopf.Memo(operator=operator)
        with pytest.raises(kopf.PermanentError):  # kopf's /healthz answers 500 for this
            handlers.health(memo=memo)
    finally:
        await operator.stop()


@asynchronous
async def test_a_reflector_task_that_dies_stops_the_process() -> None:
    config = dataclasses.replace(OperatorConfig(), leader_election=False)
    outcome = Outcome(hard_exit_after=600)
    operator = Operator(config, connection.Connection("http://127.0.0.1:9"), outcome)

    async def broken() -> None:
        raise RuntimeError("a bug")

    operator.reflectors[0].run = broken  # type: ignore[method-assign]
    await operator.start()
    try:
        await asyncio.wait_for(outcome.stop.wait(), timeout=10)
        assert outcome.exit_code == 1 and "a bug" in outcome.reason
    finally:
        await operator.stop()


@pytest.mark.timeout(120)
def test_the_process_exits_1_when_the_api_server_is_gone_for_good(tmp_path: Path) -> None:
    with LocalCluster(crd_paths=[REPO / "crds"], run_pods=False) as cluster:
        kube = Kube(cluster.url)
        kube.namespace("ml")
        operator = OperatorProcess(
            cluster.kubeconfig_path,
            tmp_path / "operator.log",
            env={"PRUNEJOB_OPERATOR_WATCH_STALE_SECONDS": "5"},
        ).start()
        kube.create(PJ, prunejob("before"))
        wait_for(lambda: kube.status("before").get("phase"), timeout=60, what="a status")
        assert operator.health()[0] == 200
    gone = time.monotonic()  # the cluster is stopped: nothing answers on its port
    try:
        wait_for(lambda: operator.exited() is not None, timeout=60, what="the operator's exit")
        code = operator.exited()
    finally:
        operator.kill()
    print(f"exit {code} {time.monotonic() - gone:.1f}s after the API server went away")
    assert code == 1
    assert "stopping with exit code 1" in operator.log()
