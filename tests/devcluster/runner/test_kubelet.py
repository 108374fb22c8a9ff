"""The kubelet: processes, termination messages, image pulls, start errors."""

from __future__ import annotations

from pathlib import Path

from devcluster.runner.kubelet import (
    ImagePolicy,
    container_argv,
    container_statuses,
    process_environment,
    terminated,
    termination_message,
    waiting,
)
from tests.devcluster.runner.jobs import JobSpace, python
from tests.polling import wait_for


def test_termination_message_from_default_and_custom_paths(space: JobSpace) -> None:
    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2] * 5000)"
    space.make_job("msg", python(write, "/dev/termination-log", "x"))
    custom = python(write, "--out=/results/message.txt", "y")
    custom["args"][0] = "/results/message.txt"
    space.make_job(
        "msg2",
        {
            **custom,
            "terminationMessagePath": "/results/message.txt",
            "volumeMounts": [{"name": "results", "mountPath": "/results"}],
        },
        volumes=[{"name": "results", "emptyDir": {}}],
    )
    for name, char in (("msg", "x"), ("msg2", "y")):
        space.finished_job(name)
        (pod,) = space.pods_of(name)
        message = pod.status.container_statuses[0].state.terminated.message
        assert message == char * 4096  # capped like the kubelet


def test_unpullable_image_backs_off(space: JobSpace) -> None:
    space.make_job("img", {**python("pass"), "image": "invalid.example/nope:1"})
    assert wait_for(space.waiting_reason("img"))[0] in ("ErrImagePull", "ImagePullBackOff")
    wait_for(lambda: (space.waiting_reason("img")() or ("",))[0] == "ImagePullBackOff")


def test_missing_executable_fails_the_pod(space: JobSpace) -> None:
    space.make_job("noexe", {"command": ["definitely-not-installed-xyz"]}, backoffLimit=0)
    space.failed_job("noexe", "BackoffLimitExceeded")
    (pod,) = space.pods_of("noexe")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError" and "executable file not found" in terminated.message


# -- the pure parts -----------------------------------------------------------------------


def test_container_states_as_the_kubelet_reports_them(tmp_path: Path) -> None:
    killed = terminated(-9, "t0", "t1", "devcluster://u/main", "")["terminated"]
    assert killed["exitCode"] == 137 and killed["signal"] == 9 and killed["reason"] == "Error"
    assert "message" not in killed
    done = terminated(0, "t0", "t1", "devcluster://u/main", "ok")["terminated"]
    assert done["reason"] == "Completed" and done["message"] == "ok"
    pod = {"metadata": {"uid": "u"}}
    containers = [{"name": "main", "image": "i"}, {"name": "side", "image": "j"}]
    statuses = container_statuses(pod, containers, [waiting("ContainerCreating"), {"running": {}}])
    assert "containerID" not in statuses[0] and statuses[0]["ready"] is False
    assert statuses[1]["containerID"] == "devcluster://u/side" and statuses[1]["ready"] is True


def test_termination_message_falls_back_to_the_log_only_when_asked(tmp_path: Path) -> None:
    message_file, log_file = tmp_path / "message", tmp_path / "log"
    log_file.write_text("\n".join(f"line {i}" for i in range(100)))
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    assert termination_message({}, message_file, log_file, 1) == ""
    assert termination_message(fallback, message_file, log_file, 0) == ""
    tail = termination_message(fallback, message_file, log_file, 1)
    assert tail.startswith("line 20\n") and tail.endswith("line 99")
    message_file.write_bytes(b"m" * 5000)
    assert termination_message(fallback, message_file, log_file, 1) == "m" * 4096


def test_argv_and_environment_see_local_paths(tmp_path: Path) -> None:
    mounts = {"/etc/creds": tmp_path / "creds", "/dev/termination-log": tmp_path / "msg"}
    container = {"command": ["prunejob", "prune"], "args": ["--key-file=/etc/creds/k", "-v"]}
    assert container_argv(container, mounts) == [
        "prunejob", "prune", f"--key-file={tmp_path}/creds/k", "-v"
    ]  # fmt: skip
    env = process_environment(
        {"LOG": "/dev/termination-log", "PATH": "/override"},
        mounts,
        path="/venv/bin",
        home=tmp_path / "home",
        tmp=tmp_path / "tmp",
        hostname="p",
        extra={"EXTRA": "1"},
    )
    assert env["LOG"] == str(tmp_path / "msg") and env["PATH"] == "/override"
    assert env["EXTRA"] == "1" and env["HOSTNAME"] == "p" and env["LANG"] == "C.UTF-8"
    assert ImagePolicy().unpullable("invalid.example/x:1")
    assert not ImagePolicy().unpullable("example/x:1")
