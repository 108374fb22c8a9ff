"""Tests of the operator under API faults: dead watching ends the process; PruneJobs converge.

API faults: a process whose watching has died never stays alive looking healthy (the
probe fails, the process exits 1), and 50 PruneJobs converge through the dev cluster's
seeded fault mode (410 in both forms, 429, 5xx, slow, dropped streams, API-server
restarts) with the operator SIGKILLed at seeded moments, in < 3x the fault-free time."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
from async_test import asynchronous
from operator_harness import (
    JOBS,
    PJ,
    PODS,
    REPO,
    Deployment,
    JobController,
    Kube,
    OperatorProcess,
    prunejob,
    wait_for,
)
from operator_samples import REPORT

from devcluster.apiserver.faults import FaultConfig
from devcluster.cluster import LocalCluster
from prunejob_contract.termination import failure_message, success_message
from prunejob_operator import connection, handlers
from prunejob_operator.runtime import Operator, Outcome, Unhealthy
from prunejob_operator.settings import OperatorConfig


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
        outcome.disarm()  # the failed Outcome would _exit(1) this very pytest process later
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
        outcome.disarm()  # the failed Outcome would _exit(1) this very pytest process later
        await operator.stop()


@pytest.mark.parametrize("disarmed", [False, True])
def test_a_failed_process_ends_even_if_the_graceful_stop_hangs(disarmed: bool) -> None:
    script = (
        "import time\n"
        "from prunejob_operator.runtime import Outcome\n"
        "outcome = Outcome(hard_exit_after=0.5)\n"
        "outcome.fail('a hang')\n"
        f"if {disarmed}:\n"
        "    outcome.disarm()\n"
        "time.sleep(3)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    if disarmed:
        assert done.returncode == 0 and time.monotonic() - started >= 3
    else:
        assert done.returncode == 1 and b"a hang" in done.stderr


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


# -- 50 PruneJobs through the fault mode, with SIGKILLs --------------------------------

SEED = 9
COUNT = 50
FAILING = frozenset(range(4, COUNT, 5))  # every fifth PruneJob's worker fails
RESULT = "prunejob.io/result"
FAULTS = FaultConfig(
    seed=SEED,
    rates={
        "gone": 0.3,  # of watch requests: HTTP 410 Status
        "expire": 0.3,  # of watch streams: an ERROR event with code 410
        "drop": 0.02,  # streams and responses cut
        "throttle": 0.03,  # 429, Retry-After: 1
        "error500": 0.02,
        "error503": 0.02,
        "timeout": 0.01,  # 504 after the request was processed
        "slow": 0.05,  # up to 1 s late
    },
    slow_seconds=1.0,
    retry_after=1,
    stream_seconds=5.0,
    restart_every=12.0,  # API-server restarts, state kept, watch cache compacted
    restart_downtime=1.0,
)


def _names() -> list[str]:
    return [f"pj-{i:02d}" for i in range(COUNT)]


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Workload(threading.Thread):
    """The test-driven Job controller + kubelet (on the exempt listener: the truth): a pod
    for each new Job (from its template, finalizers included), running for a seeded
    8-12 s (real pruning takes minutes; the work goes on while the operator restarts),
    then Succeeded, or Failed with ModelNotFound for the PruneJobs in FAILING."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.controller = JobController(kube)
        self.running: dict[str, tuple[float, dict[str, Any], dict[str, Any]]] = {}
        self.done: set[str] = set()
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            try:
                self._step()
            except Exception as err:  # reported by the test; the loop goes on
                self.errors.append(repr(err))

    def _step(self) -> None:
        for job in self.kube.items(JOBS):
            uid = job["metadata"]["uid"]
            status = job.get("status") or {}
            if uid in self.running or status.get("conditions") or job["spec"].get("suspend"):
                continue
            name = job["metadata"]["labels"]["prunejob.io/name"]
            running = {"running": {"startedAt": _stamp()}}
            pod = self.controller.make_pod(
                job,
                status={
                    "phase": "Running",
                    "startTime": _stamp(),
                    "containerStatuses": [{"name": "prune", "state": running}],
                },
            )
            self.kube.patch(JOBS, job["metadata"]["name"], {"status": {"active": 1}}, sub="status")
            seconds = random.Random(f"{SEED}-{name}").uniform(8.0, 12.0)
            self.running[uid] = (time.monotonic() + seconds, job, pod)
        for uid, (due, job, pod) in list(self.running.items()):
            if uid in self.done or time.monotonic() < due:
                continue
            self._finish(job, pod)
            self.done.add(uid)

    def _finish(self, job: dict[str, Any], pod: dict[str, Any]) -> None:
        name = job["metadata"]["labels"]["prunejob.io/name"]
        now = _stamp()
        if int(name.rsplit("-", 1)[1]) in FAILING:
            message = failure_message("ModelNotFound", "s3://models/in.keras does not exist")
            terminated = {"exitCode": 3, "reason": "Error", "message": message, "finishedAt": now}
            phase, kind, reason = "Failed", "Failed", "PodFailurePolicy"
        else:
            message = success_message(REPORT)
            terminated = {"exitCode": 0, "reason": "Completed", "message": message}
            terminated["finishedAt"] = now
            phase, kind, reason = "Succeeded", "Complete", ""
        pod_status = {
            "phase": phase,
            "containerStatuses": [{"name": "prune", "state": {"terminated": terminated}}],
        }
        self.kube.patch(PODS, pod["metadata"]["name"], {"status": pod_status}, sub="status")
        self.controller.finish(job, kind, reason, now)


