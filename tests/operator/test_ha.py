"""Tests of HA as shipped: leader election among the Deployment's replicas, and takeovers.

HA as shipped: the Deployment's replicas (its own args and env) elect one leader with a
Lease; only it reconciles; a lost pod's standby takes over within the stated bound, a
SIGTERM hands over at once, a crashed container resumes at once; never two Jobs for
one run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import (
    JOBS,
    PJ,
    Deployment,
    JobController,
    Kube,
    lease,
    pod_of,
    prunejob,
    wait_for,
)
from operator_samples import REPORT

from devcluster.cluster import LocalCluster
from prunejob_contract.termination import success_message

pytestmark = pytest.mark.timeout(300)
TAKEOVER_BOUND = 20.0  # README "HA": lease duration 15 s + retry period 2 s + jitter
SLACK = 10.0  # a loaded 2-core machine: seconds of slack on top of the stated bound


@pytest.fixture
def deployment(cluster: LocalCluster, tmp_path: Path) -> Iterator[Deployment]:
    with Deployment(cluster.kubeconfig_path, tmp_path) as started:
        yield started


def leader_pod(kube: Kube) -> str | None:
    holder = lease(kube).get("holderIdentity")
    return pod_of(holder) if holder else None


def roles(deployment: Deployment) -> dict[str, str]:
    found = {}
    for replica in deployment.replicas:
        code, report = replica.health()
        found[replica.pod_name] = report.get("prunejob", {}).get("role") if code == 200 else code
    return found


def one_leader_and_standbys(deployment: Deployment, kube: Kube) -> str | None:
    leader = leader_pod(kube)
    seen = roles(deployment)
    if leader is None or seen.get(leader) != "leader":
        return None
    others = [role for pod, role in seen.items() if pod != leader]
    return leader if others and all(role == "standby" for role in others) else None


def jobs_by_owner(kube: Kube) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for job in kube.items(JOBS):
        owner = job["metadata"]["labels"]["prunejob.io/name"]
        owners.setdefault(owner, []).append(job["metadata"]["name"])
    return owners


def create(kube: Kube, names: list[str]) -> None:
    for name in names:
        kube.create(PJ, prunejob(name))


def all_have_jobs(kube: Kube, names: list[str]) -> dict[str, list[str]] | None:
    owners = jobs_by_owner(kube)
    return owners if all(name in owners for name in names) else None


def finish_all(kube: Kube, names: list[str]) -> None:
    controller = JobController(kube)
    for job in kube.items(JOBS):
        if not (job.get("status") or {}).get("conditions"):
            controller.succeed(job, success_message(REPORT))

    def succeeded() -> bool:
        return all(kube.status(name).get("phase") == "Succeeded" for name in names)

    wait_for(succeeded, timeout=60, what="every PruneJob Succeeded")


def test_the_shipped_replicas_elect_one_leader_and_a_lost_leader_is_replaced(
    kube: Kube, deployment: Deployment
) -> None:
    assert len(deployment.replicas) == 2  # deploy/base/deployment.yaml's replicas
    first = wait_for(lambda: one_leader_and_standbys(deployment, kube), timeout=60, what="a leader")
    names = [f"before-{i}" for i in range(5)]
    create(kube, names)
    wait_for(lambda: all_have_jobs(kube, names), timeout=60, what="Jobs of the first leader")
    standby = next(r for r in deployment.replicas if r.pod_name != first)
    assert "created Job" not in standby.log()  # only the leader writes
    assert "created Job" in deployment.replica(first).log()

    killed = time.monotonic()
    deployment.replace(first)  # SIGKILL; the pod is gone, a new pod starts as a standby
    wait_for(lambda: leader_pod(kube) == standby.pod_name, timeout=TAKEOVER_BOUND + SLACK + 5)
    took = time.monotonic() - killed
    print(f"takeover after SIGKILL of the leader: {took:.1f}s")
    assert took <= TAKEOVER_BOUND + SLACK
    spec = lease(kube)
    assert spec["leaseTransitions"] >= 1 and spec["leaseDurationSeconds"] == 15

    later = [f"after-{i}" for i in range(5)]
    create(kube, later)
    owners = wait_for(lambda: all_have_jobs(kube, later), timeout=60, what="the new leader's Jobs")
    assert "created Job" in standby.log()
    wait_for(lambda: one_leader_and_standbys(deployment, kube) == standby.pod_name, timeout=60)
    finish_all(kube, names + later)
    owners = jobs_by_owner(kube)
    assert {name: len(jobs) for name, jobs in owners.items()} == dict.fromkeys(names + later, 1)


def test_sigterm_hands_over_at_once_and_a_crashed_container_resumes_at_once(
    kube: Kube, deployment: Deployment
) -> None:
    first = wait_for(lambda: one_leader_and_standbys(deployment, kube), timeout=60, what="a leader")
    other = next(r.pod_name for r in deployment.replicas if r.pod_name != first)

    stopped = time.monotonic()
    deployment.terminate(first)  # SIGTERM: it releases the Lease (then restarts as a standby)
    wait_for(lambda: leader_pod(kube) == other, timeout=15, what="the handover")
    handover = time.monotonic() - stopped
    print(f"handover after SIGTERM: {handover:.1f}s")
    assert handover <= 10  # the stop itself plus one retry period (2 s), on a busy machine
    names = ["during-0", "during-1"]
    create(kube, names)
    wait_for(lambda: all_have_jobs(kube, names), timeout=60)

    before = lease(kube)["holderIdentity"]
    crashed = time.monotonic()
    deployment.kill(other)  # SIGKILL; the kubelet restarts the container in the same pod
    wait_for(
        lambda: (lease(kube).get("holderIdentity") or before) != before, timeout=30, what="resume"
    )
    resumed = time.monotonic() - crashed
    print(f"the same pod's restarted container resumed after {resumed:.1f}s")
    assert leader_pod(kube) == other and resumed < 15  # sooner than the lease duration
    more = ["resumed-0"]
    create(kube, more)
    wait_for(lambda: all_have_jobs(kube, more), timeout=60)
    finish_all(kube, names + more)
    assert {name: len(jobs) for name, jobs in jobs_by_owner(kube).items()} == dict.fromkeys(
        names + more, 1
    )
    # SIGTERM: a clean exit (kopf gives its leftover tasks 5 s, so it may come after the kill)
    wait_for(lambda: deployment.restarts >= 2, timeout=60, what="both containers restarted")
    assert 0 in deployment.exit_codes


def test_prunejobs_created_while_the_leader_dies_get_exactly_one_job_each(
    kube: Kube, deployment: Deployment
) -> None:
    first = wait_for(lambda: one_leader_and_standbys(deployment, kube), timeout=60, what="a leader")
    names = [f"burst-{i:02d}" for i in range(30)]
    create(kube, names[:15])
    deployment.replace(first)  # while it is creating their Jobs
    create(kube, names[15:])
    owners = wait_for(lambda: all_have_jobs(kube, names), timeout=90, what="every Job")
    assert {name: len(jobs) for name, jobs in owners.items()} == dict.fromkeys(names, 1)
    finish_all(kube, names)
