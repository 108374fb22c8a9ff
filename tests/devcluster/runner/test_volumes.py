"""Volumes and env: Secrets reach the process; missing ones wait, then proceed."""

from __future__ import annotations

import base64

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