class Killer(threading.Thread):
    """SIGKILLs the operator's container at seeded random moments (3-7 s apart, at most
    `limit` times); the Deployment restarts it as the kubelet would."""

    def __init__(self, deployment: Deployment, seed: int, limit: int = 3) -> None:
        super().__init__(daemon=True)
        self.deployment = deployment
        self.rng = random.Random(seed)
        self.limit = limit
        self.kills = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        (pod,) = (replica.pod_name for replica in self.deployment.replicas)
        while self.kills < self.limit and not self.stopping.wait(self.rng.uniform(3.0, 7.0)):
            if self.deployment.kill(pod):
                self.kills += 1


def _converged(kube: Kube) -> bool:
    """Every PruneJob has its final status, and no pod still holds the result finalizer."""
    statuses = {item["metadata"]["name"]: item.get("status") or {} for item in kube.items(PJ)}
    for index, name in enumerate(_names()):
        expected = "Failed" if index in FAILING else "Succeeded"
        if (statuses.get(name) or {}).get("phase") != expected:
            return False
    return not any(RESULT in (pod["metadata"].get("finalizers") or []) for pod in kube.items(PODS))


@dataclasses.dataclass
class Run:
    seconds: float
    kills: int
    exit_codes: list[int]
    stats: dict[str, Any]
    operator_log: str


def _run(tmp_path: Path, faults: FaultConfig | None, *, kills: bool) -> Run:
    tmp_path.mkdir(parents=True, exist_ok=True)
    with LocalCluster(crd_paths=[REPO / "crds"], run_pods=False, faults=faults) as cluster:
        kube = Kube(cluster.exempt_url)  # the test's own requests are never faulted
        kube.namespace("ml")
        workload = Workload(kube)
        with Deployment(
            cluster.kubeconfig_path, tmp_path, 1, setup_url=cluster.exempt_url
        ) as deployment:
            (replica,) = deployment.replicas
            wait_for(lambda: replica.health()[0] == 200, timeout=120, what="the operator's probe")
            killer = Killer(deployment, SEED)
            workload.start()
            started = time.monotonic()
            if kills:
                killer.start()
            for name in _names():
                kube.create(PJ, prunejob(name))
                time.sleep(0.1)  # PruneJobs arrive over a few seconds, as people apply them
            try:
                wait_for(lambda: _converged(kube), timeout=420, what="every PruneJob's status")
            finally:
                seconds = time.monotonic() - started
                killer.stopping.set()
                workload.stopping.set()
                if killer.is_alive():
                    killer.join(timeout=10)
                workload.join(timeout=10)
            stats = cluster.fault_stats() if faults is not None else {}
            assert not workload.errors, workload.errors[:3]
            _check_outcome(kube)
            return Run(seconds, killer.kills, list(deployment.exit_codes), stats, deployment.logs())


def _check_outcome(kube: Kube) -> None:
    jobs: dict[str, list[str]] = {}
    for job in kube.items(JOBS):
        jobs.setdefault(job["metadata"]["labels"]["prunejob.io/name"], []).append(
            job["metadata"]["name"]
        )
    assert {name: len(found) for name, found in jobs.items()} == dict.fromkeys(_names(), 1)
    for item in kube.items(PJ):
        name, status = item["metadata"]["name"], item["status"]
        failing = int(name.rsplit("-", 1)[1]) in FAILING
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        assert status["run"]["jobName"] == jobs[name][0]
        assert status["observedGeneration"] == item["metadata"]["generation"]
        assert status.get("attempts") == 1, (name, status)
        if failing:
            assert status["phase"] == "Failed" and status["reason"] == "ModelNotFound", status
            assert conditions["Failed"]["status"] == "True", status
            assert status.get("failedAttempts") == 1, status
        else:
            assert status["phase"] == "Succeeded", status
            assert conditions["Complete"]["status"] == "True", status
            assert status["filters"] == {"before": 120, "after": 80}, status


@pytest.mark.timeout(1200)
def test_fifty_prunejobs_converge_through_api_faults_and_sigkills(tmp_path: Path) -> None:
    calm = _run(tmp_path / "calm", None, kills=False)
    rough = _run(tmp_path / "faults", FAULTS, kills=True)
    stats = rough.stats
    exits = [code for code in rough.exit_codes if code != -9]
    print(
        f"\nfault-free: {calm.seconds:.1f}s; with faults and SIGKILLs: {rough.seconds:.1f}s "
        f"({rough.seconds / calm.seconds:.2f}x)\n"
        f"API requests {stats['requests']} (watches {stats['watchRequests']}), faults "
        f"injected {stats['faulted']}: {stats['faults']}; API-server restarts "
        f"{stats['restarts']}\noperator SIGKILLs {rough.kills}, container restarts "
        f"{len(rough.exit_codes)}, exits by itself {exits}"
    )
    assert calm.exit_codes == []  # nothing made the fault-free operator stop
    faults = stats["faults"]
    assert faults["gone"] and faults["expire"], faults  # 410 in both forms
    assert faults["throttle"] and faults["error500"] + faults["error503"], faults
    assert stats["restarts"] >= 1 and rough.kills >= 2
    assert len(exits) <= 1, (exits, rough.operator_log[-5000:])  # never a crash loop
    assert rough.seconds < 3 * calm.seconds
