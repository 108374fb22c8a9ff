"""Volumes and env: Secrets reach the process; missing ones wait, then proceed."""

from __future__ import annotations

import base64

from tests.devcluster.runner.jobs import JobSpace, condition, python
from tests.polling import wait_for


def test_secret_env_and_volume_reach_the_process(space: JobSpace) -> None:
    space.core.create_namespaced_secret(
        space.ns,
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
    space.make_job(
        "sec",
        container,
        volumes=[{"name": "c", "secret": {"secretName": "creds", "defaultMode": 0o400}}],
    )
    job = space.finished_job("sec")
    assert condition(job, "Complete")
    (pod,) = space.pods_of("sec")
    message = pod.status.container_statuses[0].state.terminated.message
    assert message == "s3cret-env s3cret-file plain"


def test_missing_env_secret_waits_then_proceeds(space: JobSpace) -> None:
    container = python("import os; assert os.environ['K'] == 'v'")
    container["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}}]
    space.make_job("late", container)
    reason = wait_for(space.waiting_reason("late"))
    assert reason == ("CreateContainerConfigError", 'secret "late" not found')
    space.core.create_namespaced_secret(
        space.ns, {"metadata": {"name": "late"}, "data": {"k": base64.b64encode(b"v").decode()}}
    )
    assert condition(space.finished_job("late"), "Complete")


def test_missing_volume_secret_is_a_failed_mount_then_proceeds(space: JobSpace) -> None:
    container = python("import sys; assert open(sys.argv[1]).read() == 'v'", "/keys/k")
    container["volumeMounts"] = [{"name": "keys", "mountPath": "/keys"}]
    space.make_job("mnt", container, volumes=[{"name": "keys", "secret": {"secretName": "vol"}}])
    assert wait_for(space.waiting_reason("mnt"))[0] == "ContainerCreating"
    events = wait_for(
        lambda: [
            e for e in space.core.list_namespaced_event(space.ns).items if e.reason == "FailedMount"
        ]
    )
    assert 'secret "vol" not found' in events[0].message
    space.core.create_namespaced_secret(
        space.ns, {"metadata": {"name": "vol"}, "data": {"k": base64.b64encode(b"v").decode()}}
    )
    assert condition(space.finished_job("mnt"), "Complete")
