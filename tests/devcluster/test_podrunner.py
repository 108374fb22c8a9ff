"""The pod runner runs Jobs' real commands and reports them the way Kubernetes does."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from devcluster.cluster import LocalCluster
from tests.polling import wait_for

GPUS = 2
pytestmark = pytest.mark.timeout(60)
_counter = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        run_pods=True, gpus=GPUS, node_labels={"pool": "gpu-a"}, pod_retry_interval=0.2
    ) as running:
        yield running


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
def ns(core: kubernetes.client.CoreV1Api) -> str:
    name = f"pods-{next(_counter)}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def python(code: str, *args: str) -> dict[str, Any]:
    return {"command": ["python", "-c", code], "args": list(args)}


def make_job(
    batch: kubernetes.client.BatchV1Api,
    ns: str,
    name: str,
    container: dict[str, Any],
    *,
    volumes: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
    **spec: Any,
) -> Any:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "example/worker:1", **container}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    body = {
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": {"app": "t"}}, "spec": pod_spec}, **spec},
    }
    return batch.create_namespaced_job(ns, body)


def condition(obj: Any, kind: str) -> Any:
    for item in (obj.status.conditions or []) if obj.status else []:
        if item.type == kind and item.status == "True":
            return item
    return None


def finished_job(batch: kubernetes.client.BatchV1Api, ns: str, name: str) -> Any:
    def done() -> Any:
        job = batch.read_namespaced_job(name, ns)
        return job if condition(job, "Complete") or condition(job, "Failed") else None

    return wait_for(done)


def pods_of(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> list[Any]:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items


def waiting_reason(core: kubernetes.client.CoreV1Api, ns: str, job: str) -> Callable[[], Any]:
    def reason() -> Any:
        for pod in pods_of(core, ns, job):
            for status in pod.status.container_statuses or []:
                if status.state.waiting:
                    return (status.state.waiting.reason, status.state.waiting.message)
        return None

    return reason


def test_job_success_reports_pod_and_job_status(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    created = make_job(batch, ns, "ok", python("print('hello from the pod')"))
    job = finished_job(batch, ns, "ok")
    assert condition(job, "Complete") and job.status.succeeded == 1
    assert job.status.start_time and job.status.completion_time
    (pod,) = pods_of(core, ns, "ok")
    assert pod.metadata.name.startswith("ok-")
    assert pod.metadata.labels["app"] == "t"
    assert pod.metadata.labels["controller-uid"] == created.metadata.uid
    owner = pod.metadata.owner_references[0]
    assert owner.controller and owner.uid == created.metadata.uid and owner.kind == "Job"
    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "devcluster-node"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    assert terminated.started_at and terminated.finished_at
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert scheduled.status == "True"
    assert "hello from the pod" in core.read_namespaced_pod_log(pod.metadata.name, ns)


def test_failures_retry_until_backoff_limit(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "bad", python("import sys; sys.exit(3)"), backoffLimit=1)
    job = finished_job(batch, ns, "bad")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "BackoffLimitExceeded"
    pods = pods_of(core, ns, "bad")
    assert len(pods) == 2 and job.status.failed == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed"
        assert terminated.exit_code == 3 and terminated.reason == "Error"


def test_pod_failure_policy_fails_the_job_at_once_or_ignores_the_failure(
    core: kubernetes.client.CoreV1Api,
    batch: kubernetes.client.BatchV1Api,
    ns: str,
    tmp_path: Path,
) -> None:
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                  "values": [3, 5]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
        ]
    }  # fmt: skip
    make_job(batch, ns, "fatal", python("import sys; sys.exit(5)"),
             backoffLimit=3, podFailurePolicy=policy)  # fmt: skip
    job = finished_job(batch, ns, "fatal")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "PodFailurePolicy"
    assert "exit code 5 matching FailJob rule at index 0" in failed.message
    assert len(pods_of(core, ns, "fatal")) == 1 and job.status.failed == 1

    # Ignored failures neither count nor stop the retries: exit 7 twice, then 1 (counted).
    count = "import os, sys; d = sys.argv[1]; n = len(os.listdir(d)); open(f'{d}/{n}', 'w'); "
    make_job(batch, ns, "flaky", python(count + "sys.exit(7 if n < 2 else 1)", str(tmp_path)),
             backoffLimit=0, podFailurePolicy=policy)  # fmt: skip
    job = finished_job(batch, ns, "flaky")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "BackoffLimitExceeded"
    assert len(pods_of(core, ns, "flaky")) == 3 and job.status.failed == 1


def test_active_deadline_kills_the_process(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "slow", python("import time; time.sleep(120)"), activeDeadlineSeconds=1)
    job = finished_job(batch, ns, "slow")
    failed = condition(job, "Failed")
    assert failed and failed.reason == "DeadlineExceeded"
    wait_for(lambda: not pods_of(core, ns, "slow"))  # the pod (and its process) went away


def test_termination_message_from_default_and_custom_paths(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2] * 5000)"
    make_job(batch, ns, "msg", python(write, "/dev/termination-log", "x"))
    custom = python(write, "--out=/results/message.txt", "y")
    custom["args"][0] = "/results/message.txt"
    make_job(
        batch,
        ns,
        "msg2",
        {
            **custom,
            "terminationMessagePath": "/results/message.txt",
            "volumeMounts": [{"name": "results", "mountPath": "/results"}],
        },
        volumes=[{"name": "results", "emptyDir": {}}],
    )
    for name, char in (("msg", "x"), ("msg2", "y")):
        finished_job(batch, ns, name)
        (pod,) = pods_of(core, ns, name)
        message = pod.status.container_statuses[0].state.terminated.message
        assert message == char * 4096  # capped like the kubelet


def test_secret_env_and_volume_reach_the_process(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "creds"},
            "data": {
                "passphrase": base64.b64encode(b"s3cret-env").decode(),
                "token": base64.b64encode(b"s3cret-file").decode(),
            },
        },
    )
    code = (
        "import os, sys; open('/dev/termination-log', 'w')"
        ".write(os.environ['PASS'] + ' ' + open(sys.argv[1]).read() + ' ' + os.environ['PLAIN'])"
    )
    container = python(code.replace("'/dev/termination-log'", "sys.argv[2]"))
    container["args"] = ["/etc/creds/token", "/dev/termination-log"]
    container["env"] = [
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "passphrase"}}},
        {"name": "PLAIN", "value": "plain"},
    ]
    container["volumeMounts"] = [{"name": "c", "mountPath": "/etc/creds", "readOnly": True}]
    make_job(
        batch,
        ns,
        "sec",
        container,
        volumes=[{"name": "c", "secret": {"secretName": "creds", "defaultMode": 0o400}}],
    )
    job = finished_job(batch, ns, "sec")
    assert condition(job, "Complete")
    (pod,) = pods_of(core, ns, "sec")
    message = pod.status.container_statuses[0].state.terminated.message
    assert message == "s3cret-env s3cret-file plain"


def test_missing_env_secret_waits_then_proceeds(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    container = python("import os; assert os.environ['K'] == 'v'")
    container["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}}]
    make_job(batch, ns, "late", container)
    reason = wait_for(waiting_reason(core, ns, "late"))
    assert reason == ("CreateContainerConfigError", 'secret "late" not found')
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "late"}, "data": {"k": base64.b64encode(b"v").decode()}}
    )
    assert condition(finished_job(batch, ns, "late"), "Complete")


def test_missing_volume_secret_is_a_failed_mount_then_proceeds(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    container = python("import sys; assert open(sys.argv[1]).read() == 'v'", "/keys/k")
    container["volumeMounts"] = [{"name": "keys", "mountPath": "/keys"}]
    make_job(
        batch, ns, "mnt", container, volumes=[{"name": "keys", "secret": {"secretName": "vol"}}]
    )
    assert wait_for(waiting_reason(core, ns, "mnt"))[0] == "ContainerCreating"
    events = wait_for(
        lambda: [e for e in core.list_namespaced_event(ns).items if e.reason == "FailedMount"]
    )
    assert 'secret "vol" not found' in events[0].message
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "vol"}, "data": {"k": base64.b64encode(b"v").decode()}}
    )
    assert condition(finished_job(batch, ns, "mnt"), "Complete")


def test_unpullable_image_backs_off(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "img", {**python("pass"), "image": "invalid.example/nope:1"})
    assert wait_for(waiting_reason(core, ns, "img"))[0] in ("ErrImagePull", "ImagePullBackOff")
    wait_for(lambda: (waiting_reason(core, ns, "img")() or ("",))[0] == "ImagePullBackOff")


def test_gpu_and_node_selector_mismatch_are_unschedulable(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    too_many = {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": str(GPUS + 1)}}}
    make_job(batch, ns, "big", too_many)
    make_job(batch, ns, "elsewhere", python("pass"), node_selector={"pool": "gpu-b"})
    make_job(batch, ns, "fits", python("pass"), node_selector={"pool": "gpu-a"})

    def unschedulable(job: str) -> Any:
        for pod in pods_of(core, ns, job):
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False":
                    return cond
        return None

    big = wait_for(lambda: unschedulable("big"))
    assert big.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in big.message
    elsewhere = wait_for(lambda: unschedulable("elsewhere"))
    assert "node affinity/selector" in elsewhere.message
    assert condition(finished_job(batch, ns, "fits"), "Complete")
    assert all(p.status.phase == "Pending" for p in pods_of(core, ns, "big"))
    node = core.read_node("devcluster-node")
    assert node.status.capacity["nvidia.com/gpu"] == str(GPUS)


def test_gpu_capacity_bounds_concurrency(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    hold = {
        **python("import os, time\nwhile not os.path.exists('/tmp/never'): time.sleep(0.05)"),
        "resources": {"limits": {"nvidia.com/gpu": str(GPUS)}},
    }
    make_job(batch, ns, "first", hold, activeDeadlineSeconds=3)
    wait_for(lambda: [p for p in pods_of(core, ns, "first") if p.status.phase == "Running"])
    make_job(
        batch, ns, "second", {**python("pass"), "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    )

    def second_unschedulable() -> bool:
        return any(
            c.type == "PodScheduled" and c.status == "False"
            for p in pods_of(core, ns, "second")
            for c in p.status.conditions or []
        )

    wait_for(second_unschedulable)
    assert condition(finished_job(batch, ns, "first"), "Failed")  # deadline frees the GPUs
    assert condition(finished_job(batch, ns, "second"), "Complete")


def test_suspended_job_starts_when_unsuspended(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "queued", python("pass"), suspend=True)
    wait_for(lambda: condition(batch.read_namespaced_job("queued", ns), "Suspended"))
    assert pods_of(core, ns, "queued") == []
    batch.patch_namespaced_job("queued", ns, {"spec": {"suspend": False}})
    job = finished_job(batch, ns, "queued")
    assert condition(job, "Complete") and not condition(job, "Suspended")


def test_missing_executable_fails_the_pod(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "noexe", {"command": ["definitely-not-installed-xyz"]}, backoffLimit=0)
    job = finished_job(batch, ns, "noexe")
    assert condition(job, "Failed").reason == "BackoffLimitExceeded"
    (pod,) = pods_of(core, ns, "noexe")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError" and "executable file not found" in terminated.message
