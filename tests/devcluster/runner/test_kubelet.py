"""The kubelet: processes, termination messages, image pulls, start errors."""

from __future__ import annotations

import kubernetes.client
import pytest

from tests.devcluster.runner.jobs import (
    condition,
    finished_job,
    make_job,
    pods_of,
    python,
    waiting_reason,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)


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


def test_unpullable_image_backs_off(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "img", {**python("pass"), "image": "invalid.example/nope:1"})
    assert wait_for(waiting_reason(core, ns, "img"))[0] in ("ErrImagePull", "ImagePullBackOff")
    wait_for(lambda: (waiting_reason(core, ns, "img")() or ("",))[0] == "ImagePullBackOff")


def test_missing_executable_fails_the_pod(
    core: kubernetes.client.CoreV1Api, batch: kubernetes.client.BatchV1Api, ns: str
) -> None:
    make_job(batch, ns, "noexe", {"command": ["definitely-not-installed-xyz"]}, backoffLimit=0)
    job = finished_job(batch, ns, "noexe")
    assert condition(job, "Failed").reason == "BackoffLimitExceeded"
    (pod,) = pods_of(core, ns, "noexe")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError" and "executable file not found" in terminated.message
